"""tld.otel: the OpenTelemetry thread context from Python (DESIGN §10).

The API's own checks run in fresh interpreters (`run`); the kernel tests
(`run_otel`) read the records back with otel/reader's readers
(otel_reader.py): BPF through `tld_data_map`, OTEP 4947's TLS path with the
thread stopped, OTEP 4719's process context. Without root they are skipped,
except under CI=true.
"""

from __future__ import annotations

from textwrap import dedent

import pytest

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def test_set_current_clear(run):
    run(f"""
        import tld.otel as otel
        assert otel.current() is None
        assert otel.record_size() == 128
        otel.set("{TRACE}", "{SPAN}", attributes={{"http.route": "/users/:id", "worker": "w1"}})
        r = otel.current()
        assert r.trace_id.hex() == "{TRACE}" and r.span_id.hex() == "{SPAN}" and r.flags == 1, r
        assert r.attributes == {{"http.route": "/users/:id", "worker": "w1"}}, r
        # bytes, hex str and int name the same ids (ints big-endian, as the OpenTelemetry API holds them)
        otel.set(int("{TRACE}", 16), int("{SPAN}", 16), 0)
        r2 = otel.current()
        assert (r2.trace_id, r2.span_id, r2.flags, r2.attributes) == (r.trace_id, r.span_id, 0, {{}}), r2
        otel.set(bytes.fromhex("{TRACE}"), bytearray.fromhex("{SPAN}"), 3)
        assert otel.current()[:3] == (r.trace_id, r.span_id, 3)
        otel.clear()
        assert otel.current() is None
        assert otel.attribute_keys() == ["http.route", "worker"]
        assert otel.attribute_key("worker") == 1 and otel.attribute_key("db.system") == 2
        assert otel.owns_live_symbol(), "the extension's otel_thread_ctx_v1 is the live symbol"
    """)


def test_errors_leave_the_record_as_it_was(run):
    run(f"""
        import tld.otel as otel
        otel.set("{TRACE}", "{SPAN}", attributes={{"a": "before"}})
        before = otel.current()
        def refused(exc, errno_=None, *args, **kw):
            try:
                otel.set(*args, **kw)
            except exc as e:
                if errno_ is not None:
                    assert e.errno == errno_, (e.errno, e)
                assert otel.current() == before, otel.current()
                return str(e)
            raise AssertionError(f"set{{args}} {{kw}} was accepted")
        m = refused(TldError, errno.E2BIG, 1, 1, attributes={{"a": "x" * 99}})   # 101 bytes > 100
        assert "101 bytes" in m and "100" in m, m
        otel.set(1, 1, attributes={{"a": "x" * 98}})   # exactly 100 bytes fit
        otel.set("{TRACE}", "{SPAN}", attributes={{"a": "before"}})
        refused(TldError, errno.E2BIG, 1, 1, attributes={{"a": "x" * 256}})
        m = refused(TldError, errno.EINVAL, b"\\1" * 16, b"\\0" * 8)
        assert "span id is all zero" in m, m
        refused(TldError, errno.EINVAL, 0, 0, 1)           # flags without ids
        refused(TldError, errno.EINVAL, 1, 1, attributes={{"": "x"}})
        refused(ValueError, None, "abc", 1)
        refused(ValueError, None, "z" * 32, 1)
        refused(ValueError, None, b"x" * 15, 1)
        refused(ValueError, None, 1, 2**64)
        refused(ValueError, None, -1, 1)
        refused(ValueError, None, 1, 1, 256)
        refused(TypeError, None, 1.5, 1)
        refused(TypeError, None, 1, 1, attributes={{"a": 3}})
        refused(TypeError, None, 1, 1, attributes=[("a", "b")])
        otel.set(0, 0, 0)                                   # no ids, no flags: allowed, valid
        assert otel.current() == (bytes(16), bytes(8), 0, {{}})
        try:
            otel.set_record_size(256)
        except TldError as e:
            assert e.errno == errno.EBUSY and "already exists with 128 bytes" in str(e), e
        else:
            raise AssertionError("record size changed after the key exists")
        otel.set_record_size(128)                           # the size it has: a no-op
        for bad, exc in (({{"threadlocal.x": "y"}}, TldError), ({{"k": object()}}, TypeError), ({{"k": 2**63}}, ValueError)):
            try:
                otel.publish_process_context(bad)
            except exc:
                pass
            else:
                raise AssertionError(bad)
    """)


def test_record_size_before_the_key(run):
    run("""
        import tld.otel as otel
        try:
            otel.set_record_size(27)
        except TldError as e:
            assert e.errno == errno.EINVAL, e
        otel.set_record_size(640)
        assert otel.record_size() == 640
        otel.set(1, 1, attributes={"a": "x" * 255, "b": "y" * 255})
        assert otel.current().attributes == {"a": "x" * 255, "b": "y" * 255}
    """)
    run("""
        import tld.otel as otel
        assert otel.record_size() == 64
    """, env={"TLD_OTEL_RECORD_SIZE": "64"})


def test_scoped_restores_nested_and_on_exceptions(run):
    run("""
        import tld.otel as otel
        outer = otel.scoped(1, 0x10, attributes={"http.route": "/outer"})
        inner = otel.scoped(1, 0x20, 0)
        with outer as s:
            assert isinstance(s, otel.Scope)
            assert otel.current().span_id == (0x10).to_bytes(8, "big")
            try:
                with inner:
                    assert otel.current() == ((1).to_bytes(16, "big"), (0x20).to_bytes(8, "big"), 0, {})
                    raise KeyError("boom")
            except KeyError:
                pass
            assert otel.current().attributes == {"http.route": "/outer"}
            with outer:                                    # re-entered while entered
                with inner:
                    pass
                assert otel.current().span_id == (0x10).to_bytes(8, "big")
            assert otel.current().span_id == (0x10).to_bytes(8, "big")
        assert otel.current() is None, "invalid again after the outermost scope"
        # An entry that is refused changes nothing and is not entered.
        big = otel.scoped(1, 1, attributes={"a": "x" * 200})
        try:
            with big:
                raise AssertionError("entered")
        except TldError as e:
            assert e.errno == errno.E2BIG
        assert otel.current() is None
        # Exiting on another thread is refused, and the entering thread keeps its record.
        s = otel.scoped(1, 1)
        s.__enter__()
        errs = []
        def other():
            try:
                s.__exit__(None, None, None)
            except RuntimeError as e:
                errs.append(str(e))
        t = threading.Thread(target=other); t.start(); t.join()
        assert errs and "another thread" in errs[0], errs
    """)


def test_instrument_needs_the_api(run):
    run("""
        import sys
        sys.modules["opentelemetry"] = None      # as if not installed
        import tld.otel as otel
        try:
            otel.instrument()
        except ImportError as e:
            assert "task-local-data[otel]" in str(e), e
        else:
            raise AssertionError("instrument() without opentelemetry")
        assert not otel.instrumented()
    """)


SDK = """
import tld.otel
from opentelemetry import trace, context
from opentelemetry.sdk.trace import TracerProvider
trace.set_tracer_provider(TracerProvider())
tracer = trace.get_tracer("tld-test")
def ids(span):
    c = span.get_span_context()
    return c.trace_id.to_bytes(16, "big"), c.span_id.to_bytes(8, "big"), c.trace_flags
def record():
    r = tld.otel.current()
    return None if r is None else (r.trace_id, r.span_id, r.flags)
"""


def test_instrument_follows_activation(run):
    pytest.importorskip("opentelemetry.sdk")
    run(SDK + dedent("""
        tld.otel.instrument(attributes=["http.route"])
        hook = context._RUNTIME_CONTEXT
        tld.otel.instrument(attributes=["http.route"])
        assert context._RUNTIME_CONTEXT is hook, "instrument() is idempotent"
        assert tld.otel.instrumented()
        assert "http.route" in tld.otel.attribute_keys()
        with tracer.start_as_current_span("outer", attributes={"http.route": "/r"}) as outer:
            assert record() == ids(outer)
            assert tld.otel.current().attributes == {"http.route": "/r"}
            with tracer.start_as_current_span("inner") as inner:
                assert record() == ids(inner)
                assert tld.otel.current().attributes == {}
            assert record() == ids(outer), "the parent again after the child"
            # A span started, not activated: the record does not move.
            started = tracer.start_span("not-current")
            assert record() == ids(outer)
            with trace.use_span(started, end_on_exit=True):
                assert record() == ids(started)
            try:
                with tracer.start_as_current_span("failing"):
                    raise ValueError("x")
            except ValueError:
                pass
            assert record() == ids(outer)
            # context.attach/detach directly.
            token = context.attach(trace.set_span_in_context(trace.INVALID_SPAN))
            assert record() is None
            context.detach(token)
            assert record() == ids(outer)
        assert record() is None
        # Attributes that do not fit: the span without them, a warning, no exception.
        import logging
        logs = []
        class H(logging.Handler):
            def emit(self, r): logs.append(r.getMessage())
        logging.getLogger("tld.otel").addHandler(H())
        with tracer.start_as_current_span("big", attributes={"http.route": "x" * 200}) as big:
            assert record() == ids(big) and tld.otel.current().attributes == {}
        assert len(logs) == 1 and "202 bytes" in logs[0] and "without its attributes" in logs[0], logs
        tld.otel.uninstrument()
        assert not tld.otel.instrumented() and context._RUNTIME_CONTEXT is hook.inner
        with tracer.start_as_current_span("after") as s:
            assert record() is None
        tld.otel.uninstrument()  # again: nothing
    """))


def test_bpf_and_tls_read_python_threads(run_otel):
    run_otel(f"""
        with OtelReader.start() as reader:
            tld.attach(reader.map_path)
            size = tld.otel.record_size()
            tld.otel.publish_process_context({{"service.name": "py-test", "threads": 6, "sampled": True, "ratio": 0.5}})
            n = 6
            phase = threading.Barrier(n + 1)
            tids = {{}}
            def want(i, nested):
                trace = bytes([0x50 + i] * 16)
                span = bytes([(0x20 if nested else 0x10) + i] * 8)
                attrs = [("http.route", f"/nested/{{i}}" if nested else f"/route/{{i}}"), ("worker", f"w{{i}}")]
                return trace, span, attrs
            def worker(i):
                tids[i] = threading.get_native_id()
                trace, span, attrs = want(i, False)
                tld.otel.set(trace, span, 1, dict(attrs))
                phase.wait(); phase.wait()
                t2, s2, a2 = want(i, True)
                with tld.otel.scoped(t2, s2, 1, dict(a2)):
                    phase.wait(); phase.wait()
                phase.wait(); phase.wait()
                tld.otel.clear()
                phase.wait(); phase.wait()
            ts = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
            for t in ts: t.start()
            def check(state):
                ctx = reader.context()
                assert ctx["schema_version"] == "tld_uptr_v1", ctx
                assert ctx["attributes"]["service.name"] == "py-test" and ctx["attributes"]["threads"] == 6, ctx
                assert ctx["attributes"]["sampled"] is True and ctx["attributes"]["ratio"] == 0.5, ctx
                assert ctx["mapping"].startswith("/memfd:OTEL_CTX"), ctx
                key_map = ctx["key_map"]
                for i, tid in tids.items():
                    valid, b = reader.bpf(tid, size)
                    assert len(b) == size
                    symbols, rec = reader.tls(tid)
                    assert len(symbols) == 1 and symbols[0]["path"].endswith(".so"), symbols
                    assert "_tld" in symbols[0]["path"], symbols
                    if state is None:
                        assert not valid and b[24] == 0, (i, b.hex())
                        assert symbols[0]["pointer"] == 0 and rec is None, (i, symbols)
                        continue
                    trace, span, attrs = want(i, state)
                    assert valid, (i, b.hex())
                    assert decode(b, key_map) == (trace, span, 1, 1, attrs), (i, decode(b, key_map))
                    assert symbols[0]["pointer"] != 0 and rec == b[:len(rec)], (i, symbols, rec)
            phase.wait(); check(False); phase.wait()
            phase.wait(); check(True); phase.wait()
            phase.wait(); check(False); phase.wait()
            phase.wait(); check(None); phase.wait()
            for t in ts: t.join()
    """)


def test_instrument_read_by_bpf_on_threads(run_otel):
    pytest.importorskip("opentelemetry.sdk")
    run_otel(SDK + dedent("""
        with OtelReader.start() as reader:
            tld.attach(reader.map_path)
            tld.otel.instrument(attributes=["http.route"])
            size = tld.otel.record_size()
            n = 4
            phase = threading.Barrier(n + 1)
            tids, spans = {}, {}
            def worker(i):
                tids[i] = threading.get_native_id()
                with tracer.start_as_current_span(f"outer{i}", attributes={"http.route": f"/o/{i}"}) as outer:
                    spans[i] = (outer, [("http.route", f"/o/{i}")])
                    phase.wait(); phase.wait()
                    with tracer.start_as_current_span(f"inner{i}") as inner:
                        spans[i] = (inner, [])
                        phase.wait(); phase.wait()
                    spans[i] = (outer, [("http.route", f"/o/{i}")])
                    phase.wait(); phase.wait()
                spans[i] = None
                phase.wait(); phase.wait()
            ts = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
            for t in ts: t.start()
            def check():
                key_map = reader.context()["key_map"]
                seen = set()
                for i, tid in tids.items():
                    valid, b = reader.bpf(tid, size)
                    symbols, rec = reader.tls(tid)
                    if spans[i] is None:
                        assert not valid and b[24] == 0 and rec is None, (i, b.hex())
                        continue
                    span, attrs = spans[i]
                    trace_id, span_id, flags = ids(span)
                    assert valid and decode(b, key_map) == (trace_id, span_id, 1, flags, attrs), (i, decode(b, key_map))
                    assert rec == b[:len(rec)], (i, rec, b)
                    seen.add(span_id)
                assert len(seen) == len([s for s in spans.values() if s]), "every thread its own span"
            for _ in range(4):
                phase.wait(); check(); phase.wait()
            for t in ts: t.join()
    """))
