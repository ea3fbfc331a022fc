# The README's two commands: `make demo` and `make test`.
# Kernel parts need root (or CAP_BPF + CAP_PERFMON).

CARGO ?= cargo
export CARGO_BUILD_JOBS ?= 2
# Go is found on PATH, else where the official tarball installs it.
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
# The Go package is cgo over libtld.a.
export CGO_ENABLED = 1
# The Python binding is built and tested in this venv (python3 -m venv).
PYTHON ?= python3
VENV := target/venv
# One version for everything: the workspace's (Cargo.toml). libtld.so's
# SONAME carries its major (capi/build.rs); programs linked with -ltld record
# that name, so the build dir gets the same link an install makes.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
SOVERSION := $(firstword $(subst ., ,$(VERSION)))

.PHONY: install uninstall wheel install-test demo test setup build loom pod-test bench c-bench go-test go-bench python-venv python-test python-bench cpp-test cpp-bench mixed-build mixed-test otel-test otel-bench

setup:
	@scripts/setup.sh

# The C library (libtld.a, libtld.so) that the C tests and cross-copy tests
# load, plus two copies built with other runtime ABI versions (2.1 joins a 2.0
# runtime, 3.0 refuses it) for the version test.
build: setup
	$(CARGO) build -p task-local-data-capi
	ln -sf libtld.so target/debug/libtld.so.$(SOVERSION)
	TLD_TEST_RUNTIME_ABI_VERSION=131073 $(CARGO) build -p task-local-data-capi --target-dir target/abi-2.1
	TLD_TEST_RUNTIME_ABI_VERSION=196608 $(CARGO) build -p task-local-data-capi --target-dir target/abi-3.0

# Pins a map with the `tld` tool, starts the mixed-language demo workload
# (tests/mixed/demo_app.py: Python, C++ and Go in one process), shows
# `tld dump --watch` of it until it exits (about 10 s), unpins.
demo: build python-venv mixed-build
	$(CARGO) build -q -p tld-cli
	@scripts/demo.sh

# Every suite: unit, kernel (BPF reads what user space wrote), C ABI, benches
# in test mode, doc examples, then the loom model of key creation.
test: build
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc --exclude task-local-data-capi --exclude tld-cxx --exclude tld-python
	$(MAKE) pod-test
	$(MAKE) go-test
	$(MAKE) python-test
	$(MAKE) cpp-test
	$(MAKE) mixed-test
	$(MAKE) install-test
	$(MAKE) loom

# The core's optional `bytemuck` feature (a derived bytemuck::Pod struct is a
# Key<T>; padding refused at compile time), read back through `tld dump`.
pod-test:
	$(CARGO) build -p tld-cli
	$(CARGO) test -p task-local-data --features bytemuck --test bytemuck_pod
	$(CARGO) test -p task-local-data --features bytemuck --doc Pod

# The Go package (go/) links target/debug/libtld.a (build tag tld_intree;
# outside this checkout it finds the installed library with pkg-config); its
# kernel tests read the values back with the tld tool (target/debug/tld).
# -count=1 because go test's result cache does not notice a rebuilt libtld.a.
go-test: build
	$(CARGO) build -p tld-cli
	cd go && $(GO) vet -tags tld_intree ./... && $(GO) test -tags tld_intree -count=1 -ldflags="-X main.libtldStamp=$$(sha256sum ../target/debug/libtld.a | cut -c1-16)" ./...

# The Python binding (python/, pyproject.toml): `pip install .` builds the
# wheel with maturin (fetched from PyPI by pip's build isolation) into the
# workspace target dir. pytest's kernel tests read values back with the tld
# tool. pytest exits 5 when it collects no test: a failure, like any non-zero
# exit. Then the stubs are checked against the module, and the benchmark runs
# once, briefly, as a smoke test.
# tld.otel's tests and bench run instrument() under the OpenTelemetry SDK.
OTEL_PINS := opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2
python-venv:
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet '.[test,otel]' $(OTEL_PINS)

python-test: build python-venv
	$(CARGO) build -p tld-cli
	$(CARGO) build -p tld-otel-reader --bin otel_read  # tld.otel's kernel tests read with it
	$(VENV)/bin/python -m pytest python/tests
	cd target && $(CURDIR)/$(VENV)/bin/python -m mypy.stubtest tld  # mypy leaves .mypy_cache in the cwd
	$(VENV)/bin/python python/bench/bench_tld.py --number 20000 --repeat 3 --libtld target/debug/libtld.so  # built above; a release one may be stale
	$(VENV)/bin/python python/bench/bench_otel.py --number 2000 --repeat 3

# The distributable Python artifacts into target/wheels: the cp310-abi3 and
# cp39 manylinux wheels (checked with auditwheel) and the sdist.
wheel: python-venv
	VENV=$(VENV) scripts/wheel.sh

# The C++ binding (cpp/): CMake builds libtld_cxx.a with cargo and the
# GoogleTest suites, run by CTest in target/cpp-debug and again with
# AddressSanitizer (target/cpp-asan) and ThreadSanitizer (target/cpp-tsan). The kernel tests
# read values back with the tld tool; the cross-copy test loads libtld.so.
cpp-test: build
	$(CARGO) build -p tld-cli
	scripts/cpp-test.sh

# One process, many languages (tests/mixed/): libmixed_cxx.so (C++ binding),
# libmixed_go.so (Go binding, c-shared) and gohost (a Go program that dlopens
# the C++ library), built into target/mixed; pytest runs Python hosts and the
# Go host and checks with `tld dump --json` that BPF sees one metadata page,
# every key once, and each thread's values from every language; with
# otel_read, that each language's OpenTelemetry records reach BPF and one live
# otel_thread_ctx_v1 (test_mixed_otel.py).
mixed-build: build
	GO=$(GO) tests/mixed/build.sh

mixed-test: mixed-build python-venv
	$(CARGO) build -p tld-cli
	$(CARGO) build -p tld-otel-reader --bin otel_read  # test_mixed_otel.py reads with it
	$(VENV)/bin/python -m pytest tests/mixed

# `make install` (PREFIX, DESTDIR, LIBDIR, INCLUDEDIR, BINDIR honoured):
# libtld.so (SONAME libtld.so.$(SOVERSION)) and libtld.a, tld.h and
# tld.bpf.h, tld.pc for pkg-config, the C++ binding's CMake package
# (find_package(tld) -> tld::tld) and the tld command, all from release
# builds. `make uninstall` with the same variables removes them.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
INSTALL_ENV = PREFIX=$(PREFIX) BINDIR=$(BINDIR) LIBDIR=$(LIBDIR) INCLUDEDIR=$(INCLUDEDIR) \
	DESTDIR=$(DESTDIR) VERSION=$(VERSION)

# Without MAKEFLAGS: it carries this command line's PREFIX/LIBDIR to every
# make below, including the one that builds the vendored libbpf for the tld
# command, which would install libbpf there instead of into its build dir.
install: setup
	env -u MAKEFLAGS -u MFLAGS $(CARGO) build --release -p task-local-data-capi -p tld-cli
	$(INSTALL_ENV) scripts/install.sh install

uninstall:
	$(INSTALL_ENV) scripts/install.sh uninstall

# Installs into a temporary prefix and builds, outside the repository, a C
# program (pkg-config), C++ programs (find_package, add_subdirectory), a Go
# module (pkg-config), a Rust crate and the Python wheels in fresh venvs of
# each CPython 3.9-3.13 here; the installed `tld dump` reads back what each
# published on a thread. Also DESTDIR staging, uninstall and cargo package.
install-test: python-venv
	GO=$(GO) tests/install/run.sh

# OpenTelemetry thread context (otel/, otel/context, otel/reader): the crates' tests, then
# the kernel tests where Rust and C publishers are read by BPF, an OTEP 4719
# reader and an OTEP 4947 TLS reader (they need libtld from `build`).
# `make test` runs them in its workspace pass; this target runs them alone.
otel-test: build
	$(CARGO) test -p task-local-data-otel -p tld-otel-context -p tld-otel-reader

# Set + clear on span activation, Rust and C, against a C __thread pointer swap.
otel-bench:
	$(CARGO) build -p task-local-data-capi --release
	$(CARGO) bench -p tld-otel-reader --bench otel

# loom needs its own cfg, so it builds the core into its own target dir.
loom:
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom $(CARGO) test -p task-local-data --lib --release loom

bench: build
	$(CARGO) bench -p tld-tests --bench tld
	$(CARGO) bench -p tld-tests --bench create_key
	$(MAKE) c-bench
	$(MAKE) go-bench
	$(MAKE) python-bench
	$(MAKE) cpp-bench
	$(MAKE) otel-bench

# C: tld.h's inline tld_get_data() + store against a plain __thread store,
# -O2, the release libtld.a, on a map pinned for the run.
C_BENCH_PIN := /sys/fs/bpf/tld-c-bench-$(shell echo $$PPID)
c-bench:
	$(CARGO) build -p task-local-data-capi -p tld-cli --release
	mkdir -p target/c-bench
	$(CC) -O2 -std=c11 -Wall -Wextra -Werror -pthread -Icapi/include tests/c/bench_hot_path.c \
		tests/c/bench_hot_path_call.c target/release/libtld.a -ldl -lm -lpthread -o target/c-bench/bench_hot_path
	target/release/tld pin --path $(C_BENCH_PIN)/tld_data_map >/dev/null
	TLD_TEST_MAP=$(C_BENCH_PIN)/tld_data_map target/c-bench/bench_hot_path; \
		status=$$?; target/release/tld unpin --path $(C_BENCH_PIN)/tld_data_map >/dev/null; rmdir $(C_BENCH_PIN); exit $$status

# Go benchmarks link the optimized library (build tags tld_intree,tld_release).
go-bench:
	$(CARGO) build -p task-local-data-capi --release
	cd go && $(GO) test -tags tld_intree,tld_release -run '^$$' -bench . -count 5

# Python: Key.set/get against a no-op pyo3 call and ctypes over libtld.so (release).
python-bench: python-venv
	$(CARGO) build -p task-local-data-capi --release
	$(VENV)/bin/python python/bench/bench_tld.py
	$(VENV)/bin/python python/bench/bench_otel.py

# C++: Key<T>::get() + store against a plain thread_local write, and
# tld::otel set + clear against a thread_local pointer swap; optimized build
# (the archive from cargo's release profile).
cpp-bench:
	cmake -S cpp -B target/cpp-release -DCMAKE_BUILD_TYPE=Release -DTLD_CXX_BUILD_TESTS=OFF -DTLD_CXX_BUILD_BENCH=ON
	cmake --build target/cpp-release --target tld_cxx_bench tld_cxx_otel_bench
	target/cpp-release/bench/tld_cxx_bench
	target/cpp-release/bench/tld_cxx_otel_bench
