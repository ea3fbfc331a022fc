"""Fixtures: scenarios in fresh interpreters, and the pinned map for kernel tests.

The tld runtime is per process (DESIGN §4) and a thread's first data access
freezes the per-thread data size, so every scenario runs in a fresh
subprocess: `run(code)` executes `code` (after the PRELUDE) with
`sys.executable` and fails the test, showing its output, unless it exits 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable, Iterator

import pytest

from bpf_reader import pinned_map as bpf_pinned_map
from bpf_reader import require_bpf

ROOT = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parent

PRELUDE = """\
import ctypes, errno, gc, os, struct, sys, threading, time
import tld
from tld import TldError

def settle(predicate, timeout=10.0):
    # Thread.join() returns when the Python part of a thread is done; the OS
    # thread then runs its TLS destructors, where tld releases its block.
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return predicate()
        time.sleep(0.002)
    return True
"""

KERNEL_PRELUDE = """\
from bpf_reader import dump, threads, keys, raw
"""

Run = Callable[..., subprocess.CompletedProcess]


def _runner(extra_env: dict[str, str], prelude: str) -> Run:
    def run(code: str, *, timeout: float = 120, expect_exit: int = 0, env: dict[str, str] | None = None):
        environ = {k: v for k, v in os.environ.items() if k not in ("TLD_MAP_PATH", "TLD_CLI")}
        environ["PYTHONPATH"] = os.pathsep.join([str(TESTS), environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        environ.update(extra_env)
        environ.update(env or {})
        script = prelude + textwrap.dedent(code)
        proc = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, env=environ, cwd=TESTS
        )
        if proc.returncode != expect_exit:
            numbered = "\n".join(f"{i + 1:4} {line}" for i, line in enumerate(script.splitlines()))
            pytest.fail(
                f"scenario exited {proc.returncode} (expected {expect_exit})\n--- script\n{numbered}\n"
                f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}",
                pytrace=False,
            )
        return proc

    return run


@pytest.fixture
def run() -> Run:
    """Runs a scenario in a fresh interpreter, without any map attached."""
    return _runner({}, PRELUDE)


@pytest.fixture(scope="session")
def pinned_map() -> Iterator[dict[str, str]]:
    """A tld_data_map pinned for this session with `tld pin`; skips (outside
    CI) or fails (under CI=true) without BPF privileges."""
    require_bpf("kernel test needs root or CAP_BPF+CAP_PERFMON (run as root to test against BPF)")
    cli = Path(os.environ.get("TLD_CLI", ROOT / "target" / "debug" / "tld"))
    if not cli.exists():
        pytest.fail(f"{cli} is missing: build the reader with `cargo build -p tld-cli` (make test does)", pytrace=False)
    with bpf_pinned_map(cli, "pytest") as path:
        yield {"TLD_CLI": str(cli), "TLD_MAP_PATH": str(path)}


OTEL_PRELUDE = """\
import tld.otel
from otel_reader import OtelReader, decode
"""


@pytest.fixture(scope="session")
def otel_read() -> dict[str, str]:
    """The readers of otel/reader as a command (otel_reader.py); skips
    (outside CI) or fails (under CI=true) without BPF privileges."""
    require_bpf("otel kernel test needs root (BPF and ptrace)")
    exe = Path(os.environ.get("TLD_OTEL_READ", ROOT / "target" / "debug" / "otel_read"))
    if not exe.exists():
        pytest.fail(f"{exe} is missing: `cargo build -p tld-otel-reader --bin otel_read` (make python-test does)", pytrace=False)
    return {"TLD_OTEL_READ": str(exe), "TLD_PIN_WATCH": "0"}


@pytest.fixture
def run_otel(otel_read: dict[str, str]) -> Run:
    """Runs a scenario in a fresh interpreter with tld.otel and the readers imported."""
    return _runner(otel_read, PRELUDE + OTEL_PRELUDE)


@pytest.fixture
def run_kernel(pinned_map: dict[str, str]) -> Run:
    """Runs a scenario in a fresh interpreter with TLD_MAP_PATH set to the
    session's pinned map (`tld.attach()` attaches it) and bpf_reader imported."""
    return _runner(pinned_map, PRELUDE + KERNEL_PRELUDE)
