"""Checked by mypy (test_types.py), never run: each line that ends in an
E-comment must be an error, so that the generic Key cannot silently
degrade to Any."""

import tld

priority = tld.key("priority", "i")
blob = tld.key("blob", 16)
priority.set("3")  # E: str is not int
blob.set(3)  # E: int is not bytes
name: str = priority.get()  # E: int is not str
priority.scoped(b"x")  # E: bytes is not int
