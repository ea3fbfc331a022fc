//! Errors. Every variant maps to one errno (the C ABI returns `-errno`) and
//! its message names the key or map and the cause.

use std::fmt;
use std::path::PathBuf;

/// Where a map was attached from, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapSource {
    Path(PathBuf),
    Fd(i32),
    /// An attached map known by its kernel id only.
    Id(u32),
}

impl fmt::Display for MapSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapSource::Path(p) => write!(f, "{}", p.display()),
            MapSource::Fd(fd) => write!(f, "map fd {fd}"),
            MapSource::Id(id) => write!(f, "map id {id}"),
        }
    }
}

/// Why a map could not be attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapProblem {
    /// Nothing exists at the path (`ENOENT`).
    NotFound,
    /// The file is not on a BPF filesystem, so it cannot be a pinned map (`EINVAL`).
    NotBpffs,
    /// A pinned BPF object that is not a map, or an fd that is not a BPF map (`EINVAL`).
    NotAMap { kind: String },
    /// A map of another type (`EINVAL`).
    WrongType { found: u32 },
    /// A task-storage map whose key or value size is not tld's (`EINVAL`).
    WrongLayout { key_size: u32, value_size: u32 },
    /// The map has no BTF, so the kernel cannot know its UPTR fields (`EINVAL`).
    NoBtf,
    /// Opening or updating the map needs a permission the process lacks (`EPERM`/`EACCES`).
    Permission { errno: i32 },
    /// The fd, or the map itself, is read-only for user space (`EACCES`).
    ReadOnly { why: &'static str },
    /// A 16-byte-value map while more keys exist than its readers can count (`EOVERFLOW`).
    TooManyKeysFor16 { cnt: u16 },
    /// A thread's small block cannot be registered with a 16-byte-value map (`EOPNOTSUPP`).
    SmallBlockFor16 { tid: i32 },
    /// More maps than the runtime holds (`ENOSPC`).
    TooManyMaps { max: usize },
    /// Another system error.
    Os { op: &'static str, errno: i32 },
}

/// An error from the tld runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The name is empty or contains a NUL byte (`EINVAL`).
    InvalidName { name: String, reason: &'static str },
    /// The name is longer than 61 bytes (`ENAMETOOLONG`).
    NameTooLong { name: String, len: usize },
    /// Size 0 (`EINVAL`).
    InvalidSize { name: String, size: usize },
    /// A key of that name exists (`EEXIST`), from `create_key`.
    Exists { name: String },
    /// A key of that name exists with another size (`EEXIST`), from `key`/`find_key`.
    SizeMismatch { name: String, existing: usize, requested: usize },
    /// The key does not fit what is left of the per-thread data area (`E2BIG`).
    TooBig { name: String, size: usize, available: usize },
    /// The key is larger than any thread's data area can ever be (`E2BIG`).
    NeverFits { name: String, size: usize, max: usize },
    /// Every metadata slot is taken (`ENOSPC`).
    NoSpace { name: String, max: usize },
    /// No key of that name (`ENOENT`).
    NotFound { name: String },
    /// A key's type is aligned more strictly than 8 bytes (`EINVAL`).
    Alignment { name: String, align: usize },
    /// The dynamic reserve cannot change now (`EBUSY`) or is too large (`EINVAL`).
    Reserve { requested: usize, reason: String },
    /// A map could not be attached or a thread not registered with it.
    Map { source: MapSource, problem: MapProblem },
    /// Another copy of tld in this process runs an incompatible runtime (`EPROTO`).
    IncompatibleRuntime { found: u32, ours: u32 },
    /// A call from a signal handler that interrupted a tld call on the same
    /// thread, which waiting would deadlock (`EDEADLK`).
    Reentered { what: &'static str },
    /// A system call failed (its errno).
    Os { op: &'static str, errno: i32 },
}

impl Error {
    /// The positive errno this error maps to; the C ABI returns its negation.
    pub fn errno(&self) -> i32 {
        use libc::*;
        match self {
            Error::InvalidName { .. } | Error::InvalidSize { .. } | Error::Alignment { .. } => EINVAL,
            Error::NameTooLong { .. } => ENAMETOOLONG,
            Error::Exists { .. } | Error::SizeMismatch { .. } => EEXIST,
            Error::TooBig { .. } | Error::NeverFits { .. } => E2BIG,
            Error::NoSpace { .. } => ENOSPC,
            Error::NotFound { .. } => ENOENT,
            Error::Reserve { reason, .. } if reason.starts_with("too large") => EINVAL,
            Error::Reserve { .. } => EBUSY,
            Error::Map { problem, .. } => match problem {
                MapProblem::NotFound => ENOENT,
                MapProblem::NotBpffs
                | MapProblem::NotAMap { .. }
                | MapProblem::WrongType { .. }
                | MapProblem::WrongLayout { .. }
                | MapProblem::NoBtf => EINVAL,
                MapProblem::Permission { errno } => *errno,
                MapProblem::ReadOnly { .. } => EACCES,
                MapProblem::TooManyKeysFor16 { .. } => EOVERFLOW,
                MapProblem::SmallBlockFor16 { .. } => EOPNOTSUPP,
                MapProblem::TooManyMaps { .. } => ENOSPC,
                MapProblem::Os { errno, .. } => *errno,
            },
            Error::IncompatibleRuntime { .. } => EPROTO,
            Error::Reentered { .. } => EDEADLK,
            Error::Os { errno, .. } => *errno,
        }
    }
}

fn strerror(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno).to_string()
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidName { name, reason } => write!(f, "invalid key name {name:?}: {reason}"),
            Error::NameTooLong { name, len } => {
                write!(f, "key name {name:?} is {len} bytes; at most 61 bytes are allowed")
            }
            Error::InvalidSize { name, size } => write!(f, "key {name:?}: invalid size {size} (at least 1 byte)"),
            Error::NeverFits { name, size, max } => write!(
                f,
                "key {name:?} of {size} bytes can never fit: a thread's data area holds at most {max} bytes"
            ),
            Error::Exists { name } => write!(f, "key {name:?} already exists"),
            Error::SizeMismatch { name, existing, requested } => write!(
                f,
                "key {name:?} exists with size {existing}, not the requested {requested}"
            ),
            Error::TooBig { name, size, available } => write!(
                f,
                "key {name:?} of {size} bytes does not fit: {available} bytes left in the per-thread data area"
            ),
            Error::NoSpace { name, max } => {
                write!(f, "cannot create key {name:?}: all {max} metadata slots are taken")
            }
            Error::NotFound { name } => write!(f, "no key named {name:?}"),
            Error::Alignment { name, align } => {
                write!(f, "key {name:?}: values are 8-byte aligned, the type needs {align}")
            }
            Error::Reserve { requested, reason } => {
                write!(f, "cannot set the dynamic reserve to {requested} bytes: {reason}")
            }
            Error::Map { source, problem } => {
                write!(f, "{source}: ")?;
                match problem {
                    MapProblem::NotFound => write!(f, "no such file (is the map pinned? see `tld pin`)"),
                    MapProblem::NotBpffs => write!(f, "not on a BPF filesystem, so not a pinned map"),
                    MapProblem::NotAMap { kind } => write!(f, "not a BPF map ({kind})"),
                    MapProblem::WrongType { found } => write!(
                        f,
                        "map type {found} is not BPF_MAP_TYPE_TASK_STORAGE (29)"
                    ),
                    MapProblem::WrongLayout { key_size, value_size } => write!(
                        f,
                        "task-storage map with key size {key_size} and value size {value_size}; tld needs key 4 and value 24 or 16"
                    ),
                    MapProblem::NoBtf => write!(f, "the map has no BTF, so the kernel cannot see its UPTR fields"),
                    MapProblem::Permission { errno } => write!(
                        f,
                        "permission denied ({}); needs root, CAP_BPF, or write access to the pinned map",
                        strerror(*errno)
                    ),
                    MapProblem::TooManyMaps { max } => write!(f, "at most {max} maps can be attached"),
                    MapProblem::ReadOnly { why } => write!(
                        f,
                        "{why}: tld must write the map to register threads (open it read-write)"
                    ),
                    MapProblem::TooManyKeysFor16 { cnt } => write!(
                        f,
                        "this process has {cnt} keys; readers of a 16-byte-value map count at most 255"
                    ),
                    MapProblem::SmallBlockFor16 { tid } => write!(
                        f,
                        "thread {tid}'s block was allocated before a 16-byte-value map was attached and shares \
                         its page; it cannot be registered with it (attach such maps before threads first touch their data)"
                    ),
                    MapProblem::Os { op, errno } => write!(f, "{op} failed: {}", strerror(*errno)),
                }
            }
            Error::IncompatibleRuntime { found, ours } => write!(
                f,
                "this process already runs tld runtime ABI {}.{}, incompatible with this copy's {}.{}",
                found >> 16,
                found & 0xffff,
                ours >> 16,
                ours & 0xffff
            ),
            Error::Reentered { what } => write!(
                f,
                "called from a signal handler that interrupted tld on this thread ({what} is in progress)"
            ),
            Error::Os { op, errno } => write!(f, "{op} failed: {}", strerror(*errno)),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::new(std::io::Error::from_raw_os_error(e.errno()).kind(), e)
    }
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
