#!/usr/bin/env bash
# The C++ binding's tests (cpp/, GoogleTest via CTest), three times: a plain
# debug build, AddressSanitizer and ThreadSanitizer, each in its own build dir
# (target/cpp-debug, target/cpp-asan, target/cpp-tsan). The sanitizers
# instrument the C++ side; the Rust archive is the same unsanitized debug build.
# Needs target/debug/libtld.so and target/debug/tld (make build, cargo build -p tld-cli).
set -euo pipefail
cd "$(dirname "$0")/.."

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)

run_suite() {
    local name=$1 flags=$2
    shift 2
    local dir=target/cpp-$name
    echo "== C++ tests: $name"
    cmake -S cpp -B "$dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Debug -DTLD_CXX_BUILD_TESTS=ON \
        -DCMAKE_CXX_FLAGS="$flags" >/dev/null
    cmake --build "$dir"
    (cd "$dir" && "$@" ctest --output-on-failure)
}

run_suite debug ""
# detect_leaks stays on: a thread block or key leaked by the binding would show.
ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 \
    run_suite asan "-fsanitize=address -fno-omit-frame-pointer"
# ThreadSanitizer, with ASLR off: high ASLR entropy on recent kernels upsets
# TSan ("unexpected memory mapping"). The core finds its rendezvous address
# in TSan's application range and tells TSan what its lock orders.
TSAN_OPTIONS=halt_on_error=1 run_suite tsan "-fsanitize=thread" setarch "$(uname -m)" -R
