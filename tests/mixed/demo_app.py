"""The `make demo` workload: one process, three languages, one tld runtime.

The Python main thread imports tld and loads libmixed_cxx.so (C++ binding)
and libmixed_go.so (Go binding), each with its own copy of the core, RTLD_LOCAL.
Then, for DEMO_SECONDS seconds (10 by default):

  py-main     (Python)  py.phase, and the common key priority
  cxx-worker  (a std::thread of the C++ library)  cxx.queue_depth, priority
  go-worker   (a locked goroutine's thread in the Go library)  go.requests, priority
  py-mixed    (a Python thread calling all three)  py.phase via Python,
              cxx.queue_depth via C++, go.requests via Go, priority by each in turn

Every value changes over time; `tld dump PID --watch 1` shows them as BPF reads them.
Environment: TLD_MAP_PATH, MIXED_CXX_LIB, MIXED_GO_LIB, DEMO_SECONDS.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from typing import Any

import tld

libc = ctypes.CDLL(None)


def name_thread(name: str) -> None:
    libc.prctl(15, name.encode(), 0, 0, 0)  # PR_SET_NAME: the comm `tld dump` shows


def load(path: str, prefix: str) -> tuple[int, Any, Any]:
    lib = ctypes.CDLL(path, mode=os.RTLD_LOCAL)
    attach = getattr(lib, prefix + "attach")
    attach.argtypes, attach.restype = [ctypes.c_char_p], ctypes.c_int
    if attach(None) != 0:
        raise SystemExit(f"{path}: cannot attach {os.environ.get('TLD_MAP_PATH')}")
    setv = getattr(lib, prefix + "set")
    setv.argtypes, setv.restype = [ctypes.c_char_p, ctypes.c_int64], ctypes.c_long
    start = getattr(lib, prefix + "start_worker")
    start.argtypes, start.restype = [ctypes.c_int], ctypes.c_long
    page = getattr(lib, prefix + "metadata_page")
    page.argtypes, page.restype = [], ctypes.c_size_t
    return page(), setv, start


def main() -> None:
    seconds = int(os.environ.get("DEMO_SECONDS", "10"))
    tld.attach()
    cxx_page, cxx_set, cxx_start = load(os.environ["MIXED_CXX_LIB"], "mixed_cxx_")
    go_page, go_set, go_start = load(os.environ["MIXED_GO_LIB"], "mixed_go_")
    phase = tld.key("py.phase", "q")
    prio = tld.key("priority", "q")  # the common key: C++ and Go get the same one by name
    name_thread("py-main")
    pages = {"python": tld.runtime_stats().meta_page, "c++": cxx_page, "go": go_page}
    shown = ", ".join(f"{lang} {page:#x}" for lang, page in pages.items())
    print(f"demo: pid {os.getpid()}, for {seconds}s; metadata page of each copy of the core: {shown}", flush=True)
    if len(set(pages.values())) != 1:
        raise SystemExit("demo: the copies of the core do not share one runtime")

    cxx_tid = cxx_start(seconds)
    go_tid = go_start(seconds)
    until = time.monotonic() + seconds

    def mixed() -> None:
        name_thread("py-mixed")
        i = 0
        while time.monotonic() < until:
            phase.set(100 + i)  # Python
            cxx_set(b"cxx.queue_depth", (i * 3) % 20)  # C++, on this same thread
            go_set(b"go.requests", 1000 + i)  # Go, on this same thread
            [prio.set, lambda v: cxx_set(b"priority", v), lambda v: go_set(b"priority", v)][i % 3](10 + i % 3)
            i += 1
            time.sleep(0.25)

    t = threading.Thread(target=mixed)
    t.start()
    print(f"demo: cxx-worker tid {cxx_tid}, go-worker tid {go_tid}, py-main tid {threading.get_native_id()}", flush=True)
    i = 0
    while time.monotonic() < until:
        phase.set(i)
        prio.set(i % 5)
        i += 1
        time.sleep(0.5)
    t.join()
    time.sleep(0.5)  # the workers' last tick


if __name__ == "__main__":
    main()
