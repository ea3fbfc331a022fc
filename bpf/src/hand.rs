//! Test support: registering a thread in a `tld_data_map` BY HAND.
//!
//! The tests of this crate and of the `tld` tool check what BPF sees of
//! task local data that no TLD runtime wrote: they lay out the pages
//! themselves, byte by byte, following the wire layout of DESIGN.md §2 (see
//! also `tld.bpf.h`), garbage included, and insert the thread into the map:
//!
//! - [`Page`]: one anonymous, page-aligned, zeroed page of this process;
//! - [`Meta`]: a [`Page`] written as a metadata page (`cnt`, `size`, slots,
//!   the exec stamp);
//! - [`Registration`]: a thread's entry in a `tld_data_map` (the key is a
//!   pidfd of the thread, the value [`map_value`] or [`map_value16`]),
//!   deleted on drop;
//! - [`register`] / [`register16`]: registers the calling thread, in one
//!   call;
//! - [`exec_stamp`]: this image's `mm->arg_start`, the stamp DESIGN.md §5.5
//!   puts in the metadata page.
//!
//! For the 16-byte layout the data page is a page block: its first u64 is
//! `start` (write it with [`Page::write_u64`]), the data area follows.
//!
//! Nothing here is used by the TLD runtime (the core has its own system
//! call layer and must not depend on test code). The helpers panic on
//! failures a test cannot go on from (mmap, pidfd_open), with the cause.
//!
//! Pages are written and read with per-byte atomic accesses: BPF reads this
//! memory behind the compiler's back, and tests may share a page between
//! threads.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, Ordering};

/// `PIDFD_THREAD` (Linux 6.9+): a pidfd for one thread, not its process.
const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;

/// Bytes of a slot name in a metadata page, NUL included (`TLD_NAME_LEN`).
pub const NAME_LEN: usize = 62;

/// The page size of the running kernel.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// One anonymous, page-aligned, zeroed page of this process, unmapped on
/// drop.
#[derive(Debug)]
pub struct Page {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the page is a private mapping owned by this value, and every
// access to it is an atomic byte access.
unsafe impl Send for Page {}
// SAFETY: as above.
unsafe impl Sync for Page {}

impl Default for Page {
    fn default() -> Self {
        Self::new()
    }
}

impl Page {
    /// Maps a new page.
    ///
    /// # Panics
    ///
    /// When mmap fails.
    pub fn new() -> Page {
        let len = page_size();
        // SAFETY: a fresh anonymous private mapping; checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(
            ptr,
            libc::MAP_FAILED,
            "mmap: {}",
            io::Error::last_os_error()
        );
        Page {
            ptr: NonNull::new(ptr.cast()).expect("mmap returned NULL"),
            len,
        }
    }

    /// The address of the page, for a map value's UPTR.
    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// The byte at `off`.
    fn byte(&self, off: usize) -> &AtomicU8 {
        assert!(off < self.len, "access past the page");
        // SAFETY: in bounds (checked above) of our own mapping, which lives
        // as long as `self`, and only ever accessed atomically.
        unsafe { AtomicU8::from_ptr(self.ptr.as_ptr().add(off)) }
    }

    /// Writes `bytes` at `off`.
    ///
    /// # Panics
    ///
    /// When the range runs past the page.
    pub fn write(&self, off: usize, bytes: &[u8]) {
        assert!(off + bytes.len() <= self.len, "write past the page");
        for (i, &b) in bytes.iter().enumerate() {
            self.byte(off + i).store(b, Ordering::Relaxed);
        }
    }

    /// Writes `value` (native endian) at `off`.
    pub fn write_u16(&self, off: usize, value: u16) {
        self.write(off, &value.to_ne_bytes());
    }

    /// Writes `value` (native endian) at `off`.
    pub fn write_i32(&self, off: usize, value: i32) {
        self.write(off, &value.to_ne_bytes());
    }

    /// Writes `value` (native endian) at `off`.
    pub fn write_u64(&self, off: usize, value: u64) {
        self.write(off, &value.to_ne_bytes());
    }

    /// Reads `len` bytes at `off`.
    ///
    /// # Panics
    ///
    /// When the range runs past the page.
    pub fn bytes(&self, off: usize, len: usize) -> Vec<u8> {
        assert!(off + len <= self.len, "read past the page");
        (off..off + len)
            .map(|i| self.byte(i).load(Ordering::Relaxed))
            .collect()
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in new().
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A metadata page, written by the wire layout: `u16 cnt` at 0, `u16 size`
/// at 2, slot `i` at `4 + 64 * i` (a name of [`NAME_LEN`] bytes, then its
/// `u16 size`).
#[derive(Debug, Default)]
pub struct Meta(Page);

impl Meta {
    /// A zeroed metadata page: no slots.
    pub fn new() -> Meta {
        Meta(Page::new())
    }

    /// A well-formed page with `keys` (name, size) in slots 0.., `cnt` and
    /// `size` set; returns it with the keys (data area offsets) of the slots.
    pub fn with_keys(keys: &[(&str, u16)]) -> (Meta, Vec<usize>) {
        let meta = Meta::new();
        let mut offsets = Vec::new();
        let mut off = 0usize;
        for (i, (name, size)) in keys.iter().enumerate() {
            meta.set_slot(i, name.as_bytes(), *size);
            offsets.push(off);
            off += usize::from(*size).next_multiple_of(8);
        }
        meta.set_cnt(keys.len() as u16);
        meta.set_size(off as u16);
        (meta, offsets)
    }

    /// The page.
    pub fn page(&self) -> &Page {
        &self.0
    }

    /// The address of the page, for a map value's `meta` UPTR.
    pub fn addr(&self) -> u64 {
        self.0.addr()
    }

    /// Sets `cnt`, the number of slots claimed.
    pub fn set_cnt(&self, cnt: u16) {
        self.0.write_u16(0, cnt);
    }

    /// Sets `size`, the data bytes of every thread block.
    pub fn set_size(&self, size: u16) {
        self.0.write_u16(2, size);
    }

    /// Writes slot `i`: the name NUL-padded to [`NAME_LEN`] bytes (or
    /// exactly that many bytes with no NUL if `name` is that long), then its
    /// size.
    ///
    /// # Panics
    ///
    /// When `name` is longer than [`NAME_LEN`] or the slot is past the page.
    pub fn set_slot(&self, i: usize, name: &[u8], size: u16) {
        assert!(name.len() <= NAME_LEN, "slot name longer than {NAME_LEN}");
        let mut raw = [0u8; NAME_LEN];
        raw[..name.len()].copy_from_slice(name);
        self.0.write(4 + 64 * i, &raw);
        self.set_slot_size(i, size);
    }

    /// Writes the size of slot `i` alone (0: claimed, not published).
    pub fn set_slot_size(&self, i: usize, size: u16) {
        self.0.write_u16(4 + 64 * i + NAME_LEN, size);
    }

    /// Writes the exec stamp at the end of the page: `magic` at P - 16
    /// ([`STAMP_MAGIC`] when set, 0 for none) and `stamp` at P - 8.
    pub fn set_stamp(&self, magic: u64, stamp: u64) {
        let p = page_size();
        self.0.write_u64(p - 16, magic);
        self.0.write_u64(p - 8, stamp);
    }

    /// Stamps the page with this image's [`exec_stamp`], as the runtime
    /// does.
    pub fn stamp_current(&self) {
        self.set_stamp(STAMP_MAGIC, exec_stamp());
    }
}

/// `stamp_magic` of a stamped metadata page: the bytes `"TLDSTMP1"`.
pub const STAMP_MAGIC: u64 = u64::from_le_bytes(*b"TLDSTMP1");

/// This image's `mm->arg_start`: field 48 of `/proc/self/stat` (DESIGN.md
/// §5.5).
///
/// # Panics
///
/// When `/proc/self/stat` cannot be read or parsed.
pub fn exec_stamp() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("reading /proc/self/stat");
    // Fields after the command name (which may hold spaces), from field 3.
    let rest = &stat[stat.rfind(')').expect("comm in /proc/self/stat") + 2..];
    rest.split_whitespace()
        .nth(48 - 3)
        .and_then(|f| f.parse().ok())
        .expect("field 48 (arg_start) of /proc/self/stat")
}

/// The 16-byte `tld_data_map` value: `data` and `meta` page addresses (0
/// for a NULL UPTR); `start` lives in the data page.
pub fn map_value16(data: u64, meta: u64) -> [u8; 16] {
    let mut value = [0u8; 16];
    value[0..8].copy_from_slice(&data.to_ne_bytes());
    value[8..16].copy_from_slice(&meta.to_ne_bytes());
    value
}

/// The 24-byte `tld_data_map` value: `data` and `meta` page addresses (0 for
/// a NULL UPTR) and `start`, the offset of the data area in the data page.
pub fn map_value(data: u64, meta: u64, start: u16) -> [u8; 24] {
    let mut value = [0u8; 24];
    value[0..8].copy_from_slice(&data.to_ne_bytes());
    value[8..16].copy_from_slice(&meta.to_ne_bytes());
    value[16..18].copy_from_slice(&start.to_ne_bytes());
    value
}

/// A thread's entry in a `tld_data_map`, keyed by a pidfd of the thread,
/// deleted on drop (if still there).
#[derive(Debug)]
pub struct Registration<'a> {
    map: BorrowedFd<'a>,
    pidfd: OwnedFd,
}

impl<'a> Registration<'a> {
    /// Opens a pidfd of thread `tid` (`PIDFD_THREAD`, Linux 6.9+) for
    /// entries of `map`; registers nothing yet (see
    /// [`Registration::update`]).
    ///
    /// # Errors
    ///
    /// When `pidfd_open` fails (no such thread, an older kernel).
    pub fn new(map: BorrowedFd<'a>, tid: i32) -> io::Result<Self> {
        // SAFETY: pidfd_open takes two integers; the result is checked.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, tid, PIDFD_THREAD) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd we own.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Registration { map, pidfd })
    }

    /// Creates or replaces the thread's entry with [`map_value`]`(data,
    /// meta, start)`.
    ///
    /// # Errors
    ///
    /// What the kernel reports (for instance `EFAULT`/`EINVAL` for UPTRs it
    /// refuses to pin).
    pub fn update(&self, data: u64, meta: u64, start: u16) -> io::Result<()> {
        self.update_raw(&map_value(data, meta, start))
    }

    /// Creates or replaces the thread's entry in a 16-byte map with
    /// [`map_value16`]`(data, meta)`.
    ///
    /// # Errors
    ///
    /// As [`Registration::update`].
    pub fn update16(&self, data: u64, meta: u64) -> io::Result<()> {
        self.update_raw(&map_value16(data, meta))
    }

    /// `value` must have the map's value size.
    fn update_raw(&self, value: &[u8]) -> io::Result<()> {
        let key: i32 = self.pidfd.as_raw_fd();
        // SAFETY: key and value point at buffers of the map's key and value
        // sizes (the caller matches the map's layout).
        let rc = unsafe {
            libbpf_rs::libbpf_sys::bpf_map_update_elem(
                self.map.as_raw_fd(),
                (&key as *const i32).cast(),
                value.as_ptr().cast(),
                libbpf_rs::libbpf_sys::BPF_ANY.into(),
            )
        };
        if rc < 0 {
            return Err(io::Error::from_raw_os_error(-rc));
        }
        Ok(())
    }

    /// Deletes the thread's entry.
    ///
    /// # Errors
    ///
    /// `ENOENT` when there is none.
    pub fn delete(&self) -> io::Result<()> {
        let key: i32 = self.pidfd.as_raw_fd();
        // SAFETY: key points at a 4-byte key.
        let rc = unsafe {
            libbpf_rs::libbpf_sys::bpf_map_delete_elem(
                self.map.as_raw_fd(),
                (&key as *const i32).cast(),
            )
        };
        if rc < 0 {
            return Err(io::Error::from_raw_os_error(-rc));
        }
        Ok(())
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        // ENOENT when the test deleted it already.
        let _ = self.delete();
    }
}

/// Registers the calling thread in `map`: `data`/`meta` are page addresses
/// (0 for a NULL UPTR), `start` the offset of the data area in the data
/// page.
///
/// # Panics
///
/// When opening the pidfd or the map update fails.
pub fn register(map: BorrowedFd<'_>, data: u64, meta: u64, start: u16) -> Registration<'_> {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let reg =
        Registration::new(map, tid).unwrap_or_else(|e| panic!("pidfd_open(PIDFD_THREAD): {e}"));
    reg.update(data, meta, start)
        .expect("registering the thread in tld_data_map");
    reg
}

/// Registers the calling thread in the 16-byte `map`: `data`/`meta` are
/// page addresses (0 for a NULL UPTR); `start` is the u64 at offset 0 of
/// `data`, which the caller writes.
///
/// # Panics
///
/// When opening the pidfd or the map update fails.
pub fn register16(map: BorrowedFd<'_>, data: u64, meta: u64) -> Registration<'_> {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let reg =
        Registration::new(map, tid).unwrap_or_else(|e| panic!("pidfd_open(PIDFD_THREAD): {e}"));
    reg.update16(data, meta)
        .expect("registering the thread in a 16-byte tld_data_map");
    reg
}
