"""What BPF reads of a process's task local data, through the `tld` tool.

`tld dump PID --json` (crate cli/) reads every registered thread of a process
with a BPF task iterator that walks the metadata and data pages through the
UPTRs of `tld_data_map`: an independent reader, which knows no key names and
shares no code with the Python binding. Scenario subprocesses import this
module (the tests put this directory on PYTHONPATH) and dump themselves.

Environment: TLD_CLI (the tool's path) and TLD_MAP_PATH (the pinned map),
both set by conftest.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator, Optional

# `tld dump` exit code when no thread of the process is registered in the map.
NOT_USING_TLD = 4


def has_bpf_privileges() -> bool:
    """CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON, as tld_bpf::has_bpf_privileges."""
    try:
        with open("/proc/self/status") as f:
            caps = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration):
        return os.geteuid() == 0
    return bool(caps & (1 << 21)) or (bool(caps & (1 << 39)) and bool(caps & (1 << 38)))


def in_ci() -> bool:
    """Kernel tests fail instead of skipping under CI=true."""
    return os.environ.get("CI") in ("true", "1")


def require_bpf(why: str) -> None:
    """Skips the calling test without BPF privileges, or fails it under CI=true."""
    import pytest

    if not has_bpf_privileges():
        if in_ci():
            pytest.fail(f"{why}, and CI=true forbids skipping", pytrace=False)
        pytest.skip(why)


@contextlib.contextmanager
def pinned_map(cli: Path, tag: str) -> Iterator[Path]:
    """A tld_data_map pinned with `tld pin` at a path of its own (by tag and
    pid) for the duration; unpinned and its directory removed afterwards."""
    import pytest

    pin_dir = Path(f"/sys/fs/bpf/tld-{tag}-{os.getpid()}")
    path = pin_dir / "tld_data_map"
    pin = subprocess.run([str(cli), "pin", "--path", str(path)], capture_output=True, text=True)
    if pin.returncode != 0:
        pytest.fail(f"`tld pin --path {path}` exited {pin.returncode}: {pin.stderr.strip()}", pytrace=False)
    try:
        yield path
    finally:
        subprocess.run([str(cli), "unpin", "--path", str(path)], capture_output=True)
        with contextlib.suppress(OSError):
            pin_dir.rmdir()


def dump(pid: Optional[int] = None, tid: Optional[int] = None) -> dict[str, Any]:
    """`tld dump PID --json` (schema tld-dump/1) for `pid` (default: this process).

    A process with no registered thread gives an empty `threads` list.
    """
    pid = os.getpid() if pid is None else pid
    cmd = [os.environ["TLD_CLI"], "dump", str(pid), "--json", "--path", os.environ["TLD_MAP_PATH"]]
    if tid is not None:
        cmd += ["--tid", str(tid)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if out.returncode == NOT_USING_TLD:
        return {"schema": "tld-dump/1", "pid": pid, "keys": [], "threads": [], "warnings": [out.stderr.strip()]}
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {out.returncode}: {out.stderr.strip()}")
    doc = json.loads(out.stdout)
    assert doc["schema"] == "tld-dump/1", doc["schema"]
    return doc


def value(entry: Optional[dict[str, Any]]) -> Any:
    """A value of the dump: the int for 1, 2, 4 and 8-byte values, else the bytes."""
    if entry is None:
        return None
    if "int" in entry:
        return entry["int"]
    return bytes.fromhex(entry["hex"])


def raw(entry: dict[str, Any]) -> bytes:
    """The bytes of a value of the dump (at most its first 64)."""
    return bytes.fromhex(entry["hex"])


def threads(doc: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """tid -> {key name -> value} for every registered thread of the dump."""
    return {t["tid"]: {name: value(v) for name, v in t["values"].items()} for t in doc["threads"]}


def keys(doc: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """key name -> (offset, size), as BPF sees the metadata page."""
    return {k["name"]: (k["offset"], k["size"]) for k in doc["keys"]}


def gettid() -> int:
    """The calling thread's id (threading.get_native_id())."""
    import threading

    return threading.get_native_id()
