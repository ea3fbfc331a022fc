"""Checked by mypy (test_types.py), never run: what type checkers infer for
tld.otel, and that the ids' forms are all accepted."""

from typing import Optional

from typing_extensions import assert_type

import tld.otel

tld.otel.set(b"\x01" * 16, b"\x02" * 8)
tld.otel.set("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", 1, {"http.route": "/a"})
tld.otel.set(1, 2, flags=0, attributes=None)
assert_type(tld.otel.current(), Optional[tld.otel.Record])
rec = tld.otel.current()
if rec is not None:
    assert_type(rec.trace_id, bytes)
    assert_type(rec.flags, int)
    assert_type(rec.attributes, dict[str, str])
with tld.otel.scoped(1, 2, attributes={"db.system": "sqlite"}) as scope:
    assert_type(scope, tld.otel.Scope)
assert_type(tld.otel.attribute_key("http.route"), int)
assert_type(tld.otel.attribute_keys(), list[str])
assert_type(tld.otel.record_size(), int)
tld.otel.publish_process_context({"service.name": "x", "n": 1, "ok": True, "r": 0.5})
tld.otel.instrument(attributes=["http.route"])
tld.otel.instrument()
tld.otel.uninstrument()
assert_type(tld.otel.instrumented(), bool)
