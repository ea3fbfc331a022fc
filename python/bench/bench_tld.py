"""Benchmark of the Python binding: Key.set/Key.get on an initialized thread.

Compared in the same run with:
- threading.local attribute assignment and read, what a Python program uses
  for per-thread state; target: Key.set/Key.get cost no more;
- a no-op pyo3 method taking the same arguments (tld._tld._Baseline): the
  floor of any extension method call, for reference;
- the same operation through ctypes over the C ABI (libtld.so: tld_data(key)
  and a store or load through ctypes); target: at least 3x slower than tld;
- `with key.scoped(v): pass`, for reference.

    python python/bench/bench_tld.py [--libtld PATH] [--number N] [--repeat R] [--check]

Prints medians (ns per operation) over R repeats of N calls each. --check
exits 1 when a target is missed. Run on an idle machine: figures compare
only within one run.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import statistics
import sys
import threading
import timeit
from pathlib import Path

import tld
from tld._tld import _Baseline

ROOT = Path(__file__).resolve().parents[2]


class CKey(ctypes.Structure):
    _fields_ = [("off", ctypes.c_int16)]


def load_libtld(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    lib.tld_key.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    lib.tld_key.restype = CKey
    lib.tld_data.argtypes = [CKey]
    lib.tld_data.restype = ctypes.c_void_p
    return lib


def median_ns(stmt: str, env: dict, number: int, repeat: int) -> float:
    times = timeit.repeat(stmt, globals=env, number=number, repeat=repeat)
    return statistics.median(times) / number * 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--libtld", type=Path, default=ROOT / "target" / "release" / "libtld.so")
    parser.add_argument("--number", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args()
    if not args.libtld.exists():
        debug = ROOT / "target" / "debug" / "libtld.so"
        print(f"{args.libtld} missing (cargo build -p task-local-data-capi --release); using {debug}", file=sys.stderr)
        args.libtld = debug

    key = tld.key("bench_value", "q")
    key.set(1)  # first access: this thread's block exists from here on
    lib = load_libtld(args.libtld)
    ckey = lib.tld_key(b"bench_value", 8)  # the same key, through the C ABI
    assert ckey.off == key.offset, (ckey.off, key.offset)
    assert lib.tld_data(ckey) == key.address(), "the C library must share the Python extension's runtime"
    local = threading.local()
    local.value = 1
    env = {
        "key": key,
        "base": _Baseline(),
        "lib": lib,
        "ckey": ckey,
        "c_int64": ctypes.c_int64,
        "local": local,
    }
    cases = [
        ("set", "tld Key.set(v)", "key.set(5)"),
        ("set", "no-op pyo3 method(v)", "base.noop(5)"),
        ("set", "ctypes: tld_data(key) + c_int64 store", "c_int64.from_address(lib.tld_data(ckey)).value = 5"),
        ("set", "threading.local attribute store", "local.value = 5"),
        ("get", "tld Key.get()", "key.get()"),
        ("get", "no-op pyo3 method()", "base.noop0()"),
        ("get", "ctypes: tld_data(key) + c_int64 load", "c_int64.from_address(lib.tld_data(ckey)).value"),
        ("get", "threading.local attribute load", "local.value"),
        ("scope", "with key.scoped(5): pass", "with key.scoped(5): pass"),
    ]
    # Interleave the cases so that noise spreads evenly over them.
    samples: dict[str, list[float]] = {stmt: [] for _, _, stmt in cases}
    for _ in range(args.repeat):
        for _, _, stmt in cases:
            samples[stmt].append(median_ns(stmt, env, args.number, 1))
    medians = {stmt: statistics.median(v) for stmt, v in samples.items()}

    print(f"python {platform.python_version()} ({sys.implementation.name}), {platform.machine()}, "
          f"{os.cpu_count()} CPUs, Linux {platform.release()}, tld {tld.__version__}")
    print(f"median of {args.repeat} runs of {args.number} calls, ns per call\n")
    print(f"| {'operation':<42} | {'median ns':>9} |")
    print(f"|{'-' * 44}|{'-' * 11}|")
    for _, label, stmt in cases:
        print(f"| {label:<42} | {medians[stmt]:9.1f} |")
    ok = True
    print()
    for op, tld_stmt, local_stmt, noop_stmt, ctypes_stmt in [
        ("set", "key.set(5)", "local.value = 5", "base.noop(5)", cases[2][2]),
        ("get", "key.get()", "local.value", "base.noop0()", cases[6][2]),
    ]:
        vs_local = medians[tld_stmt] / medians[local_stmt]
        vs_noop = medians[tld_stmt] / medians[noop_stmt]
        vs_ctypes = medians[ctypes_stmt] / medians[tld_stmt]
        good = vs_local <= 1.0 and vs_ctypes >= 3
        ok &= good
        print(f"{op}: {vs_local:.2f}x a threading.local attribute (target <= 1x), "
              f"{vs_noop:.2f}x a no-op pyo3 call, "
              f"ctypes over the C ABI is {vs_ctypes:.1f}x slower (target >= 3x): {'ok' if good else 'MISSED'}")
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
