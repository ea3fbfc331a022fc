"""One process, many languages (DESIGN §4), against the real kernel.

Each scenario process holds three copies of the tld core (Python's extension,
libmixed_cxx.so on the C++ binding, libmixed_go.so on the Go binding, the
libraries loaded RTLD_LOCAL), or two (the Go host program and the C++ library
it dlopens). What the `tld` tool's BPF task iterator reads of it
(mixed_check.check): every copy on the same metadata page; each key once, in
one layout, with its size; exactly the threads that wrote, each walked
through every key, holding the value each language wrote on it, and for the
common key (get-or-create from every language) the last write. The ABI
version rules between copies (a newer minor joins, another major refuses,
never two pages) are tests/tests/abi_version.rs. The same three copies
publishing OpenTelemetry thread context (DESIGN §10.5) are
test_mixed_otel.py.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

APP = str(Path(__file__).resolve().parent / "mixed_app.py")
ORDERS = [",".join(p) for p in itertools.permutations(["py", "cxx", "go"])]


def test_python_hosts_cxx_and_go(scenario):
    """1. Python imports tld and loads the C++ and Go libraries; 8 threads write through all three."""
    exp = scenario([sys.executable, APP, "--threads", "8"])
    assert len(exp["threads"]) == 9


@pytest.mark.parametrize("order", ORDERS)
def test_load_order(scenario, order):
    """3. Any of the six load orders gives one runtime and the same picture."""
    scenario([sys.executable, APP, "--order", order, "--threads", "3"])


@pytest.mark.parametrize("attempt", range(5))
def test_racing_loads(scenario, attempt):
    """3. The three copies loaded (attach, key creation) at once from three threads."""
    order = ORDERS[attempt % len(ORDERS)]
    scenario([sys.executable, APP, "--race", "--order", order, "--threads", "3"])


def test_go_hosts_cxx(scenario, env):
    """2. A Go program dlopens the C++ library; 6 locked goroutines write through both."""
    exp = scenario([env["GOHOST"], env["MIXED_CXX_LIB"], "6"])
    assert set(exp["meta_pages"]) == {"go", "cxx"}
    assert len(exp["threads"]) == 6
