#!/usr/bin/env bash
# The README demo: one process, three languages. Pins a tld_data_map of its
# own with the `tld` tool, starts tests/mixed/demo_app.py (Python main thread,
# with a C++ library and a Go library loaded RTLD_LOCAL, each its own copy of
# the core, publishing hints from their own worker threads and from a Python
# thread that calls all three), and shows what BPF reads of it: `tld status`,
# `tld keys`, then `tld dump --watch 1` with `tld top --by priority` beside it
# until the workload exits by itself (DEMO_SECONDS, 10 by default). Unpins on
# exit, whatever happens.
# Needs root (or CAP_BPF + CAP_PERFMON). Run by `make demo`, after the build
# (target/debug/tld, target/venv, tests/mixed/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-target}
TLD=$target/debug/tld
PY=$target/venv/bin/python
export MIXED_CXX_LIB=$target/mixed/cxx/libmixed_cxx.so
export MIXED_GO_LIB=$target/mixed/libmixed_go.so
export DEMO_SECONDS=${DEMO_SECONDS:-10}
# A pin of its own, so that the demo never touches the machine's real map.
export TLD_MAP_PATH=/sys/fs/bpf/tld-demo-$$/tld_data_map
pid=

cleanup() {
    [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    "$TLD" unpin >/dev/null 2>&1 || true
    rmdir "$(dirname "$TLD_MAP_PATH")" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

run() {
    echo
    echo "\$ $*"
    "$@"
}

run "$TLD" pin --mode 0600
"$PY" tests/mixed/demo_app.py &
pid=$!
# Wait until all three languages have published (the last key to appear: go.requests).
for _ in $(seq 100); do
    "$TLD" keys "$pid" 2>/dev/null | grep -q go.requests && break
    sleep 0.1
done
run "$TLD" status
run "$TLD" keys "$pid"
echo
echo "\$ $TLD top $pid --by priority --interval 2 &   # beside the dump: CPU time per priority value"
echo "\$ $TLD dump $pid --watch 1                     # until the workload exits"
# Both end by themselves when the process exits (dump with exit code 3);
# timeout is a safety net. top's lines carry a [top] prefix; the dump goes
# through cat so that it does not clear the screen under them.
timeout $((DEMO_SECONDS + 20)) "$TLD" top "$pid" --by priority --interval 2 2>&1 | sed -u 's/^/[top] /' &
top_pid=$!
timeout $((DEMO_SECONDS + 20)) "$TLD" dump "$pid" --watch 1 | cat || true
wait "$pid"
pid=
wait "$top_pid" || true
echo
echo "\$ $TLD unpin"
"$TLD" unpin
