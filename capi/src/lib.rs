//! The C ABI (`include/tld.h`). Prefix `tld_`, errors as `-errno`, names as
//! NUL-terminated byte strings. Source-compatible with the upstream
//! user-space task local data API, plus our additions.
//!
//! Every entry point may be called at any time (DESIGN §5.7): from
//! thread-exit destructors after this library's thread-locals are gone, from
//! signal handlers. Nothing here panics on any input or at any time (the
//! thread-locals have no destructors); were a bug to panic anyway, an
//! `extern "C"` function aborts rather than unwinding into C (Rust 1.81+,
//! the declared minimum).

#![allow(non_camel_case_types)]
#![deny(unsafe_op_in_unsafe_fn)]
// Each entry point's contract (valid NUL-terminated names, writable buffers) is in tld.h.
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, c_int, c_void, CStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tld_core::{Error, RawKey};

// OpenTelemetry thread and process context: include/tld_otel.h.
mod otel;

/// `tld_key_t`: the offset of a value in every thread's data area, or `-errno`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct tld_key_t {
    pub off: i16,
}

/// `tld_key_info_t`: what `tld_find_key_info` reports about a key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct tld_key_info_t {
    pub off: i16,
    pub size: u16,
    pub slot: u16,
}

/// Bytes of the last-error message kept per thread; longer messages end in "...".
const MESSAGE_CAP: usize = 1024;

/// A thread's last error message, in heap memory reached through a pthread
/// key of this copy (not a thread-local: libraries loaded with initial-exec
/// TLS, as Go's c-shared ones are, have little static TLS to spare). The
/// key's destructor frees it; a later error in a later destructor allocates
/// it again and the key's destructor runs again (POSIX iterates), so a C ABI
/// call works at any point of a thread's exit (DESIGN §5.7).
struct Message {
    len: usize,
    bytes: [u8; MESSAGE_CAP],
}

unsafe extern "C" fn free_message(p: *mut c_void) {
    unsafe { libc::free(p) };
}

/// This copy's pthread key for [`Message`]s (key + 1; 0 before the first use).
fn message_key() -> Option<libc::pthread_key_t> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static KEY: AtomicU32 = AtomicU32::new(0);
    let k = KEY.load(Ordering::Acquire);
    if k != 0 {
        return Some(k - 1);
    }
    let mut key: libc::pthread_key_t = 0;
    if unsafe { libc::pthread_key_create(&mut key, Some(free_message)) } != 0 {
        return None;
    }
    match KEY.compare_exchange(0, key + 1, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Some(key),
        Err(winner) => {
            unsafe { libc::pthread_key_delete(key) };
            Some(winner - 1)
        }
    }
}

fn set_message(text: &str) {
    let Some(key) = message_key() else { return };
    let mut m = unsafe { libc::pthread_getspecific(key) } as *mut Message;
    if m.is_null() {
        m = unsafe { libc::malloc(std::mem::size_of::<Message>()) } as *mut Message;
        if m.is_null() || unsafe { libc::pthread_setspecific(key, m as *const c_void) } != 0 {
            unsafe { libc::free(m.cast()) };
            return;
        }
    }
    let m = unsafe { &mut *m };
    let bytes = text.as_bytes();
    if bytes.len() <= MESSAGE_CAP {
        m.bytes[..bytes.len()].copy_from_slice(bytes);
        m.len = bytes.len();
    } else {
        let mut n = MESSAGE_CAP - 3;
        while !text.is_char_boundary(n) {
            n -= 1;
        }
        m.bytes[..n].copy_from_slice(&bytes[..n]);
        m.bytes[n..n + 3].copy_from_slice(b"...");
        m.len = n + 3;
    }
}

fn remember(e: &Error) -> c_int {
    set_message(&e.to_string());
    -e.errno()
}

fn key_result(r: tld_core::Result<RawKey>) -> tld_key_t {
    match r {
        Ok(k) => tld_key_t { off: k.offset() as i16 },
        Err(e) => tld_key_t { off: remember(&e) as i16 },
    }
}

/// The name as bytes; NULL is an invalid (empty) name.
unsafe fn name_bytes<'a>(name: *const c_char) -> &'a [u8] {
    if name.is_null() {
        b""
    } else {
        unsafe { CStr::from_ptr(name) }.to_bytes()
    }
}

fn int_result(r: tld_core::Result<()>) -> c_int {
    match r {
        Ok(()) => 0,
        Err(e) => remember(&e),
    }
}

/// Creates a key (strict). See tld.h.
#[no_mangle]
pub unsafe extern "C" fn tld_create_key(name: *const c_char, size: usize) -> tld_key_t {
    key_result(RawKey::create(unsafe { name_bytes(name) }, size))
}

/// Returns the key of that name and size, creating it if needed. See tld.h.
#[no_mangle]
pub unsafe extern "C" fn tld_key(name: *const c_char, size: usize) -> tld_key_t {
    key_result(RawKey::get_or_create(unsafe { name_bytes(name) }, size))
}

/// Creates a static key (used by `TLD_DEFINE_KEY`). See tld.h.
#[no_mangle]
pub unsafe extern "C" fn tld_create_static_key(name: *const c_char, size: usize) -> tld_key_t {
    key_result(RawKey::create_static(unsafe { name_bytes(name) }, size))
}

/// Finds a key by name. See tld.h.
#[no_mangle]
pub unsafe extern "C" fn tld_find_key(name: *const c_char) -> tld_key_t {
    key_result(RawKey::find(unsafe { name_bytes(name) }))
}

/// Finds a key by name and reports its offset, size and slot. See tld.h.
#[no_mangle]
pub unsafe extern "C" fn tld_find_key_info(name: *const c_char, info: *mut tld_key_info_t) -> c_int {
    match RawKey::find(unsafe { name_bytes(name) }) {
        Ok(k) => {
            if !info.is_null() {
                let out = tld_key_info_t { off: k.offset() as i16, size: k.size() as u16, slot: k.slot() as u16 };
                unsafe { info.write(out) };
            }
            0
        }
        Err(e) => remember(&e),
    }
}

/// `struct tld__thread_cache` of tld.h: one translation unit's cache of the
/// calling thread's data pointer, filled by the slow paths below and
/// registered with the runtime, which clears it.
pub type tld__thread_cache = tld_core::DataCache;

/// NULL with `errno` set, like a libc call: cgo hands it to Go as the error.
fn null_with_errno(errno: c_int) -> *mut c_void {
    unsafe { *libc::__errno_location() = errno };
    std::ptr::null_mut()
}

fn invalid_key(key: tld_key_t) -> *mut c_void {
    set_message(&format!("invalid key (offset {}): not a key this runtime handed out", key.off));
    null_with_errno(libc::EINVAL)
}

/// Bytes of data every thread block holds (frozen once one exists).
fn data_size() -> usize {
    tld_core::runtime_stats().map_or(0, |s| s.data_size)
}

/// The calling thread's pointer for `key`; fills `cache` and `limit` (may be NULL).
unsafe fn data_slow(
    map_fd: Option<c_int>,
    key: tld_key_t,
    cache: *mut tld__thread_cache,
    limit: *mut u32,
) -> *mut c_void {
    if key.off < 0 {
        return invalid_key(key);
    }
    // Without a cache of the caller's: this copy's own, per thread.
    thread_local! {
        static OWN: tld__thread_cache = const { tld_core::DataCache::new() };
    }
    let result = match unsafe { cache.as_ref() } {
        Some(c) => unsafe { tld_core::fill_thread_cache(c, map_fd) },
        None => OWN.with(|c| match (c.get(), map_fd) {
            // The exported functions keep upstream's rule: the map only matters for a new block.
            (Some(data), _) => Ok((unsafe { std::ptr::NonNull::new_unchecked(data) }, data_size())),
            _ => unsafe { tld_core::fill_thread_cache(c, map_fd) },
        }),
    };
    if let (Ok((_, size)), Some(l)) = (&result, unsafe { limit.as_ref() }) {
        // SAFETY: tld.h's per-translation-unit size, read atomically there.
        unsafe { (*(l as *const u32 as *const std::sync::atomic::AtomicU32)).store(*size as u32, std::sync::atomic::Ordering::Relaxed) };
    }
    match result {
        // A key beyond the frozen data size was never handed out by this runtime.
        Ok((_, size)) if key.off as usize >= size => invalid_key(key),
        Ok((data, _)) => unsafe { data.as_ptr().add(key.off as usize) }.cast(),
        Err(e) => null_with_errno(-remember(&e)),
    }
}

/// Slow path of tld.h's inline `tld_get_data`. See tld.h.
#[no_mangle]
pub unsafe extern "C" fn tld__get_data_slow(
    map_fd: c_int,
    key: tld_key_t,
    cache: *mut tld__thread_cache,
    limit: *mut u32,
) -> *mut c_void {
    unsafe { data_slow(Some(map_fd), key, cache, limit) }
}

/// Slow path of tld.h's inline `tld_data`. See tld.h.
#[no_mangle]
pub unsafe extern "C" fn tld__data_slow(key: tld_key_t, cache: *mut tld__thread_cache, limit: *mut u32) -> *mut c_void {
    unsafe { data_slow(None, key, cache, limit) }
}

/// Upstream `tld_get_data` as a function, for programs built against earlier
/// headers and FFIs that use `dlsym`: registers the calling thread with
/// `map_fd` when it gets its block and returns its pointer for `key`.
#[no_mangle]
pub extern "C" fn tld_get_data(map_fd: c_int, key: tld_key_t) -> *mut c_void {
    unsafe { data_slow(Some(map_fd), key, std::ptr::null_mut(), std::ptr::null_mut()) }
}

/// `tld_data` as a function (see [`tld_get_data`]): the calling thread's
/// pointer for `key`, registering with every attached map.
#[no_mangle]
pub extern "C" fn tld_data(key: tld_key_t) -> *mut c_void {
    unsafe { data_slow(None, key, std::ptr::null_mut(), std::ptr::null_mut()) }
}

/// Attaches the map pinned at `path` (NULL: `$TLD_MAP_PATH` or the default). See tld.h.
#[no_mangle]
pub unsafe extern "C" fn tld_attach_path(path: *const c_char) -> c_int {
    if path.is_null() {
        return int_result(tld_core::attach_default());
    }
    let bytes = unsafe { CStr::from_ptr(path) }.to_bytes();
    int_result(tld_core::attach_path(Path::new(std::ffi::OsStr::from_bytes(bytes))))
}

/// Attaches the map behind `map_fd` (the runtime keeps a duplicate). See tld.h.
#[no_mangle]
pub extern "C" fn tld_attach_fd(map_fd: c_int) -> c_int {
    if map_fd < 0 {
        return int_result(Err(Error::Map {
            source: tld_core::MapSource::Fd(map_fd),
            problem: tld_core::MapProblem::NotAMap { kind: "negative file descriptor".into() },
        }));
    }
    int_result(tld_core::attach_fd(unsafe { std::os::fd::BorrowedFd::borrow_raw(map_fd) }))
}

/// Follows replaced pins now. See tld.h.
#[no_mangle]
pub extern "C" fn tld_refresh() -> c_int {
    int_result(tld_core::refresh())
}

/// Sets the dynamic reserve (upstream `TLD_DYN_DATA_SIZE`). See tld.h.
#[no_mangle]
pub extern "C" fn tld_set_dyn_data_size(bytes: usize) -> c_int {
    int_result(tld_core::set_dynamic_reserve(bytes))
}

/// Upstream `tld_free`: releases the calling thread's block now. See tld.h.
#[no_mangle]
pub extern "C" fn tld_free() {
    tld_core::free_thread_block()
}

/// Copies the calling thread's last error message. See tld.h.
#[no_mangle]
pub unsafe extern "C" fn tld_last_error(buf: *mut c_char, len: usize) -> usize {
    let msg = message_key().map_or(std::ptr::null(), |k| unsafe { libc::pthread_getspecific(k) } as *const Message);
    let (text, n) = match unsafe { msg.as_ref() } {
        Some(m) => (m.bytes.as_ptr(), m.len),
        None => (std::ptr::null(), 0),
    };
    if !buf.is_null() && len > 0 {
        let copy = n.min(len - 1);
        unsafe {
            if copy > 0 {
                std::ptr::copy_nonoverlapping(text, buf.cast(), copy);
            }
            *buf.add(copy) = 0;
        }
    }
    n
}

/// The address of the process's metadata page (one per process, whatever
/// copy of the library asks), or NULL if the runtime cannot start.
#[no_mangle]
pub extern "C" fn tld_metadata_page() -> *const c_void {
    match tld_core::runtime_stats() {
        Ok(s) => s.meta_page as *const c_void,
        Err(e) => {
            remember(&e);
            std::ptr::null()
        }
    }
}

/// Thread blocks currently allocated in this process (all copies). See tld.h.
#[no_mangle]
pub extern "C" fn tld_live_blocks() -> c_int {
    match tld_core::runtime_stats() {
        Ok(s) => s.live_blocks as c_int,
        Err(e) => remember(&e),
    }
}

/// The runtime ABI version this copy was built with (major << 16 | minor).
#[no_mangle]
pub extern "C" fn tld_runtime_abi_version() -> u32 {
    tld_core::RUNTIME_ABI_VERSION
}
