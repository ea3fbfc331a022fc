"""The tld extension module (Rust). Import it as ``tld``."""

import os
import types
from typing import Any, Final, Generic, Literal, TypeVar, Union, final, overload

from typing_extensions import Self, TypeAlias

__all__ = [
    "__version__",
    "DEFAULT_DYNAMIC_RESERVE",
    "Key",
    "MAX_NAME_BYTES",
    "RuntimeStats",
    "TldError",
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

__version__: Final[str]

DEFAULT_DYNAMIC_RESERVE: Final[int]
"""Bytes every thread block keeps for keys created after the first thread
touched its data, unless ``set_dynamic_reserve`` said otherwise (64)."""

MAX_NAME_BYTES: Final[int]
"""Longest key name, in UTF-8 bytes (61)."""

_SizeOrFormat: TypeAlias = Union[int, str, type]
"""What a key holds: a size in bytes (``int``, raw bytes), a ``struct``
format (``"i"``, ``"Q"``, ``"d"``, ``"?"``, ``"16s"``, ``"<IH"``...) or a
ctypes type (``ctypes.c_int``, a ``Structure``, ``c_char * 16``...)."""

_T = TypeVar("_T")
_C = TypeVar("_C")

_IntFormat: TypeAlias = Literal[
    "b", "B", "h", "H", "i", "I", "l", "L", "q", "Q", "@b", "@B", "@h", "@H", "@i",
    "@I", "@l", "@L", "@q", "@Q", "=b", "=B", "=h", "=H", "=i", "=I", "=l", "=L", "=q",
    "=Q", "<b", "<B", "<h", "<H", "<i", "<I", "<l", "<L", "<q", "<Q", ">b", ">B", ">h",
    ">H", ">i", ">I", ">l", ">L", ">q", ">Q", "!b", "!B", "!h", "!H", "!i", "!I", "!l",
    "!L", "!q", "!Q", "n", "N", "@n", "@N",
]
"""``struct`` formats of one integer: ``Key[int]``."""

_FloatFormat: TypeAlias = Literal[
    "e", "f", "d", "@e", "@f", "@d", "=e", "=f", "=d", "<e", "<f", "<d", ">e", ">f",
    ">d", "!e", "!f", "!d",
]
"""``struct`` formats of one float: ``Key[float]``."""

_BoolFormat: TypeAlias = Literal[
    "?", "@?", "=?", "<?", ">?", "!?",
]
"""``struct`` formats of one bool: ``Key[bool]``."""

_CharFormat: TypeAlias = Literal[
    "c", "@c", "=c", "<c", ">c", "!c",
]
"""``struct`` formats of one byte: ``Key[bytes]``."""

class TldError(OSError):
    """An error of the tld runtime.

    ``errno`` says what failed: ``EEXIST`` (the name exists, or exists with
    another size), ``E2BIG`` (the key does not fit the per-thread data area),
    ``ENOSPC`` (every metadata slot is taken), ``EINVAL`` (empty name, NUL in
    the name, size 0 or too large, not a tld map), ``ENAMETOOLONG`` (name
    longer than 61 bytes), ``ENOENT`` (no such key, nothing pinned at the
    path), ``EBUSY`` (the reserve cannot change now), ``EPERM``/``EACCES``
    (no permission for the map). ``strerror`` (and ``str()``) names the key
    or map and the cause.
    """

@final
class Key(Generic[_T]):
    """A key: a name, a size and an offset shared by every thread of the
    process, by BPF programs and by other languages (through the name).

    Generic in the value type its format gives: ``tld.key("p", "i")`` is a
    ``Key[int]``, ``"d"`` a ``Key[float]``, ``"?"`` a ``Key[bool]``, a size
    in bytes a ``Key[bytes]``, a ctypes type ``T`` a ``Key[T]``; other struct
    formats (``"16s"``, ``"<IH"``) give ``Key[Any]``. Annotate with
    ``tld.Key[int]``.

    Keys come from ``create_key``, ``key``, ``find_key`` and ``keys``. A key
    object may be shared between threads; ``get``, ``set``, ``view`` and
    ``address`` act on the value of the thread that calls them. The first
    access on a thread allocates its block and registers it with every
    attached map (system calls, with the GIL released); later accesses are a
    plain load or store.
    """

    @property
    def name(self) -> str:
        """The key's name."""
    @property
    def size(self) -> int:
        """The value's size in bytes."""
    @property
    def offset(self) -> int:
        """The value's offset in every thread's data area (8-byte aligned)."""
    @property
    def slot(self) -> int:
        """The key's metadata slot (creation order)."""
    @property
    def format(self) -> Union[str, type, None]:
        """The format given when this key object was made: a struct format
        string, a ctypes type, or None for raw bytes (a size, or a key from
        ``find_key``/``keys`` without a format)."""
    def get(self) -> _T:
        """The calling thread's value, decoded with the key's format.

        ``int`` for integer formats, ``float`` for ``f``/``d``, ``bool`` for
        ``?``, ``bytes`` for ``c``, ``Ns`` and raw keys (all ``size`` bytes),
        a tuple for multi-value struct formats, a copy (a new ctypes object)
        for ctypes structures and arrays. A thread that never set the value
        reads zeros.
        """
    def set(self, value: _T) -> None:
        """Sets the calling thread's value.

        The value must fit the format: an integer in the range of its C type,
        a float, a bool (or 0/1), bytes-like of at most ``size`` bytes for
        ``Ns`` and raw keys (zero-padded) and of exactly 1 byte for ``c``, a
        tuple for multi-value formats, an instance of the ctypes type (or
        exactly ``size`` bytes). Anything else raises ``ValueError`` (out of
        range, too long) or ``TypeError`` (wrong type) and leaves the stored
        value unchanged: values are never truncated.

        Raises ``TldError`` if this thread's block cannot be allocated or
        registered with an attached map.
        """
    @classmethod
    def __class_getitem__(cls, item: Any) -> types.GenericAlias:
        """``Key[int]`` at run time (annotations): a ``types.GenericAlias``."""
    def scoped(self, value: _T) -> Scope:
        """A context manager that sets the calling thread's value on entry
        and restores the previous value on exit, exceptions included::

            with priority.scoped(3):
                handle(request)      # BPF sees 3 for this thread
            # the previous priority again

        Nestable; the value is checked on entry, as ``set`` does. Values
        belong to OS threads: under asyncio, wrap synchronous sections only
        (no ``await`` inside), or other tasks running on the thread meanwhile
        are seen with this value. See ``tld.scoped`` for several keys.
        """
    def view(self) -> memoryview:
        """A writable memoryview (format ``"B"``, ``size`` bytes) of the
        calling thread's value, e.g. ``key.view().cast("i")[0] = 3``.

        It points into the thread's block: use it on this thread only. When
        the thread exits, the binding releases the memoryview it returned
        before the block goes back to the pool (to be reused by other
        threads): using it afterwards raises ``ValueError``, never writes
        another thread's value. Views derived from it (``cast``, slices)
        are not released: drop them before the thread exits.
        """
    def address(self) -> int:
        """The address of the calling thread's value, for ctypes:
        ``ctypes.c_int.from_address(key.address()).value = 3``.

        Valid on this thread only, until it exits: afterwards the address
        belongs to the pool and may hold another thread's values. The binding
        keeps nothing that uses it; ctypes objects made from it are the
        caller's to drop.
        """

@final
class Scope:
    """What ``Key.scoped`` and ``tld.scoped`` return: a context manager that
    sets keys on entry and restores their previous values on exit.

    Entry saves each key's current value (as bytes: every format restores
    exactly), then sets the new ones; a value that does not fit raises
    ``ValueError``/``TypeError`` after putting back the keys already set.
    Exit restores the saved values, in reverse order, whether or not the
    block raised, and never suppresses its exception. A scope may be entered
    again and nested; each entry restores what it saved. Exiting on another
    thread than the one that entered raises ``RuntimeError`` (the values are
    per thread) and restores nothing.
    """

    def __enter__(self) -> Self: ...
    def __exit__(self, *exc_info: object) -> None: ...

def scoped(values: dict[Key[Any], Any]) -> Scope:
    """One scope over several keys of the calling thread::

        with tld.scoped({priority: 3, request: 42}):
            handle(request)

    ``values`` maps ``Key`` objects to their values for the block; see
    ``Scope``. Raises ``TypeError`` unless ``values`` is a dict of keys.
    """

@final
class RuntimeStats:
    """A snapshot of the process's tld runtime (see ``runtime_stats``)."""

    @property
    def meta_page(self) -> int:
        """Address of the metadata page, the same for every copy of tld in the process."""
    @property
    def page_size(self) -> int:
        """The page size the runtime was laid out for."""
    @property
    def live_blocks(self) -> int:
        """Thread blocks allocated and not yet released."""
    @property
    def attached_maps(self) -> int:
        """Maps attached."""
    @property
    def data_size(self) -> int:
        """Bytes of data every thread block holds (keys made before the first
        access, plus the dynamic reserve)."""
    @property
    def frozen(self) -> bool:
        """Whether the data size is frozen (a thread block exists or existed)."""

def attach(
    path: Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]", None] = None,
    *,
    fd: Union[int, None] = None,
) -> None:
    """Attaches a ``tld_data_map`` that BPF programs read.

    With no argument: the map pinned at ``$TLD_MAP_PATH``, else
    ``/sys/fs/bpf/tld/tld_data_map`` (see ``default_map_path``; ``tld pin``
    creates it). ``path``: a pinned map. ``fd``: an open map fd (the runtime
    keeps its own duplicate). Every thread registers with the map on its next
    data access. Attaching the same map again does nothing.

    Raises ``TldError`` naming the path and the cause (``ENOENT`` nothing
    pinned there, ``EINVAL`` not a tld map, ``EPERM``/``EACCES`` no
    permission), ``TypeError`` when both ``path`` and ``fd`` are given.
    """

def refresh() -> None:
    """Checks every map attached by path against its pin now, and follows a
    replaced pin: the new map is attached, every live thread registered with
    it, the old map detached. A watcher thread does the same within about a
    second unless ``TLD_PIN_WATCH=0`` was set when the first map was
    attached. Raises ``TldError`` as ``attach``.
    """

@overload
def create_key(name: str, size_or_format: _IntFormat) -> Key[int]: ...
@overload
def create_key(name: str, size_or_format: _FloatFormat) -> Key[float]: ...
@overload
def create_key(name: str, size_or_format: _BoolFormat) -> Key[bool]: ...
@overload
def create_key(name: str, size_or_format: Union[int, _CharFormat]) -> Key[bytes]: ...
@overload
def create_key(name: str, size_or_format: type[_C]) -> Key[_C]: ...
@overload
def create_key(name: str, size_or_format: str) -> Key[Any]: ...
@overload
def create_key(name: str, size_or_format: _SizeOrFormat) -> Key[Any]:
    """Creates a key, strictly (like upstream ``tld_create_key``).

    ``name``: 1 to 61 UTF-8 bytes, no NUL. ``size_or_format``: a size in
    bytes (a raw bytes key), a ``struct`` format or a ctypes type.

    Keys created before any thread touched its data are laid out in every
    thread block (like C's ``TLD_DEFINE_KEY``); later ones come out of the
    dynamic reserve (``set_dynamic_reserve``). A failed call changes nothing
    already published.

    Raises ``TldError`` with ``EEXIST`` (the name exists), ``E2BIG`` (does not
    fit), ``ENOSPC`` (no slot left), ``EINVAL`` (empty name, NUL in the name,
    size 0 or larger than a block), ``ENAMETOOLONG`` (name over 61 bytes);
    ``TypeError`` for a name that is not a str or a format of the wrong type;
    ``ValueError`` for an invalid format (a bad struct format, a negative
    size, pointers, a format holding no value).
    """

@overload
def key(name: str, size_or_format: _IntFormat) -> Key[int]: ...
@overload
def key(name: str, size_or_format: _FloatFormat) -> Key[float]: ...
@overload
def key(name: str, size_or_format: _BoolFormat) -> Key[bool]: ...
@overload
def key(name: str, size_or_format: Union[int, _CharFormat]) -> Key[bytes]: ...
@overload
def key(name: str, size_or_format: type[_C]) -> Key[_C]: ...
@overload
def key(name: str, size_or_format: str) -> Key[Any]: ...
@overload
def key(name: str, size_or_format: _SizeOrFormat) -> Key[Any]:
    """Returns the key of that name, creating it if needed (get-or-create).

    This is how two libraries or two languages share a value: both ask for
    the same name and size. An existing key of another size raises
    ``TldError`` (``EEXIST``); the other errors are those of ``create_key``.
    Only the size is shared: the format is this key object's own.
    """

@overload
def find_key(name: str, size_or_format: None = None) -> Key[bytes]: ...
@overload
def find_key(name: str, size_or_format: _IntFormat) -> Key[int]: ...
@overload
def find_key(name: str, size_or_format: _FloatFormat) -> Key[float]: ...
@overload
def find_key(name: str, size_or_format: _BoolFormat) -> Key[bool]: ...
@overload
def find_key(name: str, size_or_format: Union[int, _CharFormat]) -> Key[bytes]: ...
@overload
def find_key(name: str, size_or_format: type[_C]) -> Key[_C]: ...
@overload
def find_key(name: str, size_or_format: str) -> Key[Any]: ...
@overload
def find_key(name: str, size_or_format: Union[_SizeOrFormat, None] = None) -> Key[Any]:
    """Finds an existing key (``TldError`` ``ENOENT`` if there is none).

    Without a format the key holds raw bytes; with one, its size must be the
    key's (else ``TldError`` ``EEXIST``).
    """

def keys() -> list[Key[bytes]]:
    """Every published key of the process, in slot order, as raw bytes keys."""

def set_dynamic_reserve(nbytes: int) -> None:
    """Sets the bytes every thread block keeps for keys created after the
    first thread touched its data (default ``DEFAULT_DYNAMIC_RESERVE``).

    It may grow until the first thread touches its data, and shrink only
    while no key exists: otherwise ``TldError`` ``EBUSY`` (``EINVAL`` if too
    large).
    """

def default_map_path() -> str:
    """The path ``attach()`` uses: ``$TLD_MAP_PATH``, else ``/sys/fs/bpf/tld/tld_data_map``."""

def runtime_stats() -> RuntimeStats:
    """Creates or joins the process's tld runtime and describes it."""

@final
class _Baseline:
    """A pyo3 method call that does nothing: the floor the benchmark compares
    ``Key.get``/``Key.set`` with. Not part of the API."""

    def __new__(cls) -> "_Baseline": ...
    def noop(self, value: Any) -> None: ...
    def noop0(self) -> None: ...
