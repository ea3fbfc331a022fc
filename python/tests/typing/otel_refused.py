"""Checked by mypy (test_types.py), never run: each line that ends in an
E-comment must be an error."""

import tld.otel

tld.otel.set(1.5, 2)  # E: a float is not an id
tld.otel.set(1, 2, attributes={"a": 3})  # E: attribute values are str
tld.otel.set(1, 2, "1")  # E: flags are an int
tld.otel.publish_process_context({"a": b"x"})  # E: bytes is not a resource value
rec = tld.otel.current()
rec.trace_id  # E: may be None
