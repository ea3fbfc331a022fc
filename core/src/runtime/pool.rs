//! Thread blocks (DESIGN §2.2, §5.1, §5.2) and their descriptors.
//!
//! Every block has a descriptor that holds the runtime's bookkeeping: the
//! owning thread, the maps it is registered with, its state. Descriptors live
//! in pages of their own, chained from the pool and never freed, so the fork
//! child and the quarantine can walk them; a block's memory holds nothing but
//! what BPF may read (a page block's header is the `start` BPF reads).
//!
//! Two kinds of block: small blocks tile pages of their own size class; page
//! blocks have a page each, for 16-byte maps. Freed blocks go back to the free
//! list of their kind and are reused, never unmapped (the kernel may still
//! hold a pin until a deregistration completes). A block whose map entries
//! could not be deleted is quarantined instead, until they are.

use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use super::{register, DataCache, Shared};
use crate::abi;
use crate::error::{Error, Result};
use crate::sys;

const FREE: u32 = 0;
const LIVE: u32 = 1;
const QUARANTINED: u32 = 2;

const SMALL: u32 = 0;
const PAGE: u32 = 1;

/// One thread block and its bookkeeping.
#[repr(C)]
pub(crate) struct Descriptor {
    /// The block; set when the descriptor is made, never changed.
    block: AtomicPtr<u8>,
    state: AtomicU32,
    kind: AtomicU32,
    /// The owning thread (while live or quarantined).
    tid: AtomicI32,
    _pad: u32,
    /// Maps this block is registered with: bit i is map table entry i.
    pub(crate) registered: AtomicU64,
    /// Maps that refused this block for good (a small block and a 16-byte
    /// map): reported once, not retried.
    pub(crate) refused: AtomicU64,
    /// The next free descriptor of the same kind.
    next_free: AtomicPtr<Descriptor>,
    /// The bindings' caches of this block's data area on its thread
    /// ([`DataCache`]), cleared when the block stops being the one to use.
    caches: [AtomicPtr<DataCache>; CACHES],
}

/// Caches one thread can have registered: one per copy of the core and per
/// C translation unit using it. More still work, uncached (every access a
/// library call).
const CACHES: usize = 14;

impl Descriptor {
    pub(crate) fn block(&self) -> *mut u8 {
        self.block.load(Ordering::Relaxed)
    }

    /// The data area: after the 8-byte header.
    pub(crate) fn data(&self) -> *mut u8 {
        unsafe { self.block().add(abi::BLOCK_HEADER_SIZE) }
    }

    /// Whether the block has a page of its own, header `start` = 8 (DESIGN §2.2).
    pub(crate) fn is_page_block(&self) -> bool {
        self.kind.load(Ordering::Relaxed) == PAGE
    }

    pub(crate) fn tid(&self) -> i32 {
        self.tid.load(Ordering::Relaxed)
    }

    /// Owned by a running thread.
    pub(crate) fn is_live(&self) -> bool {
        self.state.load(Ordering::Acquire) == LIVE
    }

    /// Makes every registered cache of this block take the slow path. On the
    /// block's own thread, or under the runtime lock while the block is live
    /// (its thread is then still running, its thread-locals still there).
    pub(crate) fn clear_caches(&self) {
        for slot in &self.caches {
            let c = slot.load(Ordering::Acquire);
            if !c.is_null() {
                unsafe { (*c).data.store(std::ptr::null_mut(), Ordering::SeqCst) };
            }
        }
    }

    /// Live or quarantined: its thread may still have map entries naming it.
    pub(crate) fn in_use(&self) -> bool {
        self.state.load(Ordering::Acquire) != FREE
    }
}

/// A page of descriptors: this header, then as many descriptors as fit.
#[repr(C)]
struct DescriptorPage {
    next: AtomicPtr<DescriptorPage>,
    used: AtomicU32,
    _pad: u32,
}

const PAGE_HEADER: usize = std::mem::size_of::<DescriptorPage>();

fn descriptors_per_page(page_size: usize) -> usize {
    (page_size - PAGE_HEADER) / std::mem::size_of::<Descriptor>()
}

impl DescriptorPage {
    fn descriptor(&self, i: usize) -> &Descriptor {
        unsafe { &*((self as *const Self as *const u8).add(PAGE_HEADER) as *const Descriptor).add(i) }
    }
}

/// The block pool. Changed under the runtime lock only; atomics because
/// every copy of the core reads it.
#[repr(C)]
pub(crate) struct Pool {
    /// Size of small blocks; 0 until the first block freezes the data size.
    block_size: AtomicU32,
    live: AtomicU32,
    quarantined: AtomicU32,
    _pad: u32,
    free_small: AtomicPtr<Descriptor>,
    free_page: AtomicPtr<Descriptor>,
    /// Descriptor pages, newest first.
    pages: AtomicPtr<DescriptorPage>,
}

impl Pool {
    pub(crate) fn new() -> Self {
        Pool {
            block_size: AtomicU32::new(0),
            live: AtomicU32::new(0),
            quarantined: AtomicU32::new(0),
            _pad: 0,
            free_small: AtomicPtr::new(std::ptr::null_mut()),
            free_page: AtomicPtr::new(std::ptr::null_mut()),
            pages: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed) as usize
    }

    pub(crate) fn quarantined(&self) -> usize {
        self.quarantined.load(Ordering::Relaxed) as usize
    }

    /// Every descriptor ever made, free ones included.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Descriptor)) {
        let mut page = self.pages.load(Ordering::Acquire);
        while !page.is_null() {
            let p = unsafe { &*page };
            for i in 0..p.used.load(Ordering::Acquire) as usize {
                f(p.descriptor(i));
            }
            page = p.next.load(Ordering::Acquire);
        }
    }

    fn free_list(&self, kind: u32) -> &AtomicPtr<Descriptor> {
        if kind == PAGE {
            &self.free_page
        } else {
            &self.free_small
        }
    }

    fn push_free(&self, d: &Descriptor) {
        let list = self.free_list(d.kind.load(Ordering::Relaxed));
        d.next_free.store(list.load(Ordering::Relaxed), Ordering::Relaxed);
        list.store(d as *const Descriptor as *mut Descriptor, Ordering::Relaxed);
    }

    fn pop_free(&self, kind: u32) -> Option<&Descriptor> {
        let list = self.free_list(kind);
        let d = list.load(Ordering::Relaxed);
        if d.is_null() {
            return None;
        }
        let d = unsafe { &*d };
        list.store(d.next_free.load(Ordering::Relaxed), Ordering::Relaxed);
        Some(d)
    }

    /// A new descriptor for `block` (lock held).
    fn new_descriptor(&self, page_size: usize, block: *mut u8, kind: u32) -> Result<&Descriptor> {
        let mut page = self.pages.load(Ordering::Relaxed);
        if page.is_null() || unsafe { (*page).used.load(Ordering::Relaxed) } as usize == descriptors_per_page(page_size) {
            let fresh = sys::mmap_anon(page_size).map_err(|errno| Error::Os { op: "mmap (block descriptors)", errno })?
                as *mut DescriptorPage;
            unsafe { (*fresh).next.store(page, Ordering::Relaxed) };
            self.pages.store(fresh, Ordering::Release);
            page = fresh;
        }
        let p = unsafe { &*page };
        let i = p.used.load(Ordering::Relaxed) as usize;
        let d = p.descriptor(i);
        d.block.store(block, Ordering::Relaxed);
        d.kind.store(kind, Ordering::Relaxed);
        p.used.store(i as u32 + 1, Ordering::Release);
        Ok(d)
    }

    /// Carves a new page into small blocks, or makes a page block (lock held).
    fn grow(&self, page_size: usize, kind: u32) -> Result<&Descriptor> {
        let base = sys::mmap_anon(page_size).map_err(|errno| Error::Os { op: "mmap (thread blocks)", errno })?;
        let size = if kind == PAGE { page_size } else { self.block_size.load(Ordering::Relaxed) as usize };
        let n = page_size / size;
        let mut first = None;
        for i in 0..n {
            match self.new_descriptor(page_size, unsafe { base.add(i * size) }, kind) {
                Ok(d) if i == 0 => first = Some(d),
                Ok(d) => self.push_free(d),
                // The blocks without a descriptor are simply never used.
                Err(e) if i == 0 => {
                    unsafe { libc::munmap(base.cast(), page_size) };
                    return Err(e);
                }
                Err(_) => break,
            }
        }
        Ok(first.expect("a page holds at least one block"))
    }
}

/// Registers `cache` with the calling thread's descriptor `d` (no-op when it
/// is already). Returns false when every slot is taken: the cache then stays
/// empty and its accesses take the slow path.
pub(crate) fn remember_cache(d: &Descriptor, cache: &DataCache) -> bool {
    let p = cache as *const DataCache as *mut DataCache;
    if d.caches.iter().any(|s| s.load(Ordering::Relaxed) == p) {
        return true;
    }
    let free = d.caches.iter().find(|s| s.compare_exchange(std::ptr::null_mut(), p, Ordering::AcqRel, Ordering::Relaxed).is_ok());
    if free.is_some() {
        // The cache lives in this copy's thread-locals, which the runtime
        // writes into: keep the copy loaded.
        pin_once();
    }
    free.is_some()
}

fn pin_once() {
    static PINNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !PINNED.swap(true, Ordering::AcqRel) {
        super::pin_this_copy();
    }
}

/// Forgets the caches of `d` (its thread no longer uses them for this block).
fn forget_caches(d: &Descriptor) {
    for slot in &d.caches {
        slot.store(std::ptr::null_mut(), Ordering::Relaxed);
    }
}

/// Allocates a block for the calling thread (DESIGN §5.1): a page block while
/// any 16-byte map is attached, else a small block.
pub(crate) fn allocate(shared: &Shared) -> Result<*mut Descriptor> {
    let _guard = shared.lock.lock()?;
    let pool = &shared.pool;
    if pool.block_size.load(Ordering::Relaxed) == 0 {
        // The first block freezes the data size: every later key must fit it.
        let state = shared.budget.freeze();
        shared.publish_size();
        pool.block_size.store(abi::block_size(state.capacity()) as u32, Ordering::Relaxed);
    }
    if pool.quarantined.load(Ordering::Relaxed) > 0 {
        retry_quarantine(shared);
    }
    let kind = if shared.maps.page16_live() > 0 { PAGE } else { SMALL };
    let d = match pool.pop_free(kind) {
        Some(d) => d,
        None => pool.grow(shared.page_size(), kind)?,
    };
    let block = d.block();
    let len = if kind == PAGE { shared.page_size() } else { pool.block_size.load(Ordering::Relaxed) as usize };
    unsafe {
        std::ptr::write_bytes(block, 0, len);
        if kind == PAGE {
            // The header of a page block is the `start` 16-byte readers take from the page.
            (block as *mut u64).write(abi::BLOCK_HEADER_SIZE as u64);
        }
    }
    d.registered.store(0, Ordering::Relaxed);
    d.refused.store(0, Ordering::Relaxed);
    forget_caches(d);
    d.tid.store(sys::gettid(), Ordering::Relaxed);
    d.state.store(LIVE, Ordering::Release);
    pool.live.fetch_add(1, Ordering::Relaxed);
    Ok(d as *const Descriptor as *mut Descriptor)
}

/// Releases the calling thread's block (DESIGN §5.2): deletes its map
/// entries, then frees it, or quarantines it when some entry could not be
/// deleted. Every cached pointer, in any copy, looks again afterwards.
pub(crate) fn release(shared: &Shared, d: &Descriptor) {
    // On the block's own thread: no cache may serve it from here on.
    d.clear_caches();
    let all_deleted = register::deregister_own(shared, d);
    let pool = &shared.pool;
    match shared.lock.lock() {
        Ok(_guard) => {
            pool.live.fetch_sub(1, Ordering::Relaxed);
            if all_deleted {
                d.state.store(FREE, Ordering::Release);
                pool.push_free(d);
            } else {
                d.state.store(QUARANTINED, Ordering::Release);
                pool.quarantined.fetch_add(1, Ordering::Relaxed);
            }
            forget_caches(d);
            if pool.quarantined.load(Ordering::Relaxed) > 0 {
                retry_quarantine(shared);
            }
            register::retire_finished(shared);
        }
        // A signal handler calling tld_free() while its own thread holds the
        // lock (DESIGN §5.6): the free list is the interrupted owner's to
        // change, so park the block in quarantine, which needs no list; the
        // next quarantine pass under the lock frees it.
        Err(_) => {
            forget_caches(d);
            pool.live.fetch_sub(1, Ordering::Relaxed);
            d.state.store(QUARANTINED, Ordering::Release);
            pool.quarantined.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Frees quarantined blocks whose map entries are gone (lock held): their
/// deletes succeed now, or their thread provably no longer exists.
pub(crate) fn retry_quarantine(shared: &Shared) {
    let pool = &shared.pool;
    pool.for_each(|d| {
        if d.state.load(Ordering::Relaxed) != QUARANTINED {
            return;
        }
        let tid = d.tid();
        // A live block of this runtime with the same thread id: the id was
        // reused, so the quarantined block's thread and its entries are gone.
        let mut reused = false;
        pool.for_each(|o| reused |= o.state.load(Ordering::Relaxed) == LIVE && o.tid() == tid);
        if reused {
            register::forget_registrations(shared, d);
        } else {
            register::delete_for_thread(shared, d);
        }
        if d.registered.load(Ordering::Relaxed) == 0 {
            d.state.store(FREE, Ordering::Release);
            pool.quarantined.fetch_sub(1, Ordering::Relaxed);
            pool.push_free(d);
        }
    });
    register::retire_finished(shared);
}

/// In a fork child (the runtime lock held, raw memory operations only): the
/// other threads do not exist here and the child's task storage is empty, so
/// their blocks are free at once; then the surviving thread re-registers.
pub(crate) fn after_fork_child(shared: &Shared) {
    let me = unsafe { libc::pthread_getspecific(shared.thread_key) } as *const Descriptor;
    let pool = &shared.pool;
    let mut live = 0;
    pool.for_each(|d| {
        if std::ptr::eq(d, me) {
            live += 1;
            d.tid.store(sys::gettid(), Ordering::Relaxed);
        } else if d.in_use() {
            forget_caches(d);
            d.registered.store(0, Ordering::Relaxed);
            d.refused.store(0, Ordering::Relaxed);
            d.tid.store(0, Ordering::Relaxed);
            d.state.store(FREE, Ordering::Relaxed);
            pool.push_free(d);
        }
    });
    pool.live.store(live, Ordering::Relaxed);
    pool.quarantined.store(0, Ordering::Relaxed);
    let me = (!me.is_null() && me != super::BUSY as *const Descriptor).then(|| unsafe { &*me });
    register::after_fork_child(shared, me);
}
