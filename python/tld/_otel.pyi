"""The native half of ``tld.otel`` (Rust, over tld_otel). Import ``tld.otel``."""

import types
from typing import Final, Optional, Union, final

from typing_extensions import Self, TypeAlias

__all__ = [
    "DEFAULT_RECORD_SIZE",
    "MAX_ATTRIBUTE_KEYS",
    "MAX_ATTRIBUTE_VALUE",
    "MAX_RECORD_SIZE",
    "MIN_RECORD_SIZE",
    "RECORD_KEY",
    "RECORD_SIZE_ENV",
    "Scope",
    "attribute_key",
    "attribute_keys",
    "clear",
    "current",
    "owns_live_symbol",
    "publish_process_context",
    "record_size",
    "scoped",
    "set",
    "set_record_size",
    "set_schema_version",
]

_Id: TypeAlias = Union[bytes, bytearray, str, int]
"""A W3C id: bytes of its length (16 for a trace id, 8 for a span id), a str
of twice as many hex digits, or an int (big-endian, as OpenTelemetry's API
holds ``SpanContext.trace_id``/``span_id``)."""

_ResourceValue: TypeAlias = Union[str, bool, int, float]

RECORD_KEY: Final[str]
"""The tld key holding each thread's record: ``"otel.thread_ctx_v1"``."""
DEFAULT_RECORD_SIZE: Final[int]
"""Record size unless set otherwise: 128 bytes (100 of attributes)."""
MIN_RECORD_SIZE: Final[int]
"""Smallest record size: the 28-byte header."""
MAX_RECORD_SIZE: Final[int]
"""Largest record size: 640 bytes."""
MAX_ATTRIBUTE_VALUE: Final[int]
"""Longest attribute value in a record: 255 bytes of UTF-8."""
MAX_ATTRIBUTE_KEYS: Final[int]
"""Attribute names a process can register: 256."""
RECORD_SIZE_ENV: Final[str]
"""The environment variable giving the record size: ``TLD_OTEL_RECORD_SIZE``."""

def set(
    trace_id: _Id, span_id: _Id, flags: int = 1, attributes: Optional[dict[str, str]] = None
) -> None:
    """Publishes the calling thread's context: readers (BPF through
    ``tld_data_map``, OTEP 4947 readers through ``otel_thread_ctx_v1``) see
    it until the next ``set`` or ``clear`` on this thread.

    ``attributes`` maps names (registered in the key map on first use) to
    values. Raises ``TypeError``/``ValueError`` for ids, flags or attributes
    of the wrong type or form, ``TldError`` ``EINVAL`` for a span context
    OTEP 4947 forbids (one id all zero and not the other; flags without
    ids) or a bad name, ``E2BIG`` when a value is over 255 bytes or the
    attributes do not fit the record, ``ENOSPC`` when the key map is full;
    on error the record is as it was."""

def clear() -> None:
    """Marks the calling thread's record invalid (``valid`` 0) and sets its
    ``otel_thread_ctx_v1`` to NULL: readers see no context."""

def current() -> Optional[tuple[bytes, bytes, int, list[tuple[str, str]]]]:
    """The calling thread's record when valid: (trace id, span id, flags,
    attributes by name); else ``None``. ``tld.otel.current()`` wraps it."""

@final
class Scope:
    """Publishes a span context on entry and puts the calling thread's
    previous record back on exit (valid or not, exceptions included).
    Reusable and nestable; each entry restores what it saw. Exiting on
    another thread than the entry's raises ``RuntimeError``."""

    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc_value: Optional[BaseException],
        traceback: Optional[types.TracebackType],
        /,
    ) -> None: ...

def scoped(
    trace_id: _Id, span_id: _Id, flags: int = 1, attributes: Optional[dict[str, str]] = None
) -> Scope:
    """A ``Scope`` for this span context (``with tld.otel.scoped(...):``).
    The ids and attributes' types are checked now; the record's rules (as
    ``set``) on entry."""

def set_record_size(n: int) -> None:
    """Sets the size in bytes of every thread's record (28 to 640), before
    the record key exists (the first ``set``, ``current``, ``instrument``,
    ``record_size`` in any language). ``TldError`` ``EINVAL`` outside the
    range, ``EBUSY`` once the key exists with another size."""

def record_size() -> int:
    """The record size, creating the record key (a static tld key) if it
    does not exist yet: call it at start-up, before threads touch tld data.
    ``TldError`` ``E2BIG`` when created too late to get room of its own."""

def attribute_key(name: str) -> int:
    """Registers ``name`` in the process's attribute key map (or finds it:
    the map is shared and append-only) and returns its one-byte index.
    ``TldError`` ``EINVAL`` for an empty name, one over 127 bytes or with
    NUL; ``ENOSPC`` past 256 names."""

def attribute_keys() -> list[str]:
    """The key map: registered attribute names, by index."""

def publish_process_context(attributes: dict[str, _ResourceValue]) -> None:
    """Publishes the OTEP 4719 process context (an ``OTEL_CTX`` mapping)
    with these resource attributes (``service.name``...), replacing earlier
    ones; tld adds ``threadlocal.schema_version`` and
    ``threadlocal.attribute_key_map``. ``TldError`` ``EINVAL`` for an empty
    or repeated key or one in ``threadlocal.``, ``E2BIG`` past 16 KiB
    encoded; ``ValueError`` for an int outside int64."""

def set_schema_version(version: str) -> None:
    """Sets ``threadlocal.schema_version`` (default ``"tld_uptr_v1"``) and
    republishes the process context."""

def owns_live_symbol() -> bool:
    """Whether this module's ``otel_thread_ctx_v1`` is the process's live
    TLS symbol (the one readers follow), for diagnostics."""
