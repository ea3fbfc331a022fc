//! The attached maps and the registration of thread blocks with them
//! (DESIGN §5.1, §8).
//!
//! Each map table entry is free, live (threads register with it) or dying
//! (being detached: no new registrations, entries still being deleted). Its
//! state word also counts the threads using its fd at the moment, so the fd
//! is closed only when nobody can be passing it to the kernel any more, and
//! only once no block is registered with it.
//!
//! A block's descriptor records, per entry, whether it is registered (a bit
//! of `registered`). A thread registers itself on its slow path; the runtime
//! registers or deregisters other threads of the process itself when a map is
//! attached by the pin watcher or detached, through pidfds of those threads.

use std::ffi::CStr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use super::pool::Descriptor;
use super::Shared;
use crate::abi;
use crate::error::{Error, MapProblem, MapSource, Result};
use crate::keys::MetaSlots;
use crate::sys;

/// Maps attached at once.
pub const MAX_MAPS: usize = 64;

const REFS: u64 = 0xffff_ffff;
const LIVE: u64 = 1 << 32;
const DYING: u64 = 1 << 33;

/// How a map was attached: it stays attached while any of these holds.
pub(crate) const BY_PATH: u32 = 1;
pub(crate) const BY_FD: u32 = 2;
/// Through `tld_get_data(map_fd, ..)`: follows the caller's fd number (DESIGN §8.2).
pub(crate) const BY_GET_DATA: u32 = 4;

#[repr(C)]
pub(crate) struct MapEntry {
    /// `LIVE`/`DYING` flags and the count of threads using `fd` right now.
    state: AtomicU64,
    /// The runtime's own fd of the map.
    fd: AtomicI32,
    /// The kernel's map id: what identifies a map (DESIGN §8.2).
    id: AtomicU32,
    /// 24 or 16: the layout of the value (DESIGN §2.3, §2.4).
    value_size: AtomicU32,
    /// `BY_PATH | BY_FD | BY_GET_DATA`.
    how: AtomicU32,
    /// The caller's fd number for `BY_GET_DATA`, else -1.
    user_fd: AtomicI32,
    /// Blocks registered with this map (descriptors with its bit set).
    registered: AtomicU32,
    /// The pin's path for `BY_PATH` (NUL-terminated, owned by the entry).
    path: AtomicPtr<libc::c_char>,
}

#[repr(C)]
pub(crate) struct MapTable {
    /// Entries `0..high` have been used.
    high: AtomicU32,
    /// Live entries with a 16-byte value.
    page16: AtomicU32,
    entries: [MapEntry; MAX_MAPS],
}

impl MapTable {
    pub(crate) fn new() -> Self {
        MapTable {
            high: AtomicU32::new(0),
            page16: AtomicU32::new(0),
            entries: std::array::from_fn(|_| MapEntry {
                state: AtomicU64::new(0),
                fd: AtomicI32::new(-1),
                id: AtomicU32::new(0),
                value_size: AtomicU32::new(0),
                how: AtomicU32::new(0),
                user_fd: AtomicI32::new(-1),
                registered: AtomicU32::new(0),
                path: AtomicPtr::new(std::ptr::null_mut()),
            }),
        }
    }

    pub(crate) fn page16_live(&self) -> u32 {
        self.page16.load(Ordering::Acquire)
    }

    fn high(&self) -> usize {
        self.high.load(Ordering::Acquire) as usize
    }

    /// Live maps.
    pub(crate) fn live_count(&self) -> usize {
        (0..self.high()).filter(|&i| self.entries[i].state.load(Ordering::Acquire) & LIVE != 0).count()
    }

    /// Ids of the live maps, by entry index (for diagnostics and tests).
    pub(crate) fn live_ids(&self) -> Vec<u32> {
        (0..self.high())
            .filter(|&i| self.entries[i].state.load(Ordering::Acquire) & LIVE != 0)
            .map(|i| self.entries[i].id.load(Ordering::Relaxed))
            .collect()
    }

    /// The kernel id of entry `i`'s map.
    pub(crate) fn id_of(&self, i: usize) -> u32 {
        self.entries[i].id.load(Ordering::Relaxed)
    }

    /// The live entry the caller knows as `user_fd` (no system call).
    pub(crate) fn by_user_fd(&self, user_fd: RawFd) -> Option<usize> {
        (0..self.high()).find(|&i| {
            let e = &self.entries[i];
            e.state.load(Ordering::Acquire) & LIVE != 0 && e.user_fd.load(Ordering::Relaxed) == user_fd
        })
    }

    /// Takes a reference on entry `i` if it is live (or, with `dying`, being
    /// detached): its fd stays open until the reference is dropped.
    fn acquire(&self, i: usize, dying: bool) -> bool {
        let accept = if dying { LIVE | DYING } else { LIVE };
        self.entries[i]
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| (s & accept != 0).then_some(s + 1))
            .is_ok()
    }

    fn release(&self, i: usize) {
        self.entries[i].state.fetch_sub(1, Ordering::AcqRel);
    }

    fn is_live(&self, i: usize) -> bool {
        self.entries[i].state.load(Ordering::SeqCst) & LIVE != 0
    }

    fn source(&self, i: usize) -> MapSource {
        let e = &self.entries[i];
        let path = e.path.load(Ordering::Acquire);
        if path.is_null() {
            MapSource::Id(e.id.load(Ordering::Relaxed))
        } else {
            use std::os::unix::ffi::OsStrExt;
            MapSource::Path(std::ffi::OsStr::from_bytes(unsafe { CStr::from_ptr(path) }.to_bytes()).into())
        }
    }
}

/// A copy of `path` in pages of the runtime's own: the runtime lives in a
/// mapping leak checkers do not scan, so a malloc'd pointer kept there would
/// look leaked (and heap memory belongs to one copy's allocator).
fn owned_path(path: &CStr) -> *mut libc::c_char {
    let bytes = path.to_bytes_with_nul();
    match sys::mmap_anon(bytes.len()) {
        Ok(p) => {
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) };
            p.cast()
        }
        Err(_) => std::ptr::null_mut(),
    }
}

fn free_path(path: *mut libc::c_char) {
    if !path.is_null() {
        let len = unsafe { CStr::from_ptr(path) }.to_bytes_with_nul().len();
        unsafe { libc::munmap(path.cast(), len) };
    }
}

/// Live entries attached by path: `(index, id, path)`. Under the lock, which
/// also tells ThreadSanitizer that the path was written before (it cannot
/// see the core's atomics).
pub(crate) fn pinned(shared: &Shared) -> Vec<(usize, u32, std::path::PathBuf)> {
    use std::os::unix::ffi::OsStrExt;
    let Ok(_guard) = shared.lock.lock() else { return Vec::new() };
    let table = &shared.maps;
    (0..table.high())
        .filter_map(|i| {
            let e = &table.entries[i];
            let path = e.path.load(Ordering::Acquire);
            (e.state.load(Ordering::Acquire) & LIVE != 0 && !path.is_null()).then(|| {
                let bytes = unsafe { CStr::from_ptr(path) }.to_bytes();
                (i, e.id.load(Ordering::Relaxed), std::ffi::OsStr::from_bytes(bytes).into())
            })
        })
        .collect()
}

/// What to attach: a validated map, our own fd of it.
pub(crate) struct NewMap<'a> {
    pub fd: RawFd,
    pub id: u32,
    pub value_size: u32,
    pub how: u32,
    pub user_fd: RawFd,
    pub path: Option<&'a CStr>,
    pub source: &'a MapSource,
}

/// Adds a map to the table (DESIGN §8.1). Returns `(entry, newly attached)`;
/// a map already attached (same id) keeps its entry and fd, and the caller
/// closes the fd it brought.
pub(crate) fn attach(shared: &Shared, m: NewMap<'_>) -> Result<(usize, bool)> {
    let _guard = shared.lock.lock()?;
    let table = &shared.maps;
    let high = table.high();
    if let Some(i) = (0..high).find(|&i| table.is_live(i) && table.entries[i].id.load(Ordering::Relaxed) == m.id) {
        let e = &table.entries[i];
        e.how.fetch_or(m.how, Ordering::AcqRel);
        if m.how & BY_GET_DATA != 0 {
            e.user_fd.store(m.user_fd, Ordering::Relaxed);
        }
        if let Some(path) = m.path {
            if e.path.load(Ordering::Relaxed).is_null() {
                e.path.store(owned_path(path), Ordering::Release);
            }
        }
        return Ok((i, false));
    }
    let fail = |problem| Error::Map { source: m.source.clone(), problem };
    if m.value_size as usize == abi::MAP_VALUE16_SIZE {
        let cnt = shared.cnt().load(Ordering::Acquire);
        if cnt > 255 {
            return Err(fail(MapProblem::TooManyKeysFor16 { cnt }));
        }
    }
    let i = match (0..high).find(|&i| table.entries[i].state.load(Ordering::Acquire) == 0) {
        Some(i) => i,
        None if high < MAX_MAPS => {
            table.high.store(high as u32 + 1, Ordering::Release);
            high
        }
        None => return Err(fail(MapProblem::TooManyMaps { max: MAX_MAPS })),
    };
    let e = &table.entries[i];
    e.fd.store(m.fd, Ordering::Relaxed);
    e.id.store(m.id, Ordering::Relaxed);
    e.value_size.store(m.value_size, Ordering::Relaxed);
    e.how.store(m.how, Ordering::Relaxed);
    e.user_fd.store(if m.how & BY_GET_DATA != 0 { m.user_fd } else { -1 }, Ordering::Relaxed);
    e.registered.store(0, Ordering::Relaxed);
    e.path.store(m.path.map_or(std::ptr::null_mut(), owned_path), Ordering::Release);
    if m.value_size as usize == abi::MAP_VALUE16_SIZE {
        table.page16.fetch_add(1, Ordering::AcqRel);
    }
    e.state.store(LIVE, Ordering::Release);
    // Every thread registers with it on its next access (DESIGN §5.4).
    shared.attach_epoch.fetch_add(1, Ordering::SeqCst);
    shared.pool.for_each(|d| {
        if d.is_live() {
            d.clear_caches();
        }
    });
    Ok((i, true))
}

/// `tld_get_data(map_fd, ..)` names the map by the caller's fd: entries that
/// followed this fd number but are another map now lose it, and are
/// detached if that was their only attachment (DESIGN §8.2).
pub(crate) fn follow_user_fd(shared: &Shared, keep: usize, user_fd: RawFd) -> Result<()> {
    let stale: Vec<usize> = {
        let _guard = shared.lock.lock()?;
        let table = &shared.maps;
        (0..table.high())
            .filter(|&i| i != keep && table.is_live(i) && table.entries[i].user_fd.load(Ordering::Relaxed) == user_fd)
            .filter(|&i| {
                let e = &table.entries[i];
                e.user_fd.store(-1, Ordering::Relaxed);
                e.how.fetch_and(!BY_GET_DATA, Ordering::AcqRel) == BY_GET_DATA
            })
            .collect()
    };
    for i in stale {
        detach(shared, i)?;
    }
    Ok(())
}

/// Detaches entry `i` (DESIGN §8.2, §8.4): no block registers with it any
/// more, every block's entry in it is deleted, and its fd is closed once
/// nothing uses it.
pub(crate) fn detach(shared: &Shared, i: usize) -> Result<()> {
    let _guard = shared.lock.lock()?;
    let table = &shared.maps;
    let e = &table.entries[i];
    let was = e.state.fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
        (s & LIVE != 0).then_some((s & REFS) | DYING)
    });
    if was.is_err() {
        return Ok(());
    }
    if e.value_size.load(Ordering::Relaxed) as usize == abi::MAP_VALUE16_SIZE {
        table.page16.fetch_sub(1, Ordering::AcqRel);
    }
    let bit = 1u64 << i;
    shared.pool.for_each(|d| {
        if d.in_use() && d.registered.load(Ordering::Acquire) & bit != 0 {
            delete_for_thread_in(shared, d, bit);
        }
    });
    retire_if_done(shared, i);
    Ok(())
}

/// Closes dying entries nobody uses any more (lock held).
pub(crate) fn retire_finished(shared: &Shared) {
    for i in 0..shared.maps.high() {
        retire_if_done(shared, i);
    }
}

fn retire_if_done(shared: &Shared, i: usize) {
    let e = &shared.maps.entries[i];
    if e.registered.load(Ordering::Acquire) != 0 {
        return;
    }
    if e.state.compare_exchange(DYING, 0, Ordering::AcqRel, Ordering::Acquire).is_ok() {
        sys::close(e.fd.swap(-1, Ordering::AcqRel));
        free_path(e.path.swap(std::ptr::null_mut(), Ordering::AcqRel));
        e.id.store(0, Ordering::Relaxed);
        e.how.store(0, Ordering::Relaxed);
        e.user_fd.store(-1, Ordering::Relaxed);
    }
}

/// The entry indices set in `mask`, in order.
fn bits(mask: u64) -> impl Iterator<Item = usize> {
    (0..MAX_MAPS).filter(move |&i| mask & (1 << i) != 0)
}

fn mark(shared: &Shared, d: &Descriptor, i: usize) {
    let bit = 1u64 << i;
    if d.registered.fetch_or(bit, Ordering::SeqCst) & bit == 0 {
        shared.maps.entries[i].registered.fetch_add(1, Ordering::AcqRel);
    }
}

fn unmark(shared: &Shared, d: &Descriptor, i: usize) {
    let bit = 1u64 << i;
    if d.registered.fetch_and(!bit, Ordering::SeqCst) & bit != 0 {
        shared.maps.entries[i].registered.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The value registering `d` with entry `i`, as its layout wants it.
enum Value {
    V24(abi::MapValue),
    V16(abi::MapValue16),
}

fn value_for(shared: &Shared, d: &Descriptor, i: usize) -> std::result::Result<Value, MapProblem> {
    let page_mask = shared.page_size() - 1;
    let block = d.block() as usize;
    let meta = shared.meta_page() as u64;
    if shared.maps.entries[i].value_size.load(Ordering::Relaxed) as usize == abi::MAP_VALUE16_SIZE {
        if !d.is_page_block() {
            return Err(MapProblem::SmallBlockFor16 { tid: d.tid() });
        }
        return Ok(Value::V16(abi::MapValue16 { data: block as u64, meta }));
    }
    Ok(Value::V24(abi::MapValue {
        data: (block & !page_mask) as u64,
        meta,
        start: ((block & page_mask) + abi::BLOCK_HEADER_SIZE) as u16,
        _pad: [0; 6],
    }))
}

fn update(shared: &Shared, d: &Descriptor, i: usize, pidfd: RawFd) -> std::result::Result<(), MapProblem> {
    let fd = shared.maps.entries[i].fd.load(Ordering::Relaxed);
    let r = match value_for(shared, d, i)? {
        Value::V24(v) => sys::map_update(fd, &pidfd, &v),
        Value::V16(v) => sys::map_update(fd, &pidfd, &v),
    };
    r.map_err(|errno| match errno {
        libc::EPERM | libc::EACCES => MapProblem::Permission { errno },
        _ => MapProblem::Os { op: "registering the thread (BPF_MAP_UPDATE_ELEM)", errno },
    })
}

/// Registers the calling thread's block with every live map it is not
/// registered with yet (DESIGN §5.1, §8.3). Every map is tried; the first
/// failure is returned, and refusals for good are not retried.
pub(crate) fn register_pending(shared: &Shared, d: &Descriptor) -> Result<()> {
    let table = &shared.maps;
    let high = table.high();
    let skip = d.registered.load(Ordering::Acquire) | d.refused.load(Ordering::Relaxed);
    let todo = (0..high).filter(|&i| skip & (1 << i) == 0 && table.is_live(i)).fold(0u64, |m, i| m | 1 << i);
    if todo == 0 {
        return Ok(());
    }
    let pidfd = sys::pidfd_self_thread().map_err(|errno| Error::Os { op: "pidfd_open (registering the thread)", errno })?;
    let mut first_error = None;
    for i in bits(todo) {
        if !table.acquire(i, false) {
            continue;
        }
        match update(shared, d, i, pidfd) {
            Ok(()) => {
                mark(shared, d, i);
                // Detached meanwhile: the detacher may not have seen our bit.
                if !table.is_live(i) {
                    let fd = table.entries[i].fd.load(Ordering::Relaxed);
                    let _ = sys::map_delete(fd, &pidfd);
                    unmark(shared, d, i);
                }
            }
            Err(problem) => {
                if matches!(problem, MapProblem::SmallBlockFor16 { .. }) {
                    d.refused.fetch_or(1 << i, Ordering::Relaxed);
                }
                first_error.get_or_insert(Error::Map { source: table.source(i), problem });
            }
        }
        table.release(i);
    }
    sys::close(pidfd);
    if table.entries.iter().take(high).any(|e| e.state.load(Ordering::Acquire) == DYING) {
        if let Ok(_guard) = shared.lock.lock() {
            retire_finished(shared);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Deletes the calling thread's entries from every map it is registered with
/// (DESIGN §5.2). Raw system calls only. Returns whether none is left.
pub(crate) fn deregister_own(shared: &Shared, d: &Descriptor) -> bool {
    if d.registered.load(Ordering::Acquire) == 0 {
        return true;
    }
    let Ok(pidfd) = sys::pidfd_self_thread() else { return false };
    delete_with(shared, d, pidfd, !0);
    sys::close(pidfd);
    d.registered.load(Ordering::Acquire) == 0
}

/// Deletes `d`'s entries in the maps of `mask` through `pidfd`.
fn delete_with(shared: &Shared, d: &Descriptor, pidfd: RawFd, mask: u64) {
    let table = &shared.maps;
    for i in bits(d.registered.load(Ordering::Acquire) & mask) {
        if !table.acquire(i, true) {
            // The entry was retired, and with it every registration.
            unmark(shared, d, i);
            continue;
        }
        let fd = table.entries[i].fd.load(Ordering::Relaxed);
        match sys::map_delete(fd, &pidfd) {
            Ok(()) | Err(libc::ENOENT) | Err(libc::ESRCH) => unmark(shared, d, i),
            Err(_) => {}
        }
        table.release(i);
    }
}

/// Deletes the entries of another thread of this process (lock held), or
/// forgets them when the thread no longer exists.
pub(crate) fn delete_for_thread(shared: &Shared, d: &Descriptor) {
    delete_for_thread_in(shared, d, !0);
}

fn delete_for_thread_in(shared: &Shared, d: &Descriptor, mask: u64) {
    if d.registered.load(Ordering::Acquire) & mask == 0 {
        return;
    }
    match sys::pidfd_of_own_thread(d.tid()) {
        Ok(Some(pidfd)) => {
            delete_with(shared, d, pidfd, mask);
            sys::close(pidfd);
        }
        // Gone: the kernel freed its task storage with the task.
        Ok(None) => forget_in(shared, d, mask),
        // No pidfd (the fd limit): the entries stay, and so does the bit.
        Err(_) => {}
    }
}

/// Drops every registration record of `d` without a system call: its thread
/// is gone, and its task storage with it.
pub(crate) fn forget_registrations(shared: &Shared, d: &Descriptor) {
    forget_in(shared, d, !0);
}

fn forget_in(shared: &Shared, d: &Descriptor, mask: u64) {
    for i in bits(d.registered.load(Ordering::Acquire) & mask) {
        unmark(shared, d, i);
    }
}

/// Registers another thread of this process with entry `i` (lock held): the
/// pin watcher moving every thread to a replacement map.
pub(crate) fn register_other(shared: &Shared, d: &Descriptor, i: usize) {
    let bit = 1u64 << i;
    if d.registered.load(Ordering::Acquire) & bit != 0 || !shared.maps.acquire(i, false) {
        return;
    }
    let mut done = false;
    if let Ok(Some(pidfd)) = sys::pidfd_of_own_thread(d.tid()) {
        if update(shared, d, i, pidfd).is_ok() {
            mark(shared, d, i);
            done = true;
        }
        sys::close(pidfd);
    }
    shared.maps.release(i);
    if !done {
        // Its thread registers itself (and reports why not) on its next access.
        d.clear_caches();
    }
}

/// Registers every live block of the process with entry `i`: the pin
/// watcher moving every thread to a replacement map without waiting for
/// their next access.
pub(crate) fn register_all_live(shared: &Shared, i: usize) -> Result<()> {
    let _guard = shared.lock.lock()?;
    shared.pool.for_each(|d| {
        if d.is_live() {
            register_other(shared, d, i);
        }
    });
    Ok(())
}

/// The pin of entry `i` names another map now: the entry no longer follows
/// it, and is detached unless it was also attached another way.
pub(crate) fn drop_path(shared: &Shared, i: usize) -> Result<()> {
    let only_by_path = {
        let _guard = shared.lock.lock()?;
        let e = &shared.maps.entries[i];
        free_path(e.path.swap(std::ptr::null_mut(), Ordering::AcqRel));
        e.how.fetch_and(!BY_PATH, Ordering::AcqRel) == BY_PATH
    };
    if only_by_path {
        detach(shared, i)?;
    }
    Ok(())
}

/// In a fork child (lock held; raw system calls only): nobody else uses the
/// fds; the child's task storage is empty. Dying entries are closed; the
/// surviving thread re-registers with every live map it was registered
/// with. What fails is left unregistered and its caches cleared, so the
/// thread's next access retries and reports it (DESIGN §5.3).
pub(crate) fn after_fork_child(shared: &Shared, me: Option<&Descriptor>) {
    let table = &shared.maps;
    let mut page16 = 0;
    let was = me.map_or(0, |d| d.registered.swap(0, Ordering::Relaxed));
    for i in 0..table.high() {
        let e = &table.entries[i];
        e.registered.store(0, Ordering::Relaxed);
        let s = e.state.load(Ordering::Relaxed) & !REFS;
        e.state.store(s, Ordering::Relaxed);
        if s == LIVE && e.value_size.load(Ordering::Relaxed) as usize == abi::MAP_VALUE16_SIZE {
            page16 += 1;
        }
    }
    table.page16.store(page16, Ordering::Relaxed);
    retire_finished(shared);
    let Some(d) = me else { return };
    let wanted = (0..table.high()).filter(|&i| was & (1 << i) != 0 && table.is_live(i)).fold(0u64, |m, i| m | 1 << i);
    if wanted == 0 {
        return;
    }
    let mut complete = false;
    if let Ok(pidfd) = sys::pidfd_self_thread() {
        complete = true;
        for i in bits(wanted) {
            match update(shared, d, i, pidfd) {
                Ok(()) => mark(shared, d, i),
                Err(_) => complete = false,
            }
        }
        sys::close(pidfd);
    }
    if !complete {
        d.clear_caches();
    }
}
