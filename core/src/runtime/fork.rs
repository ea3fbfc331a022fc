//! fork() (DESIGN §5.3): the atfork handlers, and the gate that keeps key
//! creations out of the fork window.
//!
//! A key is published by a CAS on `cnt` followed by a name and a size. A fork
//! landing between the two would give the child a slot whose size stays 0
//! forever, and every reader there would wait on it. So every creation holds a
//! claim record, process-wide in the runtime, from before its CAS until its
//! size is stored; the prepare handler raises the gate and waits until no
//! record is held. The same records tell a signal handler that the slot it
//! would wait for was claimed by its own interrupted thread (DESIGN §5.6).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use super::{pool, runtime_if_started, Shared};
use crate::keys::{CreateError, Creation};
use crate::sys;

/// Creations that can be in flight at once; more wait for a free record.
const RECORDS: usize = 64;

/// Key creations in flight: `tid << 32 | (slot + 1)`, or `tid << 32` before
/// the slot is known; 0 for a free record.
#[repr(C)]
pub(crate) struct Claims {
    /// Set while a fork is being prepared: creations wait until it is done.
    forking: AtomicU32,
    _pad: u32,
    records: [AtomicU64; RECORDS],
}

impl Claims {
    pub(crate) fn new() -> Self {
        Claims { forking: AtomicU32::new(0), _pad: 0, records: std::array::from_fn(|_| AtomicU64::new(0)) }
    }

    /// Takes a claim record for a creation by the calling thread, waiting
    /// while a fork is prepared. Taking the record and then checking the gate
    /// (both sequentially consistent), against raising the gate and then
    /// scanning the records, guarantees the prepare handler sees every
    /// creation that got past the gate.
    pub(crate) fn begin<'a>(&'a self, _shared: &'a Shared) -> Result<Creation<'a>, CreateError> {
        let tid = sys::gettid() as u32;
        let held = (tid as u64) << 32;
        loop {
            if self.forking.load(Ordering::SeqCst) == 0 {
                let free = self.records.iter().find(|r| {
                    r.load(Ordering::Relaxed) == 0
                        && r.compare_exchange(0, held, Ordering::SeqCst, Ordering::Relaxed).is_ok()
                });
                if let Some(record) = free {
                    if self.forking.load(Ordering::SeqCst) == 0 {
                        return Ok(Creation::tracked(record, tid));
                    }
                    record.store(0, Ordering::SeqCst);
                }
            }
            std::thread::yield_now();
        }
    }

    /// Whether slot `slot` is claimed by a creation of the calling thread.
    pub(crate) fn held_by_this_thread(&self, slot: usize) -> bool {
        let mine = (sys::gettid() as u32 as u64) << 32 | (slot as u64 + 1);
        self.records.iter().any(|r| r.load(Ordering::SeqCst) == mine)
    }

    /// Raises the gate and waits for the creations in flight (other than the
    /// calling thread's own, which cannot progress while it forks).
    fn close_for_fork(&self) {
        self.forking.store(1, Ordering::SeqCst);
        let me = sys::gettid() as u32 as u64;
        for r in &self.records {
            loop {
                let v = r.load(Ordering::SeqCst);
                if v == 0 || v >> 32 == me {
                    break;
                }
                std::thread::yield_now();
            }
        }
    }

    fn reopen(&self) {
        self.forking.store(0, Ordering::SeqCst);
    }

    /// In a fork child: records of threads that do not exist here are gone.
    fn clear_after_fork(&self) {
        for r in &self.records {
            r.store(0, Ordering::Relaxed);
        }
    }
}

/// Registers this copy's handlers, once per copy. No lock: a lock held by
/// another thread at fork would stay held in the child.
pub(crate) fn register_handlers_once() {
    static REGISTERED: AtomicBool = AtomicBool::new(false);
    if !REGISTERED.swap(true, Ordering::AcqRel) {
        unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    }
}

extern "C" fn prepare() {
    if let Some(s) = runtime_if_started() {
        s.lock.lock_nested();
        s.claims.close_for_fork();
    }
}

extern "C" fn parent() {
    if let Some(s) = runtime_if_started() {
        s.claims.reopen();
        s.lock.unlock();
    }
}

/// In the child, the first copy's handler takes back the blocks of the
/// threads that did not survive and re-registers the surviving thread with
/// every map it was registered with, so pointers taken before the fork keep
/// working for BPF. Raw system calls only.
extern "C" fn child() {
    let Some(s) = runtime_if_started() else { return };
    let pid = sys::getpid();
    if s.pid.swap(pid, Ordering::AcqRel) != pid {
        s.claims.clear_after_fork();
        pool::after_fork_child(s);
        super::watch::after_fork_child(s);
    }
    s.claims.reopen();
    s.lock.unlock();
}
