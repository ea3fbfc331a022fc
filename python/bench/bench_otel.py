"""Benchmark of tld.otel: what one span activation costs from Python.

Rows (one thread, after its first access; ns per activation, median of R
repeats of N iterations):
- ``set(ids) + clear()``: ids as ints, as OpenTelemetry's API holds them;
- the same with one attribute (a name looked up in the key map);
- ``with scoped(ids): pass`` (save 640 bytes, set, restore);
- ``with tracer.start_as_current_span(...)`` under the OpenTelemetry SDK
  without and with ``tld.otel.instrument()``: what instrumenting adds to a
  real span (its start, activation, deactivation and end);
- ``threading.local`` attribute set + delete, what Python code keeping its
  own per-thread span pointer would pay, for reference.

The C ``__thread`` pointer swap and the Rust and C rows are in
``make otel-bench`` (otel/reader/benches/otel.rs).

    python python/bench/bench_otel.py [--number N] [--repeat R]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import threading
import timeit

import tld.otel

TRACE = int("4bf92f3577b34da6a3ce929d0e0e4736", 16)
SPAN = int("00f067aa0ba902b7", 16)


def median_ns(stmt: str, env: dict, number: int, repeat: int) -> float:
    times = timeit.repeat(stmt, globals=env, number=number, repeat=repeat)
    return statistics.median(times) / number * 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--number", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=11)
    args = parser.parse_args()
    n, r = args.number, args.repeat

    tld.otel.record_size()  # the key before the first access
    otel = tld.otel
    attrs = {"http.route": "/users/:id"}
    scope = otel.scoped(TRACE, SPAN, 1)
    local = threading.local()
    env = dict(otel=otel, T=TRACE, S=SPAN, attrs=attrs, scope=scope, local=local)
    otel.set(TRACE, SPAN)  # the thread's first access, outside the timing
    rows = [
        ("set(ids) + clear()", "otel.set(T, S, 1); otel.clear()"),
        ("set(ids, 1 attribute) + clear()", "otel.set(T, S, 1, attrs); otel.clear()"),
        ("with scoped(ids): pass", "with scope: pass"),
        ("threading.local: set + delete (reference)", "local.span = S; del local.span"),
    ]
    results = [(name, median_ns(stmt, env, n, r)) for name, stmt in rows]

    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        print("(opentelemetry-sdk not installed: no span rows)", file=sys.stderr)
    else:
        provider = TracerProvider()
        tracer = provider.get_tracer("bench")
        env.update(tracer=tracer)
        stmt = "with tracer.start_as_current_span('s'): pass"
        m = max(n // 20, 1)
        # Interleaved, so that the load of the moment hits both alike.
        plains, withs = [], []
        for _ in range(r):
            plains.append(median_ns(stmt, env, m, 1))
            otel.instrument()
            withs.append(median_ns(stmt, env, m, 1))
            otel.uninstrument()
        plain, with_tld = statistics.median(plains), statistics.median(withs)
        results.append(("SDK start_as_current_span, not instrumented", plain))
        results.append(("SDK start_as_current_span, instrument()", with_tld))
        results.append(("  what instrument() adds per span", with_tld - plain))

    print(f"tld.otel, CPython {platform.python_version()}, {n} iterations x {r} repeats, median ns")
    for name, ns in results:
        print(f"  {name:<48} {ns:8.1f} ns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
