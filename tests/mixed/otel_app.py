"""The OpenTelemetry scenario of the mixed-language tests: one process, three
copies of the tld core (the Python extension, libmixed_cxx.so, libmixed_go.so,
loaded RTLD_LOCAL), each publishing OTEP 4947 records on threads of its own.

    otel_app.py [--order py,cxx,go] [--threads N] [--python-silent]

Loads the three in --order; each attaches $TLD_MAP_PATH and creates the
record key through its own API (tld.otel.record_size, tld::otel::record_key,
tld.OtelRecordKey) before any thread touches tld data; then Python publishes
the process context (service.name). Then, for each language, N Python
threads each publish a record through that language (tld.otel.set,
mixed_cxx_otel_set, mixed_go_otel_set), and the C++ library (a std::thread)
and the Go library (a locked goroutine) one thread of their own each. Every
record is distinct: its trace id, span id and flags name the language and
the thread, its attributes are lang=LANG and LANG.worker=LANG-J.

Protocol on stdout/stdin: prints the expectation, one JSON line

    {"pid": P, "record_size": 128, "names": [attribute names used],
     "threads": {"TID": {"lang": L, "trace": hex, "span": hex, "flags": F,
                         "attributes": [[name, value], ...]}, ...}}

then, on a line "clear" from stdin, clears every record (each through the
language that wrote it) and prints {"cleared": N}; exits at end of input.

With --python-silent, Python only attaches (tld.attach()) and never uses
tld.otel: the C++ and Go libraries publish alone, and the process context is
the one their attribute names published (no service.name).

Environment: TLD_MAP_PATH, MIXED_CXX_LIB, MIXED_GO_LIB.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import threading
from typing import Any, Callable

from mixed_app import CODE, Participant

B = ctypes.c_char_p
OTEL_FNS = {
    "otel_record_key": ([], ctypes.c_long),
    "otel_set": ([B, B, ctypes.c_int, B, B], ctypes.c_long),
    "otel_clear": ([], ctypes.c_int),
    "otel_worker": ([B, B, ctypes.c_int, B, B], ctypes.c_long),
    "otel_workers": ([ctypes.c_int, ctypes.c_int], ctypes.c_int),
}


def record(lang: str, j: int) -> dict[str, Any]:
    """The distinct record of thread j of language lang."""
    code = CODE[lang]
    trace = bytes([0xA0 + code] * 8) + j.to_bytes(8, "big")
    span = bytes([code, 0x40 + j] * 4)
    attrs = [["lang", lang], [f"{lang}.worker", f"{lang}-{j}"]]
    return {"lang": lang, "trace": trace.hex(), "span": span.hex(), "flags": code % 2, "attributes": attrs}


class OtelParticipant(Participant):
    """A Participant that also publishes OpenTelemetry records."""

    def __init__(self, lang: str, silent: bool = False) -> None:
        super().__init__(lang)
        self.silent = silent

    def load(self) -> None:
        super().load()
        if self.lang == "py" and self.silent:
            return
        if self.lang == "py":
            import tld.otel

            self.otel = tld.otel
            self.record_size = tld.otel.record_size()
            return
        path = os.environ["MIXED_CXX_LIB" if self.lang == "cxx" else "MIXED_GO_LIB"]
        lib = ctypes.CDLL(path, mode=os.RTLD_LOCAL)  # the same handle as super().load()'s
        self.fn: dict[str, Callable[..., int]] = {}
        for name, (args, res) in OTEL_FNS.items():
            f = getattr(lib, f"mixed_{self.lang}_{name}")
            f.argtypes, f.restype = args, res
            self.fn[name] = f
        self.record_size = self.fn["otel_record_key"]()
        if self.record_size < 0:
            raise OSError(-self.record_size, f"{self.lang}: otel record key")

    def publish(self, rec: dict[str, Any], worker: bool = False) -> int:
        """Publishes rec on the calling thread (or, worker, on a new native thread). Its tid."""
        trace, span = bytes.fromhex(rec["trace"]), bytes.fromhex(rec["span"])
        if self.lang == "py":
            self.otel.set(trace, span, rec["flags"], dict(rec["attributes"]))
            return threading.get_native_id()
        worker_value = rec["attributes"][1][1]
        fn = self.fn["otel_worker" if worker else "otel_set"]
        tid = fn(trace, span, rec["flags"], self.lang.encode(), worker_value.encode())
        if tid < 0:
            raise OSError(-tid, f"{self.lang}: otel publish")
        return tid

    def clear(self) -> None:
        if self.lang == "py":
            self.otel.clear()
            return
        rc = self.fn["otel_clear"]()
        if rc < 0:
            raise OSError(-rc, f"{self.lang}: otel clear")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--order", default="py,cxx,go")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--python-silent", action="store_true")
    args = ap.parse_args()
    order = args.order.split(",")
    parts = {lang: OtelParticipant(lang, silent=args.python_silent) for lang in order}
    for lang in order:
        parts[lang].load()
    publishers = [lang for lang in order if not (lang == "py" and args.python_silent)]
    sizes = {lang: parts[lang].record_size for lang in publishers}
    assert len(set(sizes.values())) == 1, f"copies disagree on the record size: {sizes}"
    if not args.python_silent:
        parts["py"].otel.publish_process_context({"service.name": "mixed-otel"})

    langs = [lang for lang in publishers for _ in range(args.threads)]
    n = len(langs)
    expect: dict[str, dict[str, Any]] = {}
    lock = threading.Lock()
    published, cleared = threading.Barrier(n + 1), threading.Barrier(n + 1)
    clear, release = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def worker(j: int, lang: str) -> None:
        try:
            rec = record(lang, j)
            tid = parts[lang].publish(rec)
            assert tid == threading.get_native_id(), f"{lang} published on thread {tid}"
            with lock:
                expect[str(tid)] = rec
        except BaseException as e:  # noqa: BLE001
            failures.append(e)
        published.wait()
        clear.wait()
        try:
            parts[lang].clear()
        except BaseException as e:  # noqa: BLE001
            failures.append(e)
        cleared.wait()
        release.wait()

    ts = [threading.Thread(target=worker, args=(j, lang), name=f"otel-{lang}-{j}") for j, lang in enumerate(langs)]
    for t in ts:
        t.start()
    # The libraries' own threads: a C++ std::thread and a Go locked goroutine.
    native = [lang for lang in order if lang != "py"]
    for j, lang in enumerate(native, start=n):
        rec = record(lang, j)
        expect[str(parts[lang].publish(rec, worker=True))] = rec
    published.wait()
    if failures:
        raise failures[0]
    names = sorted({a[0] for r in expect.values() for a in r["attributes"]})
    print(json.dumps({"pid": os.getpid(), "record_size": sizes[publishers[0]], "names": names, "threads": expect}), flush=True)

    line = sys.stdin.readline()
    if line.strip() == "clear":
        clear.set()
        for lang in native:
            parts[lang].fn["otel_workers"](1, 1)
        cleared.wait()
        if failures:
            raise failures[0]
        print(json.dumps({"cleared": len(expect)}), flush=True)
        sys.stdin.read()
    else:
        clear.set()
        cleared.wait()
    release.set()
    for lang in native:
        parts[lang].fn["otel_workers"](2, 0)
    for t in ts:
        t.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
