"""Checked by mypy (test_types.py), never run: what type checkers infer for
keys made from each kind of format, and what they refuse."""

import ctypes
from typing import Any

from typing_extensions import assert_type

import tld

priority = tld.key("priority", "i")
assert_type(priority, tld.Key[int])
assert_type(priority.get(), int)
request = tld.create_key("request_id", "<Q")
assert_type(request, tld.Key[int])
assert_type(tld.key("ratio", "d").get(), float)
assert_type(tld.key("flag", "?").get(), bool)
assert_type(tld.key("blob", 16), tld.Key[bytes])
assert_type(tld.key("c", "c").get(), bytes)
assert_type(tld.key("ct", ctypes.c_uint32), tld.Key[ctypes.c_uint32])
assert_type(tld.key("pair", "<IH"), tld.Key[Any])
assert_type(tld.find_key("priority"), tld.Key[bytes])
assert_type(tld.find_key("priority", "i"), tld.Key[int])
assert_type(tld.keys(), list[tld.Key[bytes]])

priority.set(3)
tld.key("ratio", "d").set(1)  # an int is a float to type checkers, and to set()
with priority.scoped(3), tld.scoped({priority: 4, request: 42}) as scope:
    assert_type(scope, tld.Scope)


def annotated(k: tld.Key[int]) -> int:
    return k.get() + 1


annotated(priority)
