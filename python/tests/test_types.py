"""The stubs' generic Key, checked with mypy against the installed package:
formats give the value types they should, and misuse is an error."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import tld

TYPING = Path(__file__).resolve().parent / "typing"
ROOT = Path(__file__).resolve().parents[2]


def mypy(path: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("mypy")  # in the test extras: `pip install '.[test]'`
    # From target/: mypy leaves a .mypy_cache in its working directory.
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--python-version", "3.10", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT / "target",
    )


def test_formats_give_value_types():
    out = mypy(TYPING / "keys_typed.py")
    assert out.returncode == 0, out.stdout + out.stderr


def assert_refused_exactly_where_marked(name: str) -> None:
    """mypy reports an error on exactly the lines of typing/NAME marked `# E:`."""
    source = (TYPING / name).read_text().splitlines()
    expected = {i + 1 for i, line in enumerate(source) if "# E:" in line}
    out = mypy(TYPING / name)
    reported = {int(m.group(1)) for m in re.finditer(re.escape(name) + r":(\d+): error", out.stdout)}
    assert reported == expected, out.stdout + out.stderr


def test_misuse_is_a_type_error():
    assert_refused_exactly_where_marked("keys_refused.py")


def test_otel_types():
    out = mypy(TYPING / "otel_typed.py")
    assert out.returncode == 0, out.stdout + out.stderr
    assert_refused_exactly_where_marked("otel_refused.py")


def test_key_is_subscriptable_at_run_time():
    # Annotations such as `def f(k: tld.Key[int])` are evaluated without
    # `from __future__ import annotations`.
    alias = tld.Key[int]
    assert alias.__origin__ is tld.Key and alias.__args__ == (int,)
