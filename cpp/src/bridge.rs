//! The one cxx bridge of the C++ binding. `include/tld/tld.hpp` is the public
//! API; the functions here are its plumbing (C++ namespace `tld::detail`).
//!
//! Errors do not cross as `Result<T>`, the cxx default: cxx turns an `Err`
//! into `rust::Error`, which carries the message but not the errno, and it
//! would throw through code built with `-fno-exceptions`, which the binding
//! supports (the `std::error_code&` overloads). So each call returns 0 or a
//! positive errno and leaves the message, which names the key or map and the
//! cause, in a per-thread slot (`last_failure`); tld.hpp turns both into a
//! `tld::Error` exception or a `std::error_code`.
//!
//! Panics never cross into C++: the core does not panic on any input, and
//! cxx aborts the process if a bridged function panics anyway.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tld::{Error, RawKey};

#[cxx::bridge(namespace = "tld")]
mod ffi {
    // ---- Shared types (public in C++: tld::KeyInfo, tld::RuntimeStats) ----

    /// Where a key's value lives: the upstream `tld_key_t.off` plus its size
    /// and metadata slot. `size == 0` marks "no key".
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    struct KeyInfo {
        /// Offset of the value in every thread's data area.
        offset: u16,
        /// Size of the value in bytes.
        size: u16,
        /// Index of the key's metadata slot.
        slot: u16,
    }

    /// A snapshot of the process's runtime, for tests and diagnostics.
    #[derive(Clone, Copy, Debug, Default)]
    struct RuntimeStats {
        /// Address of the metadata page: the same in every copy of the core in a process.
        meta_page: usize,
        /// Page size the runtime was laid out for.
        page_size: usize,
        /// Thread blocks allocated and not yet released, process-wide.
        live_blocks: usize,
        /// Maps attached.
        attached_maps: usize,
        /// Bytes of data every thread block holds (static keys + dynamic reserve).
        data_size: usize,
        /// Whether the data size is frozen (a thread block exists or existed).
        frozen: bool,
    }

    /// How `key` finds or creates a key.
    #[namespace = "tld::detail"]
    enum KeyMode {
        /// Strict creation: `EEXIST` if the name is taken.
        Create,
        /// The existing key of that name and size, else a new one.
        GetOrCreate,
        /// As `GetOrCreate`, as a static key (grows every block while none exists).
        GetOrCreateStatic,
        /// Look up only: `ENOENT` if absent; `size` 0 accepts any size.
        Find,
    }

    /// The calling thread's last error.
    #[namespace = "tld::detail"]
    struct Failure {
        /// Positive errno (0: no error recorded on this thread).
        code: i32,
        /// Names the key or map and the cause.
        message: String,
    }

    /// The core's layout constants that tld.hpp repeats as `constexpr`
    /// (for `static_assert`); a test compares the two.
    #[namespace = "tld::detail"]
    struct Limits {
        max_name_bytes: usize,
        value_align: usize,
    }

    // ---- Rust functions called from tld.hpp ----

    #[namespace = "tld::detail"]
    extern "Rust" {
        /// Finds or creates the key `name` of `size` bytes as `mode` says;
        /// writes `out` only on success. Returns 0 or a positive errno.
        fn key(mode: KeyMode, name: &[u8], size: usize, out: &mut KeyInfo) -> i32;

        /// Attaches the map pinned at `path` (empty: `$TLD_MAP_PATH` or the
        /// default path). Returns 0 or a positive errno.
        fn attach_path(path: &[u8]) -> i32;

        /// Attaches the map behind `fd` (the runtime keeps a duplicate).
        fn attach_fd(fd: i32) -> i32;

        /// Sets the dynamic reserve. Returns 0 or a positive errno.
        fn set_dynamic_reserve(bytes: usize) -> i32;

        /// The slow path of `Key<T>::get()`: the calling thread's data area,
        /// allocating and registering its block on first use and with maps
        /// attached since, written to `cache` on success. Returns 0 or a
        /// positive errno.
        /// Fills the `thread_local` cache at `cache` (a `tld::detail::DataCache`,
        /// the layout of the core's `DataCache`) and registers it with the
        /// runtime, which clears it; `data` gets the thread's data area.
        fn refresh_thread_cache(cache: usize, data: &mut usize) -> i32;

        /// Releases the calling thread's block now (upstream `tld_free`).
        fn free_thread_block();
        fn refresh() -> i32;

        /// Writes a snapshot of the runtime into `out`. Returns 0 or a positive errno.
        fn runtime_stats(out: &mut RuntimeStats) -> i32;

        /// The calling thread's last error (code 0 if none).
        fn last_failure() -> Failure;

        /// The core's constants behind `tld::max_name_length` and `tld::value_alignment`.
        fn limits() -> Limits;
    }
}

use ffi::{Failure, KeyInfo, KeyMode, Limits, RuntimeStats};

thread_local! {
    static LAST: RefCell<(i32, String)> = const { RefCell::new((0, String::new())) };
}

fn fail(e: Error) -> i32 {
    let errno = e.errno();
    LAST.with(|l| *l.borrow_mut() = (errno, e.to_string()));
    errno
}

fn status(r: tld::Result<()>) -> i32 {
    r.map_or_else(fail, |()| 0)
}

fn key(mode: KeyMode, name: &[u8], size: usize, out: &mut KeyInfo) -> i32 {
    let found = match mode {
        KeyMode::Create => RawKey::create(name, size),
        KeyMode::GetOrCreate => RawKey::get_or_create(name, size),
        KeyMode::GetOrCreateStatic => RawKey::get_or_create_static(name, size),
        KeyMode::Find => RawKey::find(name).and_then(|k| {
            if size != 0 && k.size() != size {
                return Err(Error::SizeMismatch {
                    name: String::from_utf8_lossy(name).into_owned(),
                    existing: k.size(),
                    requested: size,
                });
            }
            Ok(k)
        }),
        // cxx enums are open on the C++ side: an unknown mode is a caller bug, not a panic.
        _ => Err(Error::InvalidName {
            name: String::from_utf8_lossy(name).into_owned(),
            reason: "unknown key mode from C++",
        }),
    };
    match found {
        Ok(k) => {
            *out = KeyInfo {
                offset: k.offset() as u16,
                size: k.size() as u16,
                slot: k.slot() as u16,
            };
            0
        }
        Err(e) => fail(e),
    }
}

fn attach_path(path: &[u8]) -> i32 {
    if path.is_empty() {
        return status(tld::attach_default());
    }
    status(tld::attach_path(Path::new(OsStr::from_bytes(path))))
}

fn attach_fd(fd: i32) -> i32 {
    if fd < 0 {
        return fail(Error::Map {
            source: tld::MapSource::Fd(fd),
            problem: tld::MapProblem::NotAMap {
                kind: "negative file descriptor".into(),
            },
        });
    }
    // SAFETY: the core only duplicates the fd; the caller keeps it open for the call.
    status(tld::attach_fd(unsafe { BorrowedFd::borrow_raw(fd) }))
}

fn set_dynamic_reserve(bytes: usize) -> i32 {
    status(tld::set_dynamic_reserve(bytes))
}

fn refresh_thread_cache(cache: usize, data: &mut usize) -> i32 {
    // SAFETY: tld.hpp passes its constant-initialized, trivially destructible
    // thread_local cache of the calling thread.
    match unsafe { tld::fill_thread_cache(cache as *const tld::DataCache, None) } {
        Ok((p, _)) => {
            *data = p.as_ptr() as usize;
            0
        }
        Err(e) => fail(e),
    }
}

fn refresh() -> i32 {
    status(tld::refresh())
}

fn free_thread_block() {
    tld::free_thread_block()
}

fn runtime_stats(out: &mut RuntimeStats) -> i32 {
    match tld::runtime_stats() {
        Ok(s) => {
            *out = RuntimeStats {
                meta_page: s.meta_page,
                page_size: s.page_size,
                live_blocks: s.live_blocks,
                attached_maps: s.attached_maps,
                data_size: s.data_size,
                frozen: s.frozen,
            };
            0
        }
        Err(e) => fail(e),
    }
}

fn last_failure() -> Failure {
    LAST.with(|l| {
        let l = l.borrow();
        Failure {
            code: l.0,
            message: l.1.clone(),
        }
    })
}

fn limits() -> Limits {
    Limits {
        max_name_bytes: tld::abi::MAX_NAME_BYTES,
        value_align: tld::abi::VALUE_ALIGN,
    }
}
