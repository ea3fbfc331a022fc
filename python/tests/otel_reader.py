"""What tools outside the process read of tld.otel's records: the readers of
otel/reader (`otel_read`, built with `cargo build -p tld-otel-reader --bin
otel_read`), which share no code with the binding's writing path.

- BPF: a program reading a thread's `otel.thread_ctx_v1` through
  `tld_data_map` (tld.bpf.h), run by `otel_read` on its own map, pinned for
  the process under test to attach;
- OTEP 4947: the TLS reader finds `otel_thread_ctx_v1` in the `.dynsym` of
  each mapped object, stops the thread (ptrace) and follows its pointer;
- OTEP 4719: the process context reader (/proc/PID/maps, `OTEL_CTX`).

A scenario starts the reader itself (`OtelReader.start()`), attaches the
map it pinned, and asks it about its own threads. Environment: TLD_OTEL_READ
(the binary's path), set by conftest.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from typing import Any, NamedTuple, Optional


class Decoded(NamedTuple):
    trace_id: bytes
    span_id: bytes
    valid: int
    flags: int
    attributes: list[tuple[str, str]]


def decode(record: bytes, key_map: list[str]) -> Decoded:
    """An OTEP 4947 record, attribute indexes named through the key map."""
    size = int.from_bytes(record[26:28], "little")
    attrs = []
    at = 28
    while at + 2 <= min(28 + size, len(record)):
        k, n = record[at], record[at + 1]
        attrs.append((key_map[k], record[at + 2 : at + 2 + n].decode()))
        at += 2 + n
    assert at == 28 + size, f"attrs-data ends inside an entry: {record.hex()}"
    return Decoded(record[:16], record[16:24], record[24], record[25], attrs)


class OtelReader:
    """The `otel_read` process, its pinned map and its line protocol."""

    def __init__(self, proc: subprocess.Popen, map_path: Optional[str]) -> None:
        self.proc = proc
        self.map_path = map_path
        self._lock = threading.Lock()

    @classmethod
    def start(cls, pin: bool = True) -> "OtelReader":
        cmd = [os.environ["TLD_OTEL_READ"]]
        if pin:
            cmd += ["--pin", f"/sys/fs/bpf/tld-otel-py-{os.getpid()}"]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        map_path = None
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.strip()
            if line.startswith("pinned "):
                map_path = line.split(" ", 1)[1]
            elif line == "ready":
                return cls(proc, map_path)
        raise RuntimeError(f"{cmd} exited {proc.wait()} before it was ready")

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with self._lock:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"otel_read exited ({self.proc.wait()}) on {command!r}")
        doc: dict[str, Any] = json.loads(line)
        if "error" in doc:
            raise RuntimeError(f"otel_read {command}: {doc}")
        return doc

    def bpf(self, tid: int, size: int) -> tuple[bool, bytes]:
        """(valid as BPF's helper decides, the record's bytes) of thread `tid`."""
        d = self.ask(f"bpf {tid} {size}")
        return d["valid"], bytes.fromhex(d["hex"])

    def tls(self, tid: int, pid: Optional[int] = None) -> tuple[list[dict[str, Any]], Optional[bytes]]:
        """(every exported symbol's slot of thread `tid`, the record the live one points at)."""
        d = self.ask(f"tls {os.getpid() if pid is None else pid} {tid}")
        rec = d["record"]
        return d["symbols"], None if rec is None else bytes.fromhex(rec)

    def context(self, pid: Optional[int] = None) -> dict[str, Any]:
        return self.ask(f"context {os.getpid() if pid is None else pid}")

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("exit\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=30)

    def __enter__(self) -> "OtelReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
