"""One process, many languages, publishing OpenTelemetry thread context
(DESIGN §10.5, §10.9, §10.10), against the real kernel.

otel_app.py holds three copies of the tld core (the Python extension,
libmixed_cxx.so, libmixed_go.so), each publishing distinct OTEP 4947 records
on threads of its own. The readers of otel/reader (`otel_read`, driven
through python/tests/otel_reader.py; its BPF reader's map is the one the
process attaches) check, per thread: BPF reads exactly the bytes that
language wrote, attributes named through the one shared key map; the OTEP
4947 TLS reader finds exactly one `otel_thread_ctx_v1` holding a pointer
(whichever copy is live) to the same bytes; after clear, `valid` is 0 and
every pointer NULL. The OTEP 4719 reader finds one `OTEL_CTX` mapping whose
key map lists every attribute name used, once.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest


from bpf_reader import require_bpf
from conftest import app_process
from otel_reader import OtelReader, decode

ROOT = Path(__file__).resolve().parents[2]
APP = str(Path(__file__).resolve().parent / "otel_app.py")
ORDERS = ["py,cxx,go", "cxx,go,py", "go,py,cxx"]


@pytest.fixture
def reader(env: dict[str, str]) -> Iterator[OtelReader]:
    """`otel_read --pin`: its BPF reader's map, pinned for the process under test."""
    require_bpf("OpenTelemetry kernel tests need root or CAP_BPF+CAP_PERFMON")
    exe = Path(os.environ.get("TLD_OTEL_READ", ROOT / "target" / "debug" / "otel_read"))
    if not exe.exists():
        pytest.fail(f"{exe} is missing: `cargo build -p tld-otel-reader --bin otel_read` (make mixed-test does)", pytrace=False)
    os.environ["TLD_OTEL_READ"] = str(exe)
    with OtelReader.start() as r:
        yield r


def encode(rec: dict[str, Any], key_map: list[str]) -> bytes:
    """The OTEP 4947 record rec should be, attribute names as key-map indexes."""
    attrs = b"".join(bytes([key_map.index(k), len(v)]) + v.encode() for k, v in rec["attributes"])
    head = bytes.fromhex(rec["trace"]) + bytes.fromhex(rec["span"]) + bytes([1, rec["flags"]])
    return head + len(attrs).to_bytes(2, "little") + attrs


def otel_ctx_mappings(pid: int) -> list[str]:
    with open(f"/proc/{pid}/maps") as f:
        return [line.strip() for line in f if "OTEL_CTX" in line]


def check_published(reader: OtelReader, exp: dict[str, Any], service: Optional[str] = "mixed-otel") -> None:
    pid, size = exp["pid"], exp["record_size"]
    # OTEP 4719: one OTEL_CTX mapping, its key map every name used, once.
    assert len(otel_ctx_mappings(pid)) == 1, otel_ctx_mappings(pid)
    ctx = reader.context(pid)
    assert ctx["mapping"].startswith("/memfd:OTEL_CTX"), ctx
    assert ctx["attributes"].get("service.name") == service, ctx
    key_map = ctx["key_map"]
    assert len(set(key_map)) == len(key_map) and sorted(key_map) == exp["names"], (key_map, exp["names"])
    for tid, rec in exp["threads"].items():
        tid = int(tid)
        want = encode(rec, key_map)
        # BPF: exactly the bytes that language wrote.
        valid, b = reader.bpf(tid, size)
        assert valid and len(b) == size, (tid, rec["lang"], b.hex())
        assert b[: len(want)] == want, (tid, rec["lang"], b.hex(), want.hex())
        attrs = [tuple(a) for a in rec["attributes"]]
        got = decode(b, key_map)
        assert got == (want[:16], want[16:24], 1, rec["flags"], attrs), (tid, got)
        # OTEP 4947: exactly one live otel_thread_ctx_v1, at the same bytes.
        symbols, tls = reader.tls(tid, pid)
        live = [s for s in symbols if s["pointer"] != 0]
        assert len(live) == 1, (tid, rec["lang"], symbols)
        assert "/tld/_tld" in live[0]["path"], live  # the only exported copy: the Python extension's
        assert tls is not None and len(tls) >= len(want) and tls == b[: len(tls)], (tid, rec["lang"], tls, b.hex())


def check_cleared(reader: OtelReader, exp: dict[str, Any]) -> None:
    for tid, rec in exp["threads"].items():
        valid, b = reader.bpf(int(tid), exp["record_size"])
        assert not valid and b[24] == 0, (tid, rec["lang"], b.hex())
        symbols, tls = reader.tls(int(tid), exp["pid"])
        assert symbols and all(s["pointer"] == 0 for s in symbols) and tls is None, (tid, rec["lang"], symbols)
    assert len(otel_ctx_mappings(exp["pid"])) == 1


@pytest.mark.parametrize("order", ORDERS)
def test_three_copies_publish_otel(env, reader, order):
    """Python, C++ and Go each publish records on threads of their own, loaded in `order`."""
    argv = [sys.executable, APP, "--order", order, "--threads", "2"]
    with app_process(argv, {**env, "TLD_MAP_PATH": str(reader.map_path), "TLD_PIN_WATCH": "0"}) as (proc, exp):
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        # 2 Python threads per language, plus the C++ and Go libraries' own threads.
        assert sorted(r["lang"] for r in exp["threads"].values()) == sorted(["py"] * 2 + ["cxx"] * 3 + ["go"] * 3)
        assert exp["names"] == ["cxx.worker", "go.worker", "lang", "py.worker"]
        check_published(reader, exp)
        proc.stdin.write("clear\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        assert line, f"otel_app exited on clear:\n{proc.stderr.read()}"
        assert json.loads(line) == {"cleared": len(exp["threads"])}
        check_cleared(reader, exp)


@pytest.mark.parametrize("order", ["py,cxx,go", "cxx,go,py"])
def test_python_attaches_only(env, reader, order):
    """Python attaches but never publishes: the C++ and Go libraries (symbols
    hidden) publish alone, and OTEP 4947 readers still find each record
    through the Python extension's exported symbol, claimed when it attached."""
    argv = [sys.executable, APP, "--order", order, "--threads", "2", "--python-silent"]
    with app_process(argv, {**env, "TLD_MAP_PATH": str(reader.map_path), "TLD_PIN_WATCH": "0"}) as (proc, exp):
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        assert sorted(r["lang"] for r in exp["threads"].values()) == sorted(["cxx"] * 3 + ["go"] * 3)
        check_published(reader, exp, service=None)
        proc.stdin.write("clear\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline()) == {"cleared": len(exp["threads"])}
        check_cleared(reader, exp)
