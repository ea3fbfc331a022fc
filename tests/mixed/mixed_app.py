"""The Python host of the mixed-language tests: one process, three copies of
the tld core (the Python extension, libmixed_cxx.so on the C++ binding,
libmixed_go.so on the Go binding, both loaded RTLD_LOCAL).

    mixed_app.py [--order py,cxx,go] [--race] [--threads N]

Loads the three in --order (or, with --race, each from its own thread at
once); each attaches $TLD_MAP_PATH and gets or creates its own key
(py.value, cxx.value, go.value) and the common key mixed.common. Then N
Python threads (and the main thread) each write, on their own kernel task,
their value of every key through each language, the common key three times in
an order that rotates between threads. Prints the expectation (mixed_check.py)
and keeps the threads alive until stdin is closed.

Environment: TLD_MAP_PATH, MIXED_CXX_LIB, MIXED_GO_LIB.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import threading
from typing import Any

COMMON = "mixed.common"
CODE = {"py": 1, "cxx": 2, "go": 3}


class Participant:
    """One copy of the core: load(), then key(name), set(name, v) -> tid, meta_page()."""

    def __init__(self, lang: str) -> None:
        self.lang = lang

    def load(self) -> None:
        if self.lang == "py":
            import tld

            self.tld = tld
            tld.attach()
            self.keys: dict[str, Any] = {}
        else:
            path = os.environ["MIXED_CXX_LIB" if self.lang == "cxx" else "MIXED_GO_LIB"]
            lib = ctypes.CDLL(path, mode=os.RTLD_LOCAL)
            p = f"mixed_{self.lang}_"
            self.attach = getattr(lib, p + "attach")
            self.attach.argtypes, self.attach.restype = [ctypes.c_char_p], ctypes.c_int
            self._key = getattr(lib, p + "key")
            self._key.argtypes, self._key.restype = [ctypes.c_char_p], ctypes.c_long
            self._set = getattr(lib, p + "set")
            self._set.argtypes, self._set.restype = [ctypes.c_char_p, ctypes.c_int64], ctypes.c_long
            self._page = getattr(lib, p + "metadata_page")
            self._page.argtypes, self._page.restype = [], ctypes.c_size_t
            rc = self.attach(None)
            if rc != 0:
                raise OSError(-rc, f"{path}: attach {os.environ.get('TLD_MAP_PATH')}")
        for name in (f"{self.lang}.value", COMMON):
            self.key(name)

    def key(self, name: str) -> None:
        if self.lang == "py":
            self.keys[name] = self.tld.key(name, "q")
        else:
            rc = self._key(name.encode())
            if rc < 0:
                raise OSError(-rc, f"{self.lang}: key {name}")

    def set(self, name: str, value: int) -> int:
        if self.lang == "py":
            self.keys[name].set(value)
            return threading.get_native_id()
        tid = self._set(name.encode(), value)
        if tid < 0:
            raise OSError(-tid, f"{self.lang}: set {name}")
        return tid

    def meta_page(self) -> int:
        if self.lang == "py":
            return self.tld.runtime_stats().meta_page
        return self._page()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--order", default="py,cxx,go")
    ap.add_argument("--race", action="store_true")
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args()
    order = args.order.split(",")
    parts = {lang: Participant(lang) for lang in order}

    if args.race:
        start = threading.Barrier(len(order))
        errors: list[BaseException] = []

        def load(p: Participant) -> None:
            try:
                start.wait()
                p.load()
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        loaders = [threading.Thread(target=load, args=(parts[lang],)) for lang in order]
        for t in loaders:
            t.start()
        for t in loaders:
            t.join()
        if errors:
            raise errors[0]
    else:
        for lang in order:
            parts[lang].load()

    expect: dict[str, dict[str, int]] = {}
    lock = threading.Lock()
    ready = threading.Barrier(args.threads + 1)
    release = threading.Event()
    failures: list[BaseException] = []

    def write(i: int) -> None:
        tid = threading.get_native_id()
        base = tid * 10
        values = {}
        for lang in ("py", "cxx", "go"):
            got = parts[lang].set(f"{lang}.value", base + CODE[lang])
            assert got == tid, f"{lang} wrote on thread {got}, not {tid}"
            values[f"{lang}.value"] = base + CODE[lang]
        rot = ["py", "cxx", "go"]
        rot = rot[i % 3 :] + rot[: i % 3]
        for lang in rot:
            assert parts[lang].set(COMMON, base + CODE[lang]) == tid
        values[COMMON] = base + CODE[rot[-1]]
        # User space agrees: the Python key reads the last write of any language.
        assert parts["py"].keys[COMMON].get() == values[COMMON]
        with lock:
            expect[str(tid)] = values

    def worker(i: int) -> None:
        try:
            write(i)
        except BaseException as e:  # noqa: BLE001
            failures.append(e)
        ready.wait()
        release.wait()

    ts = [threading.Thread(target=worker, args=(i,), name=f"mixed-{i}") for i in range(args.threads)]
    for t in ts:
        t.start()
    write(args.threads)  # the main thread too
    ready.wait()
    if failures:
        raise failures[0]
    print(
        json.dumps(
            {
                "pid": os.getpid(),
                "meta_pages": {lang: p.meta_page() for lang, p in parts.items()},
                "keys": {COMMON: 8, "py.value": 8, "cxx.value": 8, "go.value": 8},
                "threads": expect,
            }
        ),
        flush=True,
    )
    sys.stdin.read()
    release.set()
    for t in ts:
        t.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
