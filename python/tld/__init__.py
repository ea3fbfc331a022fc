"""tld: task local data for Python.

Per-thread values ("hints": a priority, an in-critical-section flag, a
request id) that BPF programs (a sched_ext scheduler, a tracer) read in place
through the task-storage map ``tld_data_map``, without a system call per
update. Keys are names shared by every language in the process and by BPF.

    import tld

    tld.attach()                          # the pinned map BPF reads
    priority = tld.key("priority", "i")   # once per process: a C int
    priority.set(3)                       # any thread: its own value

Values belong to the calling OS thread: ``Key.set``/``Key.get`` act on the
thread that calls them, from any Python thread. ``with key.scoped(v):`` and
``with tld.scoped({k1: v1, k2: v2}):`` set values for a block and restore
the previous ones after it. Under asyncio (or a thread pool), a value set
across an ``await`` is seen by every other task the thread runs meanwhile:
scope synchronous sections only. The first access of a thread
allocates its block and registers it with the attached maps (the GIL is
released meanwhile); the block is released when the thread exits.

Security: whoever can write the pinned map can set any task's values. BPF
programs must treat them as untrusted hints.
"""

from tld._tld import (
    DEFAULT_DYNAMIC_RESERVE,
    MAX_NAME_BYTES,
    Key,
    RuntimeStats,
    Scope,
    TldError,
    __version__,
    attach,
    create_key,
    default_map_path,
    find_key,
    key,
    keys,
    refresh,
    runtime_stats,
    scoped,
    set_dynamic_reserve,
)

__all__ = [
    "DEFAULT_DYNAMIC_RESERVE",
    "MAX_NAME_BYTES",
    "Key",
    "RuntimeStats",
    "TldError",
    "__version__",
    "attach",
    "create_key",
    "default_map_path",
    "find_key",
    "key",
    "keys",
    "runtime_stats",
    "Scope",
    "scoped",
    "refresh",
    "set_dynamic_reserve",
]
