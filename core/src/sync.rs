//! Atomics for the lock-free code: std's in a normal build, loom's when model-checking.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU16, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};

/// Lets another thread run while a slot is being published.
pub(crate) fn yield_now() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::yield_now();
}

/// ThreadSanitizer annotations for the runtime's own synchronization.
///
/// The Rust core is not built with TSan, so a C++ or Go program that is sees
/// the memory the core hands out (thread blocks, reused under the runtime's
/// lock) but not the atomics that order it, and reports races that are not
/// there. When TSan's runtime is in the process (found once with `dlsym`),
/// the lock tells it what it orders; otherwise these are one branch on a
/// cold path.
#[cfg(not(loom))]
pub(crate) mod tsan {
    use std::ffi::c_void;
    use std::sync::atomic::{AtomicUsize, Ordering};

    type Annotate = unsafe extern "C" fn(*mut c_void);

    const UNRESOLVED: usize = 1;
    static ACQUIRE: AtomicUsize = AtomicUsize::new(UNRESOLVED);
    static RELEASE: AtomicUsize = AtomicUsize::new(UNRESOLVED);

    fn resolve(slot: &AtomicUsize, name: &std::ffi::CStr) -> Option<Annotate> {
        let mut f = slot.load(Ordering::Relaxed);
        if f == UNRESOLVED {
            f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) } as usize;
            slot.store(f, Ordering::Relaxed);
        }
        (f != 0).then(|| unsafe { std::mem::transmute::<usize, Annotate>(f) })
    }

    /// After taking a lock at `addr`: what the last releaser did happened before.
    pub(crate) fn acquire<T>(addr: &T) {
        if let Some(f) = resolve(&ACQUIRE, c"__tsan_acquire") {
            unsafe { f(addr as *const T as *mut c_void) };
        }
    }

    /// Before letting go of a lock at `addr`.
    pub(crate) fn release<T>(addr: &T) {
        if let Some(f) = resolve(&RELEASE, c"__tsan_release") {
            unsafe { f(addr as *const T as *mut c_void) };
        }
    }
}
