//! Errors: an errno for the C boundary and a sentence naming the cause.

use std::fmt;

/// A failed call: the errno the C ABI returns (as `-errno`) and a message
/// naming the record, attribute or mapping involved and why it failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    errno: i32,
    message: String,
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error with `errno` and `message`, for bindings that check their
    /// own arguments before calling in.
    pub fn new(errno: i32, message: impl Into<String>) -> Self {
        Error { errno, message: message.into() }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Error::new(libc::EINVAL, message)
    }

    pub(crate) fn too_big(message: impl Into<String>) -> Self {
        Error::new(libc::E2BIG, message)
    }

    /// An OS call that failed, with the errno it set.
    pub(crate) fn os(what: &str) -> Self {
        let e = std::io::Error::last_os_error();
        Error::new(e.raw_os_error().unwrap_or(libc::EIO), format!("{what}: {e}"))
    }

    /// The errno: `EINVAL`, `E2BIG`, `ENOSPC`, `EBUSY`, `EEXIST`, `EPROTO`,
    /// `EDEADLK`, or what the core or the OS reported (DESIGN §10.8).
    pub fn errno(&self) -> i32 {
        self.errno
    }

    /// The message alone.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<tld::Error> for Error {
    fn from(e: tld::Error) -> Self {
        Error::new(e.errno(), e.to_string())
    }
}
