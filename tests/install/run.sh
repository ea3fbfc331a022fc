#!/usr/bin/env bash
# Installs tld into a temporary prefix and uses it from outside the
# repository, as another project would (`make install-test`, part of
# `make test`):
#   C     a program built with `pkg-config --cflags --libs tld`
#   C++   find_package(tld 0.1 REQUIRED) + tld::tld, and add_subdirectory(cpp)
#         with a multi-config generator (its Release build links the release archive)
#   Go    a module importing tld.dev/tld (source by a local replace, the
#         library through pkg-config), go vet + go build
#   Rust  a crate depending on the core by path
#   Python the manylinux wheels of `make wheel` in a fresh venv of each CPython
#         3.9 to 3.13 on the machine, without cargo on PATH; and a wheel built
#         from the sdist alone
# Each program publishes a value on a thread; the installed `tld dump` (BPF)
# must read it back for that thread. Also: install with DESTDIR and a
# multiarch LIBDIR, and uninstall leaving no file behind; cargo package of
# the publishable crates.
#
# Kernel checks need root (or CAP_BPF + CAP_PERFMON) and a kernel with UPTRs
# in task storage; without them they are skipped with the reason, except with
# CI=true, where that fails.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
GO=${GO:-$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)}
MAKE=${MAKE:-make}
# make's command-line variables of an outer make must not reach the installs below.
unset MAKEFLAGS MFLAGS

work=$(mktemp -d /tmp/tld-install-test.XXXXXX)
# The prefix is temporary but its path stable (see GOCACHE below), and per
# checkout, so runs in other checkouts do not meet.
prefix=$repo/target/install-test/prefix
rm -rf "$prefix"
multiarch=$(cc -print-multiarch 2>/dev/null || true)
libdir=$prefix/lib${multiarch:+/$multiarch}
pin_dir=/sys/fs/bpf/tld-install-test-$$
map=$pin_dir/tld_data_map
passed=0 failed=0 skipped=0
children=()

cleanup() {
    local pid
    for pid in "${children[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [[ -e $map ]]; then "$prefix/bin/tld" unpin --path "$map" >/dev/null 2>&1 || rm -f "$map"; fi
    rmdir "$pin_dir" 2>/dev/null || true
    rm -rf "$work" "$prefix"
}
trap cleanup EXIT

pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1: $2" >&2; failed=$((failed + 1)); }
# The build steps are not checks: any failure stops the run (set -e) with its output.
step() { echo "== $*"; }

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)

step "make install PREFIX=$prefix LIBDIR=$libdir"
$MAKE --no-print-directory install PREFIX="$prefix" LIBDIR="$libdir" >"$work/install.log" 2>&1 ||
    { cat "$work/install.log" >&2; exit 1; }
export PKG_CONFIG_PATH=$libdir/pkgconfig
export LD_LIBRARY_PATH=$libdir
tld_cmd=$prefix/bin/tld

# What the install left, by kind.
check_installed() {
    local missing=() f
    for f in "$prefix/bin/tld" "$libdir/libtld.so.$version" "$libdir/libtld.a" "$libdir/libtld_cxx.a" \
        "$libdir/pkgconfig/tld.pc" "$libdir/cmake/tld/tldConfig.cmake" "$libdir/cmake/tld/tldConfigVersion.cmake" \
        "$prefix/include/tld.h" "$prefix/include/tld_otel.h" "$prefix/include/tld.bpf.h" "$prefix/include/tld/tld.hpp" \
        "$prefix/include/tld/cxxbridge/rust/cxx.h"; do
        [[ -f $f ]] || missing+=("$f")
    done
    [[ -e $prefix/include/rust ]] && missing+=("(cxx.h must not be at $prefix/include/rust)")
    ((${#missing[@]} == 0)) || { fail install "missing: ${missing[*]}"; return; }
    local soname
    soname=$(readelf -d "$libdir/libtld.so.$version" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
    [[ $soname == "libtld.so.${version%%.*}" ]] || { fail install "SONAME is '$soname'"; return; }
    [[ $(readlink "$libdir/libtld.so") == "libtld.so.${version%%.*}" &&
        $(readlink "$libdir/libtld.so.${version%%.*}") == "libtld.so.$version" ]] ||
        { fail install "libtld.so links: $(ls -l "$libdir"/libtld.so*)"; return; }
    [[ $(pkg-config --modversion tld) == "$version" ]] || { fail install "pkg-config --modversion tld: $(pkg-config --modversion tld)"; return; }
    pass "install (SONAME $soname, pkg-config tld $version)"
}
check_installed

# --- the kernel side: a map of this run's own -------------------------------
kernel=1
if ! out=$("$tld_cmd" pin --path "$map" 2>&1); then
    if [[ ${CI:-} == true ]]; then
        echo "FAIL: cannot pin a map for the kernel checks (CI=true): $out" >&2
        exit 1
    fi
    echo "SKIP kernel checks: cannot pin a map ($out); run as root (or with CAP_BPF + CAP_PERFMON) on Linux 6.13+"
    kernel=0
fi
export TLD_MAP_PATH=$map

# run_and_check NAME KEY VALUE CMD...: runs CMD KEY VALUE, waits for its
# "ready TID", has `tld dump --json` (BPF) read the process, and checks that
# thread TID holds VALUE under KEY. Then closes the program's stdin.
run_and_check() {
    local name=$1 key=$2 value=$3
    shift 3
    if ((!kernel)); then
        echo "SKIP $name: no BPF (see above)"
        skipped=$((skipped + 1))
        return
    fi
    local fifo=$work/$name.stdin out=$work/$name.out err=$work/$name.err
    rm -f "$fifo"
    mkfifo "$fifo"
    "$@" "$key" "$value" <"$fifo" >"$out" 2>"$err" &
    local pid=$! fd
    children+=("$pid")
    exec {fd}>"$fifo"
    local tid= i
    for ((i = 0; i < 600; i++)); do
        tid=$(sed -n 's/^ready \([0-9][0-9]*\)$/\1/p' "$out")
        [[ -n $tid ]] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -z $tid ]]; then
        exec {fd}>&-
        wait "$pid" || true
        fail "$name" "the program did not publish (stdout: $(cat "$out"); stderr: $(cat "$err"))"
        return
    fi
    local dump verdict
    dump=$("$tld_cmd" dump "$pid" --json --path "$map" 2>&1) || true
    exec {fd}>&-
    local status=0
    wait "$pid" || status=$?
    verdict=$(python3 - "$key" "$value" "$tid" "$dump" <<'EOF'
import json, sys
key, value, tid, text = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
try:
    doc = json.loads(text)
except ValueError:
    sys.exit(f"tld dump did not print JSON: {text}")
for t in doc["threads"]:
    if t["tid"] == tid:
        got = (t["values"].get(key) or {}).get("int")
        sys.exit(0 if got == value else f"thread {tid}: {key} = {got}, expected {value}")
sys.exit(f"thread {tid} is not registered in the map: {text}")
EOF
    ) && verdict=ok || true
    if [[ $verdict != ok ]]; then
        fail "$name" "$verdict"
    elif ((status != 0)); then
        fail "$name" "exit status $status (stderr: $(cat "$err"))"
    else
        pass "$name (BPF read $key = $value on thread $tid)"
    fi
}

# --- C: pkg-config -----------------------------------------------------------
step "C: cc \$(pkg-config --cflags --libs tld)"
mkdir -p "$work/c"
# shellcheck disable=SC2046  # pkg-config's words are flags
cc -std=c11 -Wall -Wextra -Werror -pthread -o "$work/c/app" tests/install/c/app.c $(pkg-config --cflags --libs tld)
needed=$(readelf -d "$work/c/app" | sed -n 's/.*(NEEDED).*\[\(libtld[^]]*\)\]/\1/p')
[[ $needed == "libtld.so.${version%%.*}" ]] && pass "C links $needed" || fail "C link" "NEEDED '$needed'"
# The app first checks tld.h's TLD_VERSION_* against pkg-config's version.
run_and_check c install.c 101 "$work/c/app" "$(pkg-config --modversion tld)"

# --- C++: find_package and add_subdirectory ----------------------------------
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
step "C++: find_package(tld 0.1 REQUIRED)"
cp -r tests/install/cmake-package "$work/cmake-package"
cmake -S "$work/cmake-package" -B "$work/cmake-package/build" "${generator[@]}" \
    -DCMAKE_PREFIX_PATH="$prefix" >"$work/cmake-package.log" 2>&1 || { cat "$work/cmake-package.log" >&2; exit 1; }
cmake --build "$work/cmake-package/build" >>"$work/cmake-package.log" 2>&1 || { cat "$work/cmake-package.log" >&2; exit 1; }
run_and_check cxx-find-package install.cxx 202 "$work/cmake-package/build/app"

step "C++: add_subdirectory(cpp), Ninja Multi-Config, Release"
cp -r tests/install/cmake-subdir "$work/cmake-subdir"
subdir_gen=()
command -v ninja >/dev/null && subdir_gen=(-G "Ninja Multi-Config")
cmake -S "$work/cmake-subdir" -B "$work/cmake-subdir/build" "${subdir_gen[@]}" \
    -DTLD_SOURCE_DIR="$repo" >"$work/cmake-subdir.log" 2>&1 || { cat "$work/cmake-subdir.log" >&2; exit 1; }
cmake --build "$work/cmake-subdir/build" --config Release >>"$work/cmake-subdir.log" 2>&1 ||
    { cat "$work/cmake-subdir.log" >&2; exit 1; }
if ((${#subdir_gen[@]})); then
    # Each configuration's rules: Release links cargo's release archive, Debug the debug one.
    rules=$work/cmake-subdir/build/CMakeFiles
    if grep -q "$repo/target/release/libtld_cxx.a" "$rules/impl-Release.ninja" &&
        ! grep -q "$repo/target/debug/libtld_cxx.a" "$rules/impl-Release.ninja" &&
        grep -q "$repo/target/debug/libtld_cxx.a" "$rules/impl-Debug.ninja"; then
        pass "add_subdirectory (multi-config): Release links target/release/libtld_cxx.a, Debug target/debug"
    else
        fail "add_subdirectory (multi-config)" "$(grep -ho "[^ ]*libtld_cxx.a" "$rules"/impl-*.ninja | sort | uniq -c)"
    fi
fi
# A single-config generator with an empty CMAKE_BUILD_TYPE gets the release archive too (configured only).
cmake -S "$work/cmake-subdir" -B "$work/cmake-subdir/build-default" "${generator[@]}" -DCMAKE_BUILD_TYPE= \
    -DTLD_SOURCE_DIR="$repo" >>"$work/cmake-subdir.log" 2>&1 || { cat "$work/cmake-subdir.log" >&2; exit 1; }
if grep -rqs "$repo/target/release/libtld_cxx.a" "$work/cmake-subdir/build-default" --include='*.ninja' --include='link.txt' &&
    ! grep -rqs "$repo/target/debug/libtld_cxx.a" "$work/cmake-subdir/build-default" --include='*.ninja' --include='link.txt'; then
    pass "add_subdirectory (empty CMAKE_BUILD_TYPE): links target/release/libtld_cxx.a"
else
    fail "add_subdirectory (empty CMAKE_BUILD_TYPE)" "does not link target/release/libtld_cxx.a alone"
fi
app=$(find "$work/cmake-subdir/build" -name app -type f -perm -u+x | head -n 1)
run_and_check cxx-add-subdirectory install.cxx_subdir 203 "$app"

# --- Go: a module of its own, the library through pkg-config ----------------
step "Go: go vet + go build (tld.dev/tld through pkg-config)"
mkdir -p "$work/go"
cp tests/install/go/main.go "$work/go/"
cat >"$work/go/go.mod" <<EOF
module example.com/tldinstalltest

go 1.22

require tld.dev/tld v0.0.0

// The package's source only; the library comes from pkg-config.
replace tld.dev/tld => $repo/go
EOF
# go's build cache does not key a cgo package on pkg-config's answer: a
# cached tld.dev/tld keeps the -L of the prefix it was first built against.
# This run's own cache, kept with the (stable) prefix path between runs.
export GOCACHE=$repo/target/install-test/gocache
(cd "$work/go" && CGO_ENABLED=1 GOFLAGS= "$GO" vet ./... && CGO_ENABLED=1 GOFLAGS= "$GO" build -o app .) ||
    { fail "go build" "see above"; }
if [[ -x $work/go/app ]]; then
    needed=$(readelf -d "$work/go/app" | sed -n 's/.*(NEEDED).*\[\(libtld[^]]*\)\]/\1/p')
    [[ $needed == "libtld.so.${version%%.*}" ]] && pass "Go links the installed $needed" ||
        fail "Go link" "NEEDED '$needed' (expected the installed libtld.so.${version%%.*})"
    run_and_check go install.go 303 "$work/go/app"
fi

# --- Rust: a crate depending on the core by path ------------------------------
step "Rust: a crate with task-local-data = { path = ... }"
mkdir -p "$work/rust/src"
cp tests/install/rust/src/main.rs "$work/rust/src/"
cat >"$work/rust/Cargo.toml" <<EOF
[package]
name = "tld-install-test"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
tld = { package = "task-local-data", path = "$repo/core" }

[workspace]
EOF
cp Cargo.lock "$work/rust/"  # the versions the workspace tested, already fetched
CARGO_TARGET_DIR=$repo/target/install-test-rust cargo build --quiet --manifest-path "$work/rust/Cargo.toml"
run_and_check rust install.rust 404 "$repo/target/install-test-rust/debug/tld-install-test"

step "cargo package: task-local-data, task-local-data-otel, task-local-data-capi"
# cargo verifies the C ABI crate against the core it just packaged, through a
# temporary registry, and takes a registry crate of a given version to be
# immutable: an earlier run's unpacked copy (under CARGO_HOME) and build (in
# the target dir) of task-local-data 0.1.0 would be reused, however old their
# source. So: no unpacked copy, and a target dir of this run's own.
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/task-local-data-"$version" "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/task-local-data-otel-"$version"
if CARGO_TARGET_DIR=$work/package-target cargo package --quiet -p task-local-data -p task-local-data-otel -p task-local-data-capi \
    --allow-dirty >"$work/package.log" 2>&1; then
    pass "cargo package (task-local-data, task-local-data-otel, task-local-data-capi)"
else
    fail "cargo package" "$(tail -n 20 "$work/package.log")"
fi

# --- Python: the wheels in fresh venvs, no cargo on PATH ----------------------
step "Python: make wheel"
$MAKE --no-print-directory wheel >"$work/wheel.log" 2>&1 || { cat "$work/wheel.log" >&2; exit 1; }
abi3_wheel=$(ls target/wheels/*-cp310-abi3-manylinux_*.whl)
cp39_wheel=$(ls target/wheels/*-cp39-cp39-manylinux_*.whl)
sdist=$(ls target/wheels/*.tar.gz)
# PATH without cargo (nor ~/.cargo/bin): the wheel must not need a Rust toolchain.
bare_path=/usr/bin:/bin
if PATH=$bare_path command -v cargo >/dev/null; then
    echo "FAIL: cargo is on $bare_path: cannot check the wheel without a Rust toolchain" >&2
    exit 1
fi

# The CPythons 3.9 to 3.13 of this machine (pyenv's, and those on PATH).
declare -A interpreters=()
for minor in 9 10 11 12 13; do
    for candidate in "$HOME"/.pyenv/versions/3."$minor".*/bin/python3."$minor" "$(command -v python3."$minor" || true)"; do
        if [[ -x $candidate ]] &&
            "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != (3, $minor))" 2>/dev/null; then
            interpreters[3.$minor]=$candidate
            break
        fi
    done
done
((${#interpreters[@]})) || { echo "FAIL: no CPython 3.9 to 3.13 on this machine" >&2; exit 1; }
echo "CPythons: $(for v in $(printf '%s\n' "${!interpreters[@]}" | sort -V); do printf '%s ' "$v=${interpreters[$v]}"; done)"

python_check() { # NAME INTERPRETER WHEEL
    local name=$1 python=$2 wheel=$3 venv=$work/venv-$1
    "$python" -m venv "$venv"
    if ! PATH=$bare_path "$venv/bin/python" -m pip install --quiet --no-index --no-deps "$wheel" >"$work/$name-pip.log" 2>&1; then
        fail "$name" "pip install $(basename "$wheel"): $(cat "$work/$name-pip.log")"
        return
    fi
    run_and_check "$name" "install.$name" 505 env PATH=$bare_path "$venv/bin/python" "$repo/tests/install/python/smoke.py"
}
for v in $(printf '%s\n' "${!interpreters[@]}" | sort -V); do
    if [[ $v == 3.9 ]]; then wheel=$cp39_wheel; else wheel=$abi3_wheel; fi
    python_check "python${v/./}" "${interpreters[$v]}" "$wheel"
done

step "Python: a wheel built from the sdist alone"
# The sdist builds with cargo (it is source); the venv's maturin, no network.
# The workspace target dir only caches the registry crates it compiles.
python=$repo/target/venv/bin/python
if PATH=$repo/target/venv/bin:$PATH CARGO_TARGET_DIR=$repo/target "$python" -m pip wheel --quiet --no-deps --no-build-isolation \
    -w "$work/sdist-wheel" "$sdist" >"$work/sdist.log" 2>&1; then
    python_check python-sdist "$(readlink -f "$python")" "$(ls "$work"/sdist-wheel/*.whl)"
else
    fail "sdist" "$(tail -n 30 "$work/sdist.log")"
fi

# --- DESTDIR staging with a multiarch LIBDIR, and uninstall -------------------
step "make install DESTDIR=... PREFIX=/usr LIBDIR=/usr/lib/${multiarch:-}"
stage=$work/stage
stage_libdir=/usr/lib${multiarch:+/$multiarch}
$MAKE --no-print-directory install DESTDIR="$stage" PREFIX=/usr LIBDIR="$stage_libdir" >"$work/stage.log" 2>&1 ||
    { cat "$work/stage.log" >&2; exit 1; }
pc=$stage$stage_libdir/pkgconfig/tld.pc
if [[ -f $pc ]] && grep -qx 'prefix=/usr' "$pc" && grep -qx "libdir=\${prefix}${stage_libdir#/usr}" "$pc" &&
    [[ -f $stage$stage_libdir/cmake/tld/tldTargets.cmake && -f $stage/usr/bin/tld && -f $stage/usr/include/tld.h ]]; then
    pass "DESTDIR install (tld.pc records /usr, files under the staging root)"
else
    fail "DESTDIR install" "$(find "$stage" | head -n 40)"
fi
$MAKE --no-print-directory uninstall DESTDIR="$stage" PREFIX=/usr LIBDIR="$stage_libdir" >/dev/null
left=$(find "$stage" -not -type d)
[[ -z $left ]] && pass "uninstall (DESTDIR)" || fail "uninstall (DESTDIR)" "left: $left"

# Uninstall the first prefix last: the checks above used its tld command.
if ((kernel)); then "$tld_cmd" unpin --path "$map" >/dev/null && rmdir "$pin_dir" 2>/dev/null || true; fi
$MAKE --no-print-directory uninstall PREFIX="$prefix" LIBDIR="$libdir" >/dev/null
left=$(find "$prefix" -not -type d)
[[ -z $left ]] && pass "uninstall" || fail "uninstall" "left: $left"

echo "install: $passed passed, $failed failed, $skipped skipped"
((failed == 0))
