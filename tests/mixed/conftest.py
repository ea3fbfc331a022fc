"""Fixtures of the mixed-language tests: a pinned map, the built artifacts,
and `scenario(cmd)`, which starts a scenario process, reads its expectation
and checks it against `tld dump` while the process's threads are alive.

Built by tests/mixed/build.sh (`make mixed-test` runs it): libmixed_cxx.so
(C++ binding), libmixed_go.so (Go binding, c-shared) and gohost (Go binding,
dlopens libmixed_cxx.so), in target/mixed; test_mixed_otel.py also needs
otel_read (target/debug, or $TLD_OTEL_READ). Without BPF privileges the tests
skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
OUT = ROOT / "target" / "mixed"
# bpf_reader (the `tld dump --json` reader of the Python tests) and mixed_check.
sys.path[:0] = [str(ROOT / "python" / "tests"), str(HERE)]

from bpf_reader import pinned_map, require_bpf  # noqa: E402  (needs the path above)



@pytest.fixture(scope="session")
def env() -> Iterator[dict[str, str]]:
    """The environment of a scenario: a map pinned for this session, the artifacts."""
    require_bpf("mixed-language kernel tests need root or CAP_BPF+CAP_PERFMON")
    cli = Path(os.environ.get("TLD_CLI", ROOT / "target" / "debug" / "tld"))
    art = {"MIXED_CXX_LIB": OUT / "cxx" / "libmixed_cxx.so", "MIXED_GO_LIB": OUT / "libmixed_go.so", "GOHOST": OUT / "gohost"}
    for p in [cli, *art.values()]:
        if not p.exists():
            pytest.fail(f"{p} is missing: run tests/mixed/build.sh (make mixed-test does)", pytrace=False)
    with pinned_map(cli, "mixed") as path:
        e = {"TLD_CLI": str(cli), "TLD_MAP_PATH": str(path), **{k: str(v) for k, v in art.items()}}
        os.environ.update(e)  # bpf_reader reads TLD_CLI and TLD_MAP_PATH
        yield e


Scenario = Callable[[list[str]], dict[str, Any]]


@contextlib.contextmanager
def app_process(argv: list[str], env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    """Starts argv (stdin, stdout and stderr piped; env over os.environ) and
    yields it with the first JSON line it prints (its expectation); on
    leaving, closes its stdin and, unless the block raised, requires exit
    status 0."""
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **env},
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        line = proc.stdout.readline()
        if not line:
            proc.stdin.close()
            proc.wait(timeout=60)
            pytest.fail(f"{argv} exited {proc.returncode} without an expectation:\n{proc.stderr.read()}", pytrace=False)
        yield proc, json.loads(line)
    finally:
        if not proc.stdin.closed:
            proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stderr.read()}"


@pytest.fixture
def scenario(env: dict[str, str]) -> Scenario:
    """scenario(argv): runs argv, checks its expectation with mixed_check.check
    while it waits, then closes its stdin and requires exit status 0."""
    from mixed_check import check

    def run(argv: list[str]) -> dict[str, Any]:
        with app_process(argv, env) as (_, expect):
            check(expect)
        return expect

    return run
