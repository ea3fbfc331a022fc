# The README's two commands: `make demo` and `make test`.
# Kernel parts need root (or CAP_BPF + CAP_PERFMON).

CARGO ?= cargo
export CARGO_BUILD_JOBS ?= 2

.PHONY: demo test setup build loom bench

setup:
	@scripts/setup.sh

# The C library (libtld.a, libtld.so) that the C tests and cross-copy tests
# load, plus two copies built with other runtime ABI versions (1.1 joins a 1.0
# runtime, 2.0 refuses it) for the version test.
build: setup
	$(CARGO) build -p tld-capi
	TLD_TEST_RUNTIME_ABI_VERSION=65537 $(CARGO) build -p tld-capi --target-dir target/abi-1.1
	TLD_TEST_RUNTIME_ABI_VERSION=131072 $(CARGO) build -p tld-capi --target-dir target/abi-2.0

# Pins a map with the `tld` tool, starts the demo workload, shows `tld dump`.
demo: build
	$(CARGO) build -q -p tld-cli -p tld-tests --example demo
	@scripts/demo.sh

# Every suite: unit, kernel (BPF reads what user space wrote), C ABI, benches
# in test mode, doc examples, then the loom model of key creation.
test: build
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc
	$(MAKE) loom

# loom needs its own cfg, so it builds the core into its own target dir.
loom:
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom $(CARGO) test -p tld --lib --release loom

bench: build
	$(CARGO) bench -p tld-tests --bench tld
	$(CARGO) bench -p tld-tests --bench create_key
