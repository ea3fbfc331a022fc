"""OpenTelemetry thread and process context, published through tld.

Profilers and BPF programs want to know which trace and span a thread
serves when they see it. This module writes the calling thread's *Thread-Local
Context Record* (OTEP 4947: trace id, span id, trace flags, attributes) into
its tld block under the key ``otel.thread_ctx_v1``, where BPF reads it
through ``tld_data_map``, and points the exported TLS symbol
``otel_thread_ctx_v1`` at it for OTEP 4947 readers. The attribute names and
the application's resource attributes go into the process context (OTEP
4719, an ``OTEL_CTX`` mapping). Every language in the process (Rust, C, C++,
Go, Python) shares the record key, the key map and the process context.

By hand::

    import tld, tld.otel

    tld.attach()
    tld.otel.publish_process_context({"service.name": "checkout"})
    with tld.otel.scoped("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7",
                         attributes={"http.route": "/users/:id"}):
        handle()            # readers see this span on this thread

Following OpenTelemetry's active span (``pip install task-local-data[otel]``)::

    tld.otel.instrument(attributes=["http.route"])
    with tracer.start_as_current_span("work"):
        ...                 # the record holds this span's ids

Records belong to OS threads: every function acts on the calling thread.
The record key is a static tld key of ``record_size()`` bytes (128 unless
``set_record_size`` or ``TLD_OTEL_RECORD_SIZE`` says otherwise): the first
call creates it, and it must come before any thread touches tld data (else
it must fit the dynamic reserve, which 128 bytes do not: ``TldError``
``E2BIG``). Call ``instrument()`` (or ``record_size()``) at start-up.

Errors: ``TypeError``/``ValueError`` for arguments of the wrong type or
form (an id of the wrong length, not hex); ``tld.TldError`` with ``errno``
for what the record or the key map refuse: ``EINVAL`` (one id zero and not
the other, flags without ids, a bad attribute name), ``E2BIG`` (a value over
255 bytes, attributes that do not fit the record: nothing is written, never
truncated), ``ENOSPC`` (256 attribute names), ``EBUSY`` (record size after
the key exists).
"""

from __future__ import annotations

import builtins
import logging
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Optional

from tld import TldError as _TldError
from tld import _otel
from tld._otel import (
    DEFAULT_RECORD_SIZE,
    MAX_ATTRIBUTE_KEYS,
    MAX_ATTRIBUTE_VALUE,
    MAX_RECORD_SIZE,
    MIN_RECORD_SIZE,
    RECORD_KEY,
    RECORD_SIZE_ENV,
    Scope,
    attribute_key,
    attribute_keys,
    clear,
    owns_live_symbol,
    publish_process_context,
    record_size,
    scoped,
    set,
    set_record_size,
    set_schema_version,
)

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.context.context import Context

__all__ = [
    "DEFAULT_RECORD_SIZE",
    "MAX_ATTRIBUTE_KEYS",
    "MAX_ATTRIBUTE_VALUE",
    "MAX_RECORD_SIZE",
    "MIN_RECORD_SIZE",
    "RECORD_KEY",
    "RECORD_SIZE_ENV",
    "Record",
    "Scope",
    "attribute_key",
    "attribute_keys",
    "clear",
    "current",
    "instrument",
    "instrumented",
    "owns_live_symbol",
    "publish_process_context",
    "record_size",
    "scoped",
    "set",
    "set_record_size",
    "set_schema_version",
    "uninstrument",
]

_log = logging.getLogger("tld.otel")


class Record(NamedTuple):
    """The calling thread's record as readers see it (``current()``)."""

    trace_id: bytes
    """W3C trace id, 16 bytes (``trace_id.hex()`` is the usual form)."""
    span_id: bytes
    """W3C span id, 8 bytes."""
    flags: int
    """W3C trace flags (bit 0: sampled)."""
    attributes: dict[str, str]
    """Attributes by name (the last of a repeated name), values as UTF-8."""


def current() -> Optional[Record]:
    """The calling thread's record when it is valid (readers use it), else
    ``None`` (never set, or cleared). Attribute names are resolved through
    the process's key map."""
    raw = _otel.current()
    if raw is None:
        return None
    trace_id, span_id, flags, attrs = raw
    return Record(trace_id, span_id, flags, dict(attrs))


# --- instrument(): following OpenTelemetry's active span ---------------------

_lock = threading.Lock()
_hook: Optional[_Hook] = None


def _import_otel() -> Any:
    try:
        import opentelemetry.context as context_api
        import opentelemetry.trace as trace_api
    except ImportError as e:
        raise ImportError(
            "tld.otel.instrument() needs the OpenTelemetry API: pip install 'task-local-data[otel]' "
            f"(or opentelemetry-api) ({e})"
        ) from e
    return context_api, trace_api


class _Hook:
    """Wraps OpenTelemetry's runtime context: every ``attach`` and
    ``detach`` goes to the wrapped one, then the calling thread's record is
    rewritten from the context now current."""

    def __init__(self, inner: Any, trace_api: Any, attributes: Sequence[str]) -> None:
        self.inner = inner
        self.enabled = True
        self.attributes: tuple[str, ...] = tuple(attributes)
        self._get_current_span = trace_api.get_current_span
        # Where set_span_in_context puts the span: reading it straight from
        # the Context (a dict) saves get_current_span's calls per activation.
        try:
            from opentelemetry.trace.propagation import _SPAN_KEY

            self._span_key: Optional[str] = _SPAN_KEY
        except ImportError:  # pragma: no cover - an API without it
            self._span_key = None
        self._warned: builtins.set[int] = builtins.set()

    # _RuntimeContext's interface.
    def attach(self, context: Context) -> Token[Context]:
        token: Token[Context] = self.inner.attach(context)
        if self.enabled:
            self.publish(context)
        return token

    def detach(self, token: Token[Context]) -> None:
        self.inner.detach(token)
        if self.enabled:
            self.publish(self.inner.get_current())

    def get_current(self) -> Context:
        return self.inner.get_current()  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def publish(self, context: Any) -> None:
        """Makes the calling thread's record say what ``context``'s span is."""
        try:
            if self._span_key is not None:
                span = context.get(self._span_key)
            else:
                span = self._get_current_span(context)
            ctx = None if span is None else span.get_span_context()
            if ctx is None or not (ctx.trace_id and ctx.span_id):  # no span, or an invalid one
                clear()
                return
            trace_id, span_id, flags = ctx.trace_id, ctx.span_id, ctx.trace_flags
            attrs = None
            if self.attributes:
                span_attrs = getattr(span, "attributes", None)
                if span_attrs:
                    attrs = {n: str(v) for n in self.attributes if (v := span_attrs.get(n)) is not None}
            try:
                set(trace_id, span_id, flags, attrs)
            except _TldError as e:
                if not attrs:
                    raise
                # The span's ids without its attributes rather than none, or
                # some: the record never holds a subset of them.
                self._warn(e, "published the span without its attributes")
                set(trace_id, span_id, flags)
        except (_TldError, ValueError, TypeError) as e:
            # Never break the application's context switch; readers see no
            # context rather than a stale one.
            self._warn(e, "cleared the thread's record")
            try:
                clear()
            except _TldError:
                pass

    def _warn(self, e: Exception, what: str) -> None:
        code = getattr(e, "errno", None) or -1
        if code not in self._warned:
            self._warned.add(code)
            _log.warning("tld.otel: publishing the active span failed (%s); %s", e, what)


def instrument(attributes: Iterable[str] = ()) -> None:
    """Keeps every thread's record in step with OpenTelemetry's active span.

    Mechanism: it wraps the OpenTelemetry API's runtime context
    (``opentelemetry.context._RUNTIME_CONTEXT``), through which every
    *activation* goes: ``context.attach``/``detach``, hence
    ``trace.use_span``, ``tracer.start_as_current_span`` and any
    instrumentation library. After each ``attach`` and each ``detach`` the
    calling thread's record is rewritten from the context then current: its
    span's ids and flags when the span context is valid, else cleared
    (``valid`` 0). Nesting therefore restores the parent's ids when a child
    is detached, and clears the record when the outermost span is, on every
    thread, whoever activates the span. A ``SpanProcessor`` would not do:
    it sees spans start and end, not become current (a span is started on
    one thread and activated on another, or never activated, or activated
    many times).

    ``attributes``: span attribute names (``"http.route"``) whose values
    are copied (``str()``) into the record at activation time, registered
    now in the key map. When they do not fit the record the span is
    published without them and a warning is logged once (``tld.otel``
    logger); a failure to publish never raises into the application: the
    record is cleared and a warning logged.

    Idempotent: calling it again only replaces the attribute list. The
    record key is created now, so ``TldError`` ``E2BIG`` (created too late)
    shows here. Raises ``ImportError`` when ``opentelemetry-api`` is missing.

    Not followed: context switches that bypass attach/detach, as asyncio's
    task switches and ``contextvars.Context.run``: a record set across an
    ``await`` is seen by the other tasks the thread runs meanwhile.
    """
    global _hook
    names = list(attributes)
    if isinstance(attributes, str):
        raise TypeError("instrument(attributes=...) takes a list of attribute names, not a str")
    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"attribute names must be str, not {type(n).__name__}")
    context_api, trace_api = _import_otel()
    record_size()
    for n in names:
        attribute_key(n)
    with _lock:
        if _hook is not None and context_api._RUNTIME_CONTEXT is _hook:
            _hook.attributes = tuple(names)
            _hook.enabled = True
        else:
            _hook = _Hook(context_api._RUNTIME_CONTEXT, trace_api, names)
            context_api._RUNTIME_CONTEXT = _hook
        hook = _hook
    hook.publish(context_api.get_current())


def uninstrument() -> None:
    """Stops following OpenTelemetry's active span and clears the calling
    thread's record. Other threads' records keep what they last held until
    they call ``set``/``clear``: call it where no span is active. Does
    nothing when not instrumented."""
    global _hook
    with _lock:
        hook = _hook
        if hook is None:
            return
        hook.enabled = False
        import opentelemetry.context as context_api  # instrument() imported it

        runtime: object = context_api._RUNTIME_CONTEXT
        if runtime is hook:
            context_api._RUNTIME_CONTEXT = hook.inner
        # Otherwise something wrapped it after us: the disabled hook stays
        # in that chain as a pass-through.
        _hook = None
    clear()


def instrumented() -> bool:
    """Whether ``instrument()`` is in effect."""
    return _hook is not None
