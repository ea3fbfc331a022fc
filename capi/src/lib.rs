//! The C ABI (`include/tld.h`). Prefix `tld_`, errors as `-errno`, names as
//! NUL-terminated byte strings. Source-compatible with the upstream
//! user-space task local data API, plus our additions.
//!
//! Panics never unwind into C: every entry point is `extern "C"`, which
//! aborts on a panic, and the core does not panic on any input.

#![allow(non_camel_case_types)]
#![deny(unsafe_op_in_unsafe_fn)]
// Each entry point's contract (valid NUL-terminated names, writable buffers) is in tld.h.
#![allow(clippy::missing_safety_doc)]

use std::cell::RefCell;
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

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

fn remember(e: &Error) -> c_int {
    LAST_ERROR.with(|l| *l.borrow_mut() = e.to_string());
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

/// The calling thread's pointer for `key`, or NULL for an invalid key.
/// NULL with `errno` set, like a libc call: cgo hands it to Go as the error.
fn null_with_errno(errno: c_int) -> *mut c_void {
    unsafe { *libc::__errno_location() = errno };
    std::ptr::null_mut()
}

fn invalid_key(key: tld_key_t) -> *mut c_void {
    LAST_ERROR.with(|l| *l.borrow_mut() = format!("invalid key (offset {})", key.off));
    null_with_errno(libc::EINVAL)
}

fn data_for(key: tld_key_t, data: tld_core::Result<std::ptr::NonNull<u8>>) -> *mut c_void {
    match data {
        // A key beyond the frozen data size was never handed out by this runtime.
        Ok(_) if key.off as usize >= data_size() => invalid_key(key),
        Ok(p) => unsafe { p.as_ptr().add(key.off as usize) }.cast(),
        Err(e) => null_with_errno(-remember(&e)),
    }
}

fn data_size() -> usize {
    tld_core::runtime_stats().map(|s| s.data_size).unwrap_or(0)
}

/// Upstream `tld_get_data`: registers the calling thread with `map_fd` on
/// first use and returns its pointer for `key`. See tld.h.
#[no_mangle]
pub extern "C" fn tld_get_data(map_fd: c_int, key: tld_key_t) -> *mut c_void {
    if key.off < 0 {
        return invalid_key(key);
    }
    data_for(key, tld_core::thread_data_for_map_fd(map_fd))
}

/// The calling thread's pointer for `key`, registering with every attached map. See tld.h.
#[no_mangle]
pub extern "C" fn tld_data(key: tld_key_t) -> *mut c_void {
    if key.off < 0 {
        return invalid_key(key);
    }
    data_for(key, tld_core::thread_data())
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
    LAST_ERROR.with(|l| {
        let msg = l.borrow();
        if !buf.is_null() && len > 0 {
            let n = msg.len().min(len - 1);
            unsafe {
                std::ptr::copy_nonoverlapping(msg.as_ptr(), buf.cast(), n);
                *buf.add(n) = 0;
            }
        }
        msg.len()
    })
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
