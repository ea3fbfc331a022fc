//! The OTEP 4947 TLS symbol: which copy's `otel_thread_ctx_v1` is the live
//! one (DESIGN §10.5).
//!
//! Every copy of this crate carries the symbol (src/tls.c), so a process with
//! several copies (libtld.so, a Python extension, a Go archive) may export it
//! from several objects. Exactly one is live: the runtime's process-wide word
//! `RuntimeExtension::OtelThreadSymbol` holds the address of the live copy's
//! `tld_otel_tls_slot` accessor, and every copy writes the calling thread's
//! pointer through it. The other symbols stay NULL on every thread. A copy
//! claims the word (compare-and-swap from 0) only if the dynamic linker
//! exports the slot its accessor returns, so the live symbol is one readers
//! can find in .dynsym; a copy loaded with dlopen() pins itself first
//! (`RTLD_NODELETE`), so the accessor never goes away.

use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Result;

extern "C" {
    /// This copy's accessor (src/tls.c).
    fn tld_otel_tls_slot() -> *mut *mut c_void;
}

/// A copy's accessor, as stored in the word.
type SlotFn = unsafe extern "C" fn() -> *mut *mut c_void;

/// The word naming the live accessor.
pub(crate) fn word() -> Result<&'static AtomicU64> {
    Ok(tld::runtime_extension(tld::RuntimeExtension::OtelThreadSymbol)?)
}

/// Whether the dynamic linker exports the slot `mine` is (for this thread):
/// looked up in the global scope (an executable's symbol) and in this copy's
/// own object (a library loaded `RTLD_LOCAL`).
fn exported(mine: *mut *mut c_void) -> bool {
    let name = c"otel_thread_ctx_v1".as_ptr();
    if unsafe { libc::dlsym(libc::RTLD_DEFAULT, name) } == mine as *mut c_void {
        return true;
    }
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    if unsafe { libc::dladdr(tld_otel_tls_slot as *const c_void, &mut info) } == 0 || info.dli_fname.is_null() {
        return false;
    }
    let handle = unsafe { libc::dlopen(info.dli_fname, libc::RTLD_LAZY | libc::RTLD_NOLOAD) };
    if handle.is_null() {
        return false;
    }
    let found = unsafe { libc::dlsym(handle, name) } == mine as *mut c_void;
    unsafe { libc::dlclose(handle) };
    found
}

/// Keeps this copy's object loaded for the life of the process: the word
/// points at its code. A no-op for the executable.
fn pin_this_copy() {
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    if unsafe { libc::dladdr(tld_otel_tls_slot as *const c_void, &mut info) } != 0 && !info.dli_fname.is_null() {
        unsafe { libc::dlopen(info.dli_fname, libc::RTLD_NOW | libc::RTLD_NOLOAD | libc::RTLD_NODELETE) };
    }
}

/// The live accessor's word value (0: no copy exports the symbol yet) and the
/// calling thread's slot behind it. Claims the word for this copy when it is
/// free and this copy's symbol is exported.
pub(crate) fn live_slot(word: &AtomicU64) -> (u64, *mut *mut c_void) {
    let mut owner = word.load(Ordering::Acquire);
    if owner == 0 {
        let mine = unsafe { tld_otel_tls_slot() };
        if exported(mine) {
            pin_this_copy();
            let me = tld_otel_tls_slot as SlotFn as usize as u64;
            owner = match word.compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => me,
                Err(theirs) => theirs,
            };
        }
    }
    if owner == 0 {
        return (0, std::ptr::null_mut());
    }
    // SAFETY: the word only ever holds a pinned copy's accessor.
    let slot = unsafe { std::mem::transmute::<usize, SlotFn>(owner as usize)() };
    (owner, slot)
}

/// Claims the word for this copy if it is free and this copy's symbol is
/// exported; a no-op otherwise (the runtime not reachable included: the
/// first publication reports that). A copy that is a process's exported one
/// (a language binding's extension, libtld.so) may call it early, for
/// example when it attaches a map, so that threads publishing through copies
/// whose symbol is hidden get the live symbol even if nothing was published
/// through this copy yet (DESIGN §10.5).
pub fn claim() {
    if let Ok(w) = word() {
        let _ = live_slot(w);
    }
}

/// Whether this copy holds the live symbol (for tests and diagnostics).
pub fn owns_live_symbol() -> Result<bool> {
    let w = word()?;
    let _ = live_slot(w);
    Ok(w.load(Ordering::Acquire) == tld_otel_tls_slot as SlotFn as usize as u64)
}
