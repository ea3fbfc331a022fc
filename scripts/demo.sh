#!/usr/bin/env bash
# The README demo: pin a tld_data_map with the `tld` tool, start the demo
# workload (tests/examples/demo.rs) attached to it, and show what BPF sees of
# it with `tld status`, `tld keys` and `tld dump`. Ends by itself in ~10 s.
# Needs root (or CAP_BPF + CAP_PERFMON). Run by `make demo`, after the build.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-target}
TLD=$target/debug/tld
DEMO=$target/debug/examples/demo
# A pin of its own, so that the demo never touches the machine's real map.
export TLD_MAP_PATH=/sys/fs/bpf/tld-demo-$$/tld_data_map
pid=

cleanup() {
    [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    "$TLD" unpin >/dev/null 2>&1 || true
    rmdir "$(dirname "$TLD_MAP_PATH")" 2>/dev/null || true
}
trap cleanup EXIT

run() {
    echo
    echo "\$ $*"
    "$@"
}

run "$TLD" pin --mode 0600
TLD_DEMO_SECONDS=5 "$DEMO" &
pid=$!
# Wait until the workload's threads are registered.
for _ in $(seq 100); do
    "$TLD" keys "$pid" >/dev/null 2>&1 && break
    sleep 0.1
done
run "$TLD" status
run "$TLD" keys "$pid"
run "$TLD" dump "$pid"
sleep 1
run "$TLD" dump "$pid"
tid=$(ls "/proc/$pid/task" | sort -n | sed -n 2p)
run "$TLD" dump "$pid" --tid "$tid" --json
wait "$pid"
pid_done=$pid
pid=
echo
echo "\$ $TLD dump $pid_done    # the workload has exited"
"$TLD" dump "$pid_done" || echo "(exit code $?)"
echo
echo "\$ $TLD unpin"
"$TLD" unpin
