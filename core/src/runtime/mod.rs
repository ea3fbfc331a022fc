//! The one runtime per process (DESIGN §4) and the life cycle of thread
//! blocks (DESIGN §5), one file per concern:
//!
//! - [`rendezvous`]: finding or creating the runtime every copy of the core shares;
//! - [`pool`]: thread blocks and their descriptors, quarantine;
//! - [`register`]: the table of attached maps, registering and deregistering blocks;
//! - [`fork`]: the atfork handlers and the gate that keeps key creations out of a fork;
//! - [`watch`]: following replaced pins.
//!
//! Everything the copies share lives in [`Shared`], at the rendezvous address;
//! its layout is versioned by [`RUNTIME_ABI_VERSION`].

pub(crate) mod fork;
pub(crate) mod pool;
pub(crate) mod register;
pub(crate) mod rendezvous;
pub(crate) mod watch;

use std::ffi::c_void;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::abi::{self, NAME_LEN};
use crate::error::{Error, Result};
use crate::keys::{Budget, MetaSlots};
use crate::sync::AtomicU16;

pub use rendezvous::RUNTIME_ABI_VERSION;

/// The state every copy of the core shares. Lives at the rendezvous address.
/// Fields before `extensions` never move within a major version; minor
/// versions append.
#[repr(C)]
pub struct Shared {
    pub(crate) magic: u64,
    pub(crate) abi_version: u32,
    pub(crate) page_size: u32,
    /// The metadata page (P bytes, P-aligned).
    pub(crate) meta: *mut u8,
    /// pthread key whose per-thread value is the thread's block descriptor.
    pub(crate) thread_key: libc::pthread_key_t,
    /// The pid whose threads the blocks belong to; the fork child handler compares it.
    pub(crate) pid: AtomicI32,
    pub(crate) lock: RuntimeLock,
    pub(crate) budget: Budget,
    /// Bumped when a map is attached, after every thread's data caches were
    /// cleared so that each registers with it: a slow path that filled a
    /// cache while this moved fills it again (DESIGN §4).
    pub(crate) attach_epoch: AtomicU64,
    pub(crate) claims: fork::Claims,
    pub(crate) maps: register::MapTable,
    pub(crate) pool: pool::Pool,
    pub(crate) watcher: watch::WatcherState,
    /// Process-wide words for companions of the core (see `RuntimeExtension`).
    pub(crate) extensions: [AtomicU64; 8],
}

// SAFETY: every field other threads or copies write is atomic; the rest is
// written once, before the runtime is published.
unsafe impl Sync for Shared {}

/// The lock of the cold paths (the block pool, the map table). Owned by a
/// `pthread_self()`; taking it again on the same thread is a signal handler
/// re-entering the runtime, which fails with `EDEADLK` rather than corrupting
/// what the interrupted call was changing. Only the fork handlers, one per
/// copy of the core, nest.
#[repr(C)]
pub(crate) struct RuntimeLock {
    owner: AtomicUsize,
    depth: AtomicU32,
    _pad: u32,
}

impl RuntimeLock {
    pub(crate) const fn new() -> Self {
        RuntimeLock { owner: AtomicUsize::new(0), depth: AtomicU32::new(0), _pad: 0 }
    }

    fn me() -> usize {
        unsafe { libc::pthread_self() as usize }
    }

    /// Takes the lock; `EDEADLK` when this thread holds it already.
    pub(crate) fn lock(&self) -> Result<LockGuard<'_>> {
        let me = Self::me();
        if self.owner.load(Ordering::Relaxed) == me {
            return Err(Error::Reentered { what: "the runtime lock" });
        }
        self.acquire(me);
        Ok(LockGuard(self))
    }

    fn acquire(&self, me: usize) {
        while self.owner.compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed).is_err() {
            std::thread::yield_now();
        }
        self.depth.store(1, Ordering::Relaxed);
        crate::sync::tsan::acquire(self);
    }

    /// Takes the lock, nesting on the same thread: for the fork handlers of
    /// several copies, which run one after another on the forking thread.
    pub(crate) fn lock_nested(&self) {
        let me = Self::me();
        if self.owner.load(Ordering::Relaxed) == me {
            self.depth.fetch_add(1, Ordering::Relaxed);
        } else {
            self.acquire(me);
        }
    }

    pub(crate) fn unlock(&self) {
        if self.depth.fetch_sub(1, Ordering::Relaxed) == 1 {
            crate::sync::tsan::release(self);
            self.owner.store(0, Ordering::Release);
        }
    }
}

/// Releases the runtime lock when dropped.
pub(crate) struct LockGuard<'a>(&'a RuntimeLock);

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        self.0.unlock();
    }
}

impl MetaSlots for Shared {
    fn cnt(&self) -> &AtomicU16 {
        unsafe { &*(self.meta as *const AtomicU16) }
    }
    fn slot_size(&self, i: usize) -> &AtomicU16 {
        unsafe { &*(self.meta.add(abi::slot_offset(i) + NAME_LEN) as *const AtomicU16) }
    }
    fn slot_name(&self, i: usize) -> [u8; NAME_LEN] {
        // Byte-wise relaxed loads: callers read only after an acquire load of
        // a non-zero size, and a published name never changes. Atomics, not a
        // memcpy, because other threads and processes share this memory (and
        // a sanitizer intercepting memcpy would not see the size's ordering).
        let field = self.name_bytes(i);
        std::array::from_fn(|j| field[j].load(Ordering::Relaxed))
    }
    fn write_slot_name(&self, i: usize, name: &[u8]) {
        let field = self.name_bytes(i);
        for (j, byte) in field.iter().enumerate() {
            byte.store(name.get(j).copied().unwrap_or(0), Ordering::Relaxed);
        }
    }
    fn max_slots(&self) -> usize {
        abi::max_slots(self.page_size as usize)
    }
    fn begin_creation(&self) -> std::result::Result<crate::keys::Creation<'_>, crate::keys::CreateError> {
        self.claims.begin(self)
    }
    fn claimed_by_this_thread(&self, slot: usize) -> bool {
        self.claims.held_by_this_thread(slot)
    }
    fn may_claim(&self, slot: usize) -> bool {
        // Upstream's 16-byte readers see the count's low byte only (DESIGN §2.1).
        slot < 255 || self.maps.page16_live() == 0
    }
}

/// This copy's pointer to the shared runtime.
static RUNTIME: AtomicPtr<Shared> = AtomicPtr::new(null_mut());

/// A cache of the calling thread's data area, owned by a binding (the Rust
/// API's below, one per C translation unit in `tld.h`, C++'s `thread_local`)
/// and registered with the thread's descriptor when filled. It serves the
/// hot path while not null; the runtime stores null into every registered
/// cache whenever the pointer stops being the one to use (DESIGN §4): the
/// thread's block is released (always on the thread itself), or a map was
/// attached that the thread must register with (from another thread: the
/// hot path reads it with one relaxed atomic load, and sees either the still
/// valid pointer or null). Layout shared with tld.h's
/// `struct tld__thread_cache` and tld.hpp.
///
/// This replaced a process-wide generation word that every fast path
/// compared its cache with: two dependent loads per access, for events that
/// are either the thread's own (its release) or rare (an attach), which the
/// runtime can as well announce by clearing the caches itself.
#[repr(C)]
pub struct DataCache {
    pub data: AtomicPtr<u8>,
}

impl DataCache {
    /// An empty cache: the first access takes the slow path.
    pub const fn new() -> Self {
        DataCache { data: AtomicPtr::new(null_mut()) }
    }

    /// The data area if this cache serves it.
    #[inline]
    pub fn get(&self) -> Option<*mut u8> {
        let p = self.data.load(Ordering::Relaxed);
        (!p.is_null()).then_some(p)
    }
}

impl Default for DataCache {
    fn default() -> Self {
        DataCache::new()
    }
}

thread_local! {
    // No destructor: usable from any destructor or signal handler of the thread.
    pub(crate) static CACHE: DataCache = const { DataCache::new() };
}

impl Shared {
    fn name_bytes(&self, i: usize) -> &[AtomicU8; NAME_LEN] {
        unsafe { &*(self.meta.add(abi::slot_offset(i)) as *const [AtomicU8; NAME_LEN]) }
    }

    pub fn page_size(&self) -> usize {
        self.page_size as usize
    }

    pub fn meta_page(&self) -> *mut u8 {
        self.meta
    }

    fn meta_size_field(&self) -> &AtomicU16 {
        unsafe { &*(self.meta.add(2) as *const AtomicU16) }
    }

    /// Mirrors the budget's capacity into the metadata page's `size` field.
    /// Store, then check the budget did not move meanwhile: a racing publisher
    /// with an older capacity can never be the last writer.
    pub(crate) fn publish_size(&self) {
        loop {
            let cap = self.budget.load().capacity() as u16;
            self.meta_size_field().store(cap, Ordering::Release);
            if self.budget.load().capacity() as u16 == cap {
                return;
            }
        }
    }

    /// Bytes of data every block holds now (static keys + reserve).
    pub(crate) fn data_size(&self) -> usize {
        self.budget.load().capacity()
    }
}

/// The shared runtime, created or joined on first use.
#[inline]
pub(crate) fn runtime() -> Result<&'static Shared> {
    let p = RUNTIME.load(Ordering::Acquire);
    if !p.is_null() {
        return Ok(unsafe { &*p });
    }
    init_runtime()
}

/// The runtime if this copy has one already (fork handlers, destructors).
pub(crate) fn runtime_if_started() -> Option<&'static Shared> {
    let p = RUNTIME.load(Ordering::Acquire);
    (!p.is_null()).then(|| unsafe { &*p })
}

/// Creates or joins the runtime. No lock: two threads of one copy may race
/// here, and the rendezvous makes them agree on one address (a loser of the
/// claim joins the winner). A lock would be left held in a fork child if a
/// thread forked while another was inside (DESIGN §5.3).
#[cold]
fn init_runtime() -> Result<&'static Shared> {
    let shared = rendezvous::find_or_create()?;
    fork::register_handlers_once();
    let p = shared as *const Shared as *mut Shared;
    match RUNTIME.compare_exchange(null_mut(), p, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Ok(shared),
        // Another thread of this copy got there first: always the same runtime.
        Err(existing) => Ok(unsafe { &*existing }),
    }
}

/// The value of the runtime's pthread key on a thread inside a slow path that
/// has not got its descriptor yet: a nested slow path (a signal handler)
/// sees it and refuses instead of allocating a second block.
pub(crate) const BUSY: *mut c_void = 1 as *mut c_void;

/// The calling thread's descriptor, or null.
pub(crate) fn thread_descriptor(shared: &Shared) -> Result<*mut pool::Descriptor> {
    let v = unsafe { libc::pthread_getspecific(shared.thread_key) };
    if v == BUSY {
        return Err(Error::Reentered { what: "this thread's first data access" });
    }
    Ok(v.cast())
}

/// The calling thread's data area, allocating and registering its block on
/// first use and registering with maps attached since; then fills `cache`
/// and registers it with the thread's descriptor so the runtime can clear
/// it. Registration failures are returned after every map was tried, with
/// `cache` left empty: the block stays, and the next access retries.
#[cold]
pub(crate) fn fill_cache(shared: &'static Shared, cache: &DataCache) -> Result<*mut u8> {
    loop {
        let epoch = shared.attach_epoch.load(Ordering::SeqCst);
        let desc = ensure_descriptor(shared)?;
        let d = unsafe { &*desc };
        register::register_pending(shared, d)?;
        let data = d.data();
        if pool::remember_cache(d, cache) {
            cache.data.store(data, Ordering::SeqCst);
        }
        // A map attached meanwhile may have cleared the caches before this
        // one was filled: go round again to register with it.
        if shared.attach_epoch.load(Ordering::SeqCst) == epoch {
            return Ok(data);
        }
        cache.data.store(null_mut(), Ordering::SeqCst);
    }
}

/// Marks the calling thread BUSY if it still has no descriptor, and returns
/// what it had (null: this call now owns the first access). Signals are
/// blocked between the read and the store: a handler running in between
/// would allocate and register a block that the store then overwrites, a
/// leaked block whose registration the thread's next block replaces
/// (DESIGN §5.6). Two system calls, on a thread's first access only.
fn claim_first_access(shared: &Shared) -> Result<*mut pool::Descriptor> {
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
    }
    let v = unsafe { libc::pthread_getspecific(shared.thread_key) };
    if v.is_null() {
        unsafe { libc::pthread_setspecific(shared.thread_key, BUSY) };
    }
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    if v == BUSY {
        return Err(Error::Reentered { what: "this thread's first data access" });
    }
    Ok(v.cast())
}

/// The calling thread's descriptor, allocating its block if it has none.
pub(crate) fn ensure_descriptor(shared: &'static Shared) -> Result<*mut pool::Descriptor> {
    let desc = thread_descriptor(shared)?;
    if !desc.is_null() {
        return Ok(desc);
    }
    let desc = claim_first_access(shared)?;
    if !desc.is_null() {
        // A signal handler gave this thread its block between the two reads.
        return Ok(desc);
    }
    match pool::allocate(shared) {
        Ok(d) => {
            unsafe { libc::pthread_setspecific(shared.thread_key, d as *const c_void) };
            Ok(d)
        }
        Err(e) => {
            unsafe { libc::pthread_setspecific(shared.thread_key, std::ptr::null()) };
            Err(e)
        }
    }
}

/// The calling thread's data area: one thread-local load once the thread is set up.
#[inline]
pub(crate) fn thread_data() -> Result<*mut u8> {
    CACHE.with(|c| match c.get() {
        Some(data) => Ok(data),
        None => fill_cache(runtime()?, c),
    })
}

/// pthread key destructor: runs at thread exit, after C++ and Rust
/// thread-local destructors, so none of them can write into a freed block.
pub(crate) extern "C" fn thread_exit(desc: *mut c_void) {
    let Some(shared) = runtime_if_started() else { return };
    if desc.is_null() || desc == BUSY {
        return;
    }
    release_own(shared, desc.cast());
}

/// Releases the calling thread's block. Busy meanwhile: a signal handler's
/// access in between would otherwise allocate a second block for this task
/// and register it, and this release would then delete the task's one map
/// entry, which the new block relies on (DESIGN §5.6).
fn release_own(shared: &Shared, desc: *mut pool::Descriptor) {
    unsafe { libc::pthread_setspecific(shared.thread_key, BUSY) };
    pool::release(shared, unsafe { &*desc });
    unsafe { libc::pthread_setspecific(shared.thread_key, std::ptr::null()) };
}

/// Releases the calling thread's block now (upstream `tld_free()`). Pointers
/// into it, from any copy of the core, must not be used afterwards.
pub(crate) fn free_thread_block() -> Result<()> {
    let shared = runtime()?;
    let desc = thread_descriptor(shared)?;
    if desc.is_null() {
        return Ok(());
    }
    release_own(shared, desc);
    Ok(())
}

/// The copy whose code a process-wide callback (the pthread key destructor,
/// the watcher thread) runs must stay loaded for the life of the process.
pub(crate) fn pin_this_copy() {
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let here = thread_exit as *const c_void;
    if unsafe { libc::dladdr(here, &mut info) } != 0 && !info.dli_fname.is_null() {
        unsafe { libc::dlopen(info.dli_fname, libc::RTLD_NOW | libc::RTLD_NOLOAD | libc::RTLD_NODELETE) };
    }
}

