//! The one runtime per process (DESIGN §4): a rendezvous page at a fixed
//! address that every copy of the core finds without symbol lookup.
//!
//! The first copy to need the runtime prepares the page's contents in a
//! memory file and maps it with `MAP_FIXED_NOREPLACE`: the page appears with
//! its magic already written, so a copy that loses the race (`EEXIST`) reads a
//! complete header at once and joins. A foreign mapping at the address (its
//! first bytes are not our magic, or it is unreadable) sends every copy to the
//! same next candidate address.
//!
//! Everything the copies share lives in [`Shared`], whose layout is versioned
//! by [`RUNTIME_ABI_VERSION`]: a copy with the same major version joins; any
//! other refuses with [`Error::IncompatibleRuntime`].

use std::ffi::c_void;
use std::os::fd::RawFd;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::abi::{self, MetaHeader, Slot, NAME_LEN};
use crate::error::{Error, Result};
use crate::keys::{Budget, MetaSlots};
use crate::sys;

/// `"TLD-RT\0\x01"` little-endian: the first word of the rendezvous page.
pub const MAGIC: u64 = u64::from_le_bytes(*b"TLD-RT\0\x01");

/// Major version in the high 16 bits (layout of [`Shared`] and of the wire),
/// minor in the low 16 (fields appended at the end of [`Shared`]).
pub const RUNTIME_ABI_VERSION: u32 = match option_env!("TLD_TEST_RUNTIME_ABI_VERSION") {
    // Lets the cross-version test build a copy that claims another version.
    Some(_) => parse_version_override(),
    None => 1 << 16,
};

const fn parse_version_override() -> u32 {
    let s = match option_env!("TLD_TEST_RUNTIME_ABI_VERSION") {
        Some(s) => s.as_bytes(),
        None => return 1 << 16,
    };
    let mut v: u32 = 0;
    let mut i = 0;
    while i < s.len() {
        v = v * 10 + (s[i] - b'0') as u32;
        i += 1;
    }
    v
}

/// Candidate addresses of the rendezvous page: high enough to avoid the heap
/// and PIE images, far from the mmap base and from Go's arena hints
/// (`0x??c0_0000_0000`). The first range is application memory for plain
/// processes and AddressSanitizer; ThreadSanitizer reserves it (and the
/// second) for itself, so every copy in such a process moves on to the last
/// range, which lies in TSan's high application range.
fn candidates() -> impl Iterator<Item = usize> {
    let range = |base: usize, n: usize| (0..n).map(move |i| base + (i << 32));
    range(0x3d1d_0000_0000, 16).chain(range(0x0d1d_0000_0000, 8)).chain(range(0x7e9d_0000_0000, 8))
}

/// Maps attached at once (they are kept for the life of the process).
pub const MAX_MAPS: usize = 16;

/// The state every copy of the core shares. Lives at the rendezvous address.
#[repr(C)]
pub struct Shared {
    magic: u64,
    abi_version: u32,
    page_size: u32,
    /// The metadata page (P bytes, P-aligned).
    meta: *mut u8,
    /// pthread key whose per-thread value is the thread's block.
    thread_key: libc::pthread_key_t,
    /// The pid whose threads the blocks belong to; fork handlers compare it.
    pid: AtomicI32,
    lock: RecursiveLock,
    pub(crate) budget: Budget,
    /// `nmaps << 32 | releases`: a thread's cached data pointer, in any copy
    /// or binding, is current while this has not changed since it was cached.
    generation: AtomicU64,
    nmaps: AtomicU32,
    maps: [AttachedMap; MAX_MAPS],
    pool: BlockPool,
    /// Process-wide words for companions of the core that need exactly one
    /// of something per process whatever the number of copies (DESIGN §4):
    /// see [`crate::RuntimeExtension`].
    pub(crate) extensions: [AtomicU64; 8],
}

#[repr(C)]
struct AttachedMap {
    /// Our own fd (a dup of what the caller gave, or from `BPF_OBJ_GET`).
    fd: AtomicI32,
    /// The kernel's map id, to attach each map once.
    id: AtomicU32,
    /// The caller's fd, so `tld_get_data(map_fd, ..)` finds it without a syscall.
    user_fd: AtomicI32,
    _pad: u32,
}

/// A lock for the cold paths (block pool, attaching maps). Recursive by
/// `pthread_self()`, so the fork handlers of several copies can all take it.
#[repr(C)]
struct RecursiveLock {
    owner: AtomicUsize,
    depth: AtomicU32,
    _pad: u32,
}

impl RecursiveLock {
    fn lock(&self) {
        let me = unsafe { libc::pthread_self() } as usize;
        if self.owner.load(Ordering::Relaxed) == me {
            self.depth.fetch_add(1, Ordering::Relaxed);
            return;
        }
        while self.owner.compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed).is_err() {
            std::thread::yield_now();
        }
        self.depth.store(1, Ordering::Relaxed);
        crate::sync::tsan::acquire(self);
    }

    fn unlock(&self) {
        if self.depth.fetch_sub(1, Ordering::Relaxed) == 1 {
            crate::sync::tsan::release(self);
            self.owner.store(0, Ordering::Release);
        }
    }
}

/// Thread blocks: every block has the same size once the budget is frozen;
/// pages are carved into blocks and freed blocks are reused, never unmapped
/// (the kernel may still hold a pin until a deregistration completes).
#[repr(C)]
struct BlockPool {
    block_size: AtomicU32,
    live: AtomicU32,
    pages: AtomicU32,
    _pad: u32,
    free: AtomicPtr<u8>,
    /// Pages of page addresses, chained: `[next, count, page...]`. The fork
    /// child walks them to take back the blocks of threads that did not survive.
    directory: AtomicPtr<u64>,
}

/// The first 8 bytes of a block: the runtime's own bookkeeping. BPF never reads it.
#[repr(C)]
struct BlockHeader {
    /// How many of the attached maps this block is registered with.
    registered: AtomicU32,
    /// The thread that owns it.
    tid: AtomicI32,
}

impl MetaSlots for Shared {
    fn cnt(&self) -> &crate::sync::AtomicU16 {
        unsafe { &(*(self.meta as *const MetaHeader)).cnt }
    }
    fn slot_size(&self, i: usize) -> &crate::sync::AtomicU16 {
        unsafe { &self.slot(i).size }
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
}

/// This copy's pointer to the shared runtime.
static RUNTIME: AtomicPtr<Shared> = AtomicPtr::new(null_mut());

/// This copy's view of the calling thread: its block and the generation it was checked at.
#[derive(Clone, Copy)]
pub(crate) struct ThreadCache {
    pub(crate) data: *mut u8,
    pub(crate) generation: u64,
}

thread_local! {
    pub(crate) static CACHE: std::cell::Cell<ThreadCache> =
        const { std::cell::Cell::new(ThreadCache { data: null_mut(), generation: u64::MAX }) };
}

impl Shared {
    fn name_bytes(&self, i: usize) -> &[std::sync::atomic::AtomicU8; NAME_LEN] {
        unsafe { &*(self.meta.add(abi::slot_offset(i)) as *const [std::sync::atomic::AtomicU8; NAME_LEN]) }
    }

    unsafe fn slot(&self, i: usize) -> &Slot {
        unsafe { &*(self.meta.add(abi::slot_offset(i)) as *const Slot) }
    }

    pub fn page_size(&self) -> usize {
        self.page_size as usize
    }

    pub fn meta_page(&self) -> *mut u8 {
        self.meta
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn generation_counter(&self) -> &AtomicU64 {
        &self.generation
    }

    /// Mirrors the budget into the metadata page's `size` field.
    pub(crate) fn publish_size(&self) {
        let cap = self.budget.load().capacity() as u16;
        unsafe { (*(self.meta as *const MetaHeader)).size.store(cap, Ordering::Release) };
    }

    /// Number of live thread blocks (for tests and the inspector).
    pub fn live_blocks(&self) -> usize {
        self.pool.live.load(Ordering::Relaxed) as usize
    }

    pub fn attached_maps(&self) -> usize {
        self.nmaps.load(Ordering::Acquire) as usize
    }

    fn map_fd(&self, i: usize) -> RawFd {
        self.maps[i].fd.load(Ordering::Acquire)
    }

    /// Index of the attached map whose caller-side fd is `user_fd`.
    pub(crate) fn map_by_user_fd(&self, user_fd: RawFd) -> Option<usize> {
        let n = self.nmaps.load(Ordering::Acquire) as usize;
        (0..n).find(|&i| self.maps[i].user_fd.load(Ordering::Relaxed) == user_fd)
    }

    /// Adds a validated map (our own fd, caller's fd for lookups). Returns
    /// `(index, newly attached)`; an already attached map (same id) keeps its entry.
    pub(crate) fn add_map(&self, fd: RawFd, id: u32, user_fd: RawFd) -> std::result::Result<(usize, bool), usize> {
        self.lock.lock();
        let n = self.nmaps.load(Ordering::Acquire) as usize;
        let result = if let Some(i) = (0..n).find(|&i| self.maps[i].id.load(Ordering::Relaxed) == id) {
            if user_fd >= 0 {
                self.maps[i].user_fd.store(user_fd, Ordering::Relaxed);
            }
            Ok((i, false))
        } else if n == MAX_MAPS {
            Err(MAX_MAPS)
        } else {
            let m = &self.maps[n];
            m.fd.store(fd, Ordering::Relaxed);
            m.id.store(id, Ordering::Relaxed);
            m.user_fd.store(user_fd, Ordering::Relaxed);
            self.nmaps.store(n as u32 + 1, Ordering::Release);
            self.generation.fetch_add(1 << 32, Ordering::AcqRel);
            Ok((n, true))
        };
        self.lock.unlock();
        result
    }
}

/// The shared runtime, created or joined on first use.
pub(crate) fn runtime() -> Result<&'static Shared> {
    let p = RUNTIME.load(Ordering::Acquire);
    if !p.is_null() {
        return Ok(unsafe { &*p });
    }
    init_runtime()
}

#[cold]
fn init_runtime() -> Result<&'static Shared> {
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
    let p = RUNTIME.load(Ordering::Acquire);
    if !p.is_null() {
        return Ok(unsafe { &*p });
    }
    let shared = rendezvous()?;
    register_fork_handlers();
    RUNTIME.store(shared as *const Shared as *mut Shared, Ordering::Release);
    Ok(shared)
}

/// Finds or creates the process's runtime.
fn rendezvous() -> Result<&'static Shared> {
    let page = sys::page_size();
    let shared_len = std::mem::size_of::<Shared>().next_multiple_of(page);
    let mut prepared: Option<(Vec<u8>, *mut u8)> = None;
    for addr in candidates() {
        let mut probe = [0u8; 8];
        match sys::read_own_memory(addr, &mut probe) {
            Ok(()) if u64::from_le_bytes(probe) == MAGIC => return join(addr, prepared),
            Ok(()) => continue,                // a foreign mapping
            Err(libc::EFAULT) => {}            // nothing readable there: try to claim it
            Err(libc::ENOMEM) | Err(libc::ESRCH) => {} // likewise, per kernel version
            Err(errno) => return Err(Error::Os { op: "process_vm_readv (runtime rendezvous)", errno }),
        }
        let (image, meta) = match &prepared {
            Some(p) => p.clone(),
            None => {
                let p = prepare(page, shared_len)?;
                prepared = Some(p.clone());
                p
            }
        };
        let fd = sys::memfd_with(&image, shared_len).map_err(|errno| Error::Os { op: "memfd_create", errno })?;
        let mapped = sys::mmap_fixed_noreplace(addr, shared_len, fd);
        sys::close(fd);
        match mapped {
            Ok(p) => {
                debug_assert_eq!(unsafe { (*(p as *const Shared)).meta }, meta);
                pin_this_copy();
                return Ok(unsafe { &*(p as *const Shared) });
            }
            // Someone mapped it first: read what is there on the next pass of this address.
            Err(libc::EEXIST) => match sys::read_own_memory(addr, &mut probe) {
                Ok(()) if u64::from_le_bytes(probe) == MAGIC => return join(addr, prepared),
                _ => continue,
            },
            Err(libc::ENOMEM) | Err(libc::EINVAL) | Err(libc::EPERM) => continue,
            Err(errno) => return Err(Error::Os { op: "mmap (runtime rendezvous)", errno }),
        }
    }
    Err(Error::Os { op: "runtime rendezvous: every candidate address is taken", errno: libc::EADDRINUSE })
}

/// Joins the runtime at `addr`, dropping what this copy prepared in vain.
fn join(addr: usize, prepared: Option<(Vec<u8>, *mut u8)>) -> Result<&'static Shared> {
    if let Some((image, meta)) = prepared {
        let unused = unsafe { &*(image.as_ptr() as *const Shared) };
        unsafe {
            libc::pthread_key_delete(unused.thread_key);
            libc::munmap(meta.cast(), sys::page_size());
        }
    }
    let shared = unsafe { &*(addr as *const Shared) };
    let found = shared.abi_version;
    if found >> 16 != RUNTIME_ABI_VERSION >> 16 || shared.page_size as usize != sys::page_size() {
        return Err(Error::IncompatibleRuntime { found, ours: RUNTIME_ABI_VERSION });
    }
    Ok(shared)
}

/// Builds the image of a new rendezvous page: allocates the metadata page and
/// the pthread key, and lays out [`Shared`] in a buffer.
fn prepare(page: usize, shared_len: usize) -> Result<(Vec<u8>, *mut u8)> {
    let meta = sys::mmap_anon(page).map_err(|errno| Error::Os { op: "mmap (metadata page)", errno })?;
    let mut key: libc::pthread_key_t = 0;
    let r = unsafe { libc::pthread_key_create(&mut key, Some(thread_exit)) };
    if r != 0 {
        return Err(Error::Os { op: "pthread_key_create", errno: r });
    }
    let max_data = abi::max_data_size(page);
    let shared = Shared {
        magic: MAGIC,
        abi_version: RUNTIME_ABI_VERSION,
        page_size: page as u32,
        meta,
        thread_key: key,
        pid: AtomicI32::new(sys::getpid()),
        lock: RecursiveLock { owner: AtomicUsize::new(0), depth: AtomicU32::new(0), _pad: 0 },
        budget: Budget::new(crate::DEFAULT_DYNAMIC_RESERVE, max_data),
        generation: AtomicU64::new(0),
        nmaps: AtomicU32::new(0),
        maps: std::array::from_fn(|_| AttachedMap {
            fd: AtomicI32::new(-1),
            id: AtomicU32::new(0),
            user_fd: AtomicI32::new(-1),
            _pad: 0,
        }),
        pool: BlockPool {
            block_size: AtomicU32::new(0),
            live: AtomicU32::new(0),
            pages: AtomicU32::new(0),
            _pad: 0,
            free: AtomicPtr::new(null_mut()),
            directory: AtomicPtr::new(null_mut()),
        },
        extensions: std::array::from_fn(|_| AtomicU64::new(0)),
    };
    unsafe {
        (*(meta as *const MetaHeader)).size.store(crate::DEFAULT_DYNAMIC_RESERVE as u16, Ordering::Relaxed);
    }
    let mut image = vec![0u8; shared_len];
    unsafe { std::ptr::write(image.as_mut_ptr() as *mut Shared, shared) };
    Ok((image, meta))
}

/// The pthread key's destructor lives in the copy that created the runtime:
/// keep that copy loaded for the life of the process.
fn pin_this_copy() {
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let here = thread_exit as *const c_void;
    if unsafe { libc::dladdr(here, &mut info) } != 0 && !info.dli_fname.is_null() {
        unsafe { libc::dlopen(info.dli_fname, libc::RTLD_NOW | libc::RTLD_NOLOAD | libc::RTLD_NODELETE) };
    }
}

// ---------------------------------------------------------------------------
// Thread blocks

/// The calling thread's data area, allocating and registering its block on
/// first use. Registration failures are returned; the block stays allocated
/// and registration is retried on the next access.
#[cold]
pub(crate) fn thread_data_slow(shared: &'static Shared) -> Result<*mut u8> {
    let generation = shared.generation();
    let mut block = unsafe { libc::pthread_getspecific(shared.thread_key) } as *mut u8;
    if block.is_null() {
        block = allocate_block(shared)?;
        unsafe { libc::pthread_setspecific(shared.thread_key, block as *const c_void) };
    }
    register_pending(shared, block)?;
    let data = unsafe { block.add(abi::BLOCK_HEADER_SIZE) };
    CACHE.with(|c| c.set(ThreadCache { data, generation }));
    Ok(data)
}

fn header(block: *mut u8) -> &'static BlockHeader {
    unsafe { &*(block as *const BlockHeader) }
}

fn allocate_block(shared: &Shared) -> Result<*mut u8> {
    shared.lock.lock();
    let result = allocate_locked(shared);
    if let Ok(block) = result {
        // Under the lock, so a fork child never sees an allocated block without its owner.
        header(block).registered.store(0, Ordering::Relaxed);
        header(block).tid.store(sys::gettid(), Ordering::Relaxed);
    }
    shared.lock.unlock();
    result
}

/// Records a new pool page in the directory (under the lock).
fn record_page(shared: &Shared, page: *mut u8) -> Result<()> {
    let slots = shared.page_size() / 8;
    let mut dir = shared.pool.directory.load(Ordering::Relaxed);
    if dir.is_null() || unsafe { *dir.add(1) } as usize == slots - 2 {
        let fresh = sys::mmap_anon(shared.page_size()).map_err(|errno| Error::Os { op: "mmap (block directory)", errno })?
            as *mut u64;
        unsafe { *fresh = dir as u64 };
        shared.pool.directory.store(fresh, Ordering::Relaxed);
        dir = fresh;
    }
    unsafe {
        let count = *dir.add(1) as usize;
        *dir.add(2 + count) = page as u64;
        *dir.add(1) = count as u64 + 1;
    }
    Ok(())
}

/// In a fork child: returns every block but `keep` to the pool. Their
/// threads do not exist here and the child's task storage is empty, so there
/// is nothing to deregister. Raw memory operations only; the lock is held.
fn reclaim_blocks_after_fork(shared: &Shared, keep: *mut u8) {
    let pool = &shared.pool;
    let size = pool.block_size.load(Ordering::Relaxed) as usize;
    let page = shared.page_size();
    let mut dir = pool.directory.load(Ordering::Relaxed);
    while !dir.is_null() {
        let count = unsafe { *dir.add(1) } as usize;
        for i in 0..count {
            let base = unsafe { *dir.add(2 + i) } as *mut u8;
            for b in 0..page / size {
                let block = unsafe { base.add(b * size) };
                let hdr = header(block);
                if block != keep && hdr.tid.load(Ordering::Relaxed) != 0 {
                    hdr.tid.store(0, Ordering::Relaxed);
                    hdr.registered.store(0, Ordering::Relaxed);
                    unsafe { free_link(block).store(pool.free.load(Ordering::Relaxed), Ordering::Relaxed) };
                    pool.free.store(block, Ordering::Relaxed);
                    pool.live.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        dir = unsafe { *dir } as *mut u64;
    }
}

fn allocate_locked(shared: &Shared) -> Result<*mut u8> {
    let pool = &shared.pool;
    if pool.block_size.load(Ordering::Relaxed) == 0 {
        // The first block freezes the data size: every later key must fit it.
        let state = shared.budget.freeze();
        shared.publish_size();
        pool.block_size.store(abi::block_size(state.capacity()) as u32, Ordering::Relaxed);
    }
    let size = pool.block_size.load(Ordering::Relaxed) as usize;
    let mut block = pool.free.load(Ordering::Relaxed);
    if block.is_null() {
        let page = shared.page_size();
        let base = sys::mmap_anon(page).map_err(|errno| Error::Os { op: "mmap (thread blocks)", errno })?;
        if let Err(e) = record_page(shared, base) {
            unsafe { libc::munmap(base.cast(), page) };
            return Err(e);
        }
        pool.pages.fetch_add(1, Ordering::Relaxed);
        // Thread the new blocks onto the free list; the first is returned.
        for i in (1..page / size).rev() {
            let b = unsafe { base.add(i * size) };
            unsafe { free_link(b).store(pool.free.load(Ordering::Relaxed), Ordering::Relaxed) };
            pool.free.store(b, Ordering::Relaxed);
        }
        block = base;
    } else {
        pool.free.store(unsafe { free_link(block).load(Ordering::Relaxed) }, Ordering::Relaxed);
    }
    unsafe { std::ptr::write_bytes(block, 0, size) };
    pool.live.fetch_add(1, Ordering::Relaxed);
    Ok(block)
}

/// A free block's next-pointer sits at the start of its data area (the header keeps its meaning).
unsafe fn free_link(block: *mut u8) -> &'static AtomicPtr<u8> {
    unsafe { &*(block.add(abi::BLOCK_HEADER_SIZE) as *const AtomicPtr<u8>) }
}

fn map_value(shared: &Shared, block: *mut u8) -> abi::MapValue {
    let page_mask = shared.page_size() - 1;
    let addr = block as usize;
    abi::MapValue {
        data: (addr & !page_mask) as u64,
        meta: shared.meta as u64,
        start: ((addr & page_mask) + abi::BLOCK_HEADER_SIZE) as u16,
        _pad: [0; 6],
    }
}

/// Registers `block` with the maps attached since it was last registered.
fn register_pending(shared: &Shared, block: *mut u8) -> Result<()> {
    let hdr = header(block);
    let n = shared.nmaps.load(Ordering::Acquire);
    let mut done = hdr.registered.load(Ordering::Relaxed);
    if done >= n {
        return Ok(());
    }
    let pidfd = sys::pidfd_self_thread().map_err(|errno| Error::Os { op: "pidfd_open", errno })?;
    let value = map_value(shared, block);
    let mut result = Ok(());
    while done < n {
        let fd = shared.map_fd(done as usize);
        if let Err(errno) = sys::map_update(fd, &pidfd, &value) {
            result = Err(map_error_for_registration(fd, errno));
            break;
        }
        done += 1;
    }
    hdr.registered.store(done, Ordering::Relaxed);
    sys::close(pidfd);
    result
}

fn map_error_for_registration(fd: RawFd, errno: i32) -> Error {
    use crate::error::{MapProblem, MapSource};
    let problem = match errno {
        libc::EPERM | libc::EACCES => MapProblem::Permission { errno },
        _ => MapProblem::Os { op: "registering the thread (BPF_MAP_UPDATE_ELEM)", errno },
    };
    Error::Map { source: MapSource::Fd(fd), problem }
}

/// Deregisters the calling thread's block from every map it is registered
/// with, then returns it to the pool. Raw system calls only.
fn release_block(shared: &Shared, block: *mut u8) {
    let hdr = header(block);
    let n = hdr.registered.load(Ordering::Relaxed);
    if n > 0 {
        if let Ok(pidfd) = sys::pidfd_self_thread() {
            for i in 0..n as usize {
                let _ = sys::map_delete(shared.map_fd(i), &pidfd);
            }
            sys::close(pidfd);
        }
    }
    hdr.registered.store(0, Ordering::Relaxed);
    hdr.tid.store(0, Ordering::Relaxed);
    shared.lock.lock();
    unsafe { free_link(block).store(shared.pool.free.load(Ordering::Relaxed), Ordering::Relaxed) };
    shared.pool.free.store(block, Ordering::Relaxed);
    shared.pool.live.fetch_sub(1, Ordering::Relaxed);
    // Every cache of this block, in any copy or language, is now stale: a
    // later access on this thread (another destructor at its exit) looks again.
    shared.generation.fetch_add(1, Ordering::AcqRel);
    shared.lock.unlock();
}

/// pthread key destructor: runs at thread exit, after C++ and Rust
/// thread-local destructors, so none of them can write into a freed block.
extern "C" fn thread_exit(block: *mut c_void) {
    let shared = RUNTIME.load(Ordering::Acquire);
    if !shared.is_null() && !block.is_null() {
        release_block(unsafe { &*shared }, block as *mut u8);
    }
}

/// Releases the calling thread's block now (upstream `tld_free()`). Pointers
/// into it, from any copy of the core, must not be used afterwards.
pub(crate) fn free_thread_block() {
    let Ok(shared) = runtime() else { return };
    let block = unsafe { libc::pthread_getspecific(shared.thread_key) } as *mut u8;
    if block.is_null() {
        return;
    }
    unsafe { libc::pthread_setspecific(shared.thread_key, std::ptr::null()) };
    CACHE.with(|c| c.set(ThreadCache { data: null_mut(), generation: u64::MAX }));
    release_block(shared, block);
}

// ---------------------------------------------------------------------------
// fork()

fn register_fork_handlers() {
    unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child)) };
}

fn shared_or_null() -> Option<&'static Shared> {
    let p = RUNTIME.load(Ordering::Acquire);
    (!p.is_null()).then(|| unsafe { &*p })
}

extern "C" fn fork_prepare() {
    if let Some(s) = shared_or_null() {
        s.lock.lock();
    }
}

extern "C" fn fork_parent() {
    if let Some(s) = shared_or_null() {
        s.lock.unlock();
    }
}

/// In the child, the first copy's handler re-registers the surviving thread
/// with every map it was registered with, so pointers taken before the fork
/// keep working for BPF. Raw system calls only.
extern "C" fn fork_child() {
    let Some(s) = shared_or_null() else { return };
    let pid = sys::getpid();
    if s.pid.swap(pid, Ordering::AcqRel) != pid {
        let block = unsafe { libc::pthread_getspecific(s.thread_key) } as *mut u8;
        reclaim_blocks_after_fork(s, block);
        if !block.is_null() {
            let hdr = header(block);
            hdr.tid.store(sys::gettid(), Ordering::Relaxed);
            let n = hdr.registered.load(Ordering::Relaxed);
            if n > 0 {
                if let Ok(pidfd) = sys::pidfd_self_thread() {
                    let value = map_value(s, block);
                    let mut done = 0;
                    while done < n && sys::map_update(s.map_fd(done as usize), &pidfd, &value).is_ok() {
                        done += 1;
                    }
                    if done < n {
                        // Make every cache look again so the next access retries the rest.
                        hdr.registered.store(done, Ordering::Relaxed);
                        s.generation.fetch_add(1, Ordering::AcqRel);
                    }
                    sys::close(pidfd);
                }
            }
        }
    }
    s.lock.unlock();
}

/// The calling thread's data area: a few loads once the thread is set up.
#[inline]
pub(crate) fn thread_data() -> Result<*mut u8> {
    let p = RUNTIME.load(Ordering::Acquire);
    if !p.is_null() {
        let shared = unsafe { &*p };
        let cache = CACHE.with(|c| c.get());
        if cache.generation == shared.generation.load(Ordering::Acquire) {
            return Ok(cache.data);
        }
        return thread_data_slow(shared);
    }
    thread_data_slow(runtime()?)
}
