//! A reader of the 16-byte layout (DESIGN.md §2.4) that works the way the
//! BPF side of the task local data library in the Linux tree does, for tests
//! of a runtime against consumers built on upstream's header.
//!
//! [`UpstreamReader`] loads `read_keys` (`src/bpf/tld_upstream16.bpf.c`,
//! compiled with clang >= 15 because its map value holds
//! `struct X __uptr *` members) with a `tld_data_map` of the 16-byte value:
//! a new one of its own, the one pinned at a path, or the one behind an fd.
//! [`UpstreamReader::read`] looks up key names and sizes chosen at run time
//! for the calling thread or any thread, the upstream way: `cnt` is the u8
//! at offset 0 of the metadata page, `start` the u64 at offset 0 of the data
//! page, the key is the sum of the rounded sizes of the slots before the
//! name's, and the value is returned when `start + key < P - size`. It
//! reports what it matched (slot, slot size, offset), so a test can check
//! that nothing but the key's own bytes was read.
//!
//! Thread ids are those of the caller's pid namespace (`gettid()`).

use std::fmt;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;
use std::sync::Mutex;

use libbpf_rs::{MapCore, MapFlags, Object};

use crate::skels::tld_upstream16::types;
use crate::{from_bytes, load_object, map, objects, obj_pin, run_syscall, DataMap, Error, Layout};

/// Keys one [`UpstreamReader::read`] looks up at most.
pub const MAX_KEYS: usize = 16;
/// Bytes of each value [`UpstreamValue::bytes`] holds at most.
pub const VALUE_MAX: usize = 64;

/// One key found by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamValue {
    /// Slot index of the matching name.
    pub slot: u8,
    /// That slot's size, as published.
    pub slot_size: u16,
    /// `start + key`: the value's offset in the thread's data page.
    pub page_offset: u16,
    /// The first `min(size asked, 64)` bytes of the value.
    pub bytes: Vec<u8>,
}

/// What [`UpstreamReader::read`] saw of one thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamView {
    /// The thread has an entry with a metadata page; the fields below are
    /// empty when it has none.
    pub registered: bool,
    /// `cnt` as upstream reads it (a u8).
    pub cnt: u8,
    /// The data page's `start` (clamped to the page size).
    pub start: u32,
    /// Per key asked, in order: `Some` when the name matched and the value
    /// lies in the page, `None` otherwise.
    pub values: Vec<Option<UpstreamValue>>,
}

/// The upstream-style 16-byte reader, loaded.
pub struct UpstreamReader {
    obj: Object,
    /// Serializes reads: the keys travel through one array map.
    lock: Mutex<()>,
}

impl fmt::Debug for UpstreamReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamReader").finish_non_exhaustive()
    }
}

impl UpstreamReader {
    /// Loads the reader with a new, empty 16-byte `tld_data_map` (its BTF
    /// describes full pages, so `tld.bpf.h` programs built with
    /// `TLD_MAP_VALUE_16` load against it too).
    ///
    /// # Errors
    ///
    /// As [`crate::TestBpf::load`].
    pub fn create() -> Result<Self, Error> {
        Self::open(DataMap::Own)
    }

    /// Loads the reader sharing the 16-byte map pinned at `path`.
    ///
    /// # Errors
    ///
    /// As [`crate::TestBpf::load`]; [`Error::Bpf`] when nothing is pinned
    /// there or the map is not a 16-byte `tld_data_map`.
    pub fn reuse_pinned(path: &Path) -> Result<Self, Error> {
        Self::open(DataMap::Pinned(path))
    }

    /// Loads the reader sharing the 16-byte map behind `fd`.
    ///
    /// # Errors
    ///
    /// As [`UpstreamReader::reuse_pinned`].
    pub fn reuse_fd(fd: BorrowedFd<'_>) -> Result<Self, Error> {
        Self::open(DataMap::Fd(fd))
    }

    fn open(target: DataMap<'_>) -> Result<Self, Error> {
        let layout = target.layout(Layout::Value16)?;
        if layout != Layout::Value16 {
            return Err(Error::Bpf {
                op: "the upstream-style reader needs a 16-byte tld_data_map, not a 24-byte one"
                    .into(),
                source: libbpf_rs::Error::from_raw_os_error(libc::EINVAL),
            });
        }
        let obj = load_object(objects::UPSTREAM16, "tld_upstream16", |open| {
            target.apply(open)
        })?;
        Ok(UpstreamReader {
            obj,
            lock: Mutex::new(()),
        })
    }

    /// The file descriptor of the 16-byte `tld_data_map`, to attach a
    /// runtime to or to register threads in.
    pub fn map_fd(&self) -> BorrowedFd<'_> {
        let m = map(&self.obj, "tld_data_map");
        // SAFETY: the fd belongs to the object, owned by `self`.
        unsafe { BorrowedFd::borrow_raw(m.as_fd().as_raw_fd()) }
    }

    /// Pins the map at `path` (on a bpffs). The pin outlives this object.
    ///
    /// # Errors
    ///
    /// [`Error::Bpf`] when pinning fails.
    pub fn pin(&self, path: &Path) -> Result<(), Error> {
        obj_pin(self.map_fd(), path).map_err(Error::bpf(format!(
            "pinning the 16-byte tld_data_map at {}",
            path.display()
        )))
    }

    /// Looks up `keys` (name, size asked) for thread `tid` (0: the calling
    /// thread).
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchTask`] when no thread `tid` exists; [`Error::Bpf`]
    /// when a name is empty or longer than 61 bytes or holds a NUL, a size is
    /// 0, more than [`MAX_KEYS`] keys are asked (all `EINVAL`), or the run
    /// fails.
    pub fn read(&self, tid: i32, keys: &[(&str, usize)]) -> Result<UpstreamView, Error> {
        let invalid = |what: String| Error::Bpf {
            op: what,
            source: libbpf_rs::Error::from_raw_os_error(libc::EINVAL),
        };
        if keys.len() > MAX_KEYS {
            return Err(invalid(format!(
                "reading {} keys at once (at most {MAX_KEYS})",
                keys.len()
            )));
        }
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let array = map(&self.obj, "keys");
        for (i, (name, size)) in keys.iter().enumerate() {
            if name.is_empty() || name.len() > 61 || name.contains('\0') {
                return Err(invalid(format!("key name {name:?} (1 to 61 bytes, no NUL)")));
            }
            if *size == 0 || *size > u32::MAX as usize {
                return Err(invalid(format!("size {size} of key {name:?}")));
            }
            let mut k = types::tld_upstream_key::default();
            for (dst, src) in k.name.iter_mut().zip(name.bytes()) {
                *dst = src as _;
            }
            k.size = *size as u32;
            array
                .update(&(i as u32).to_ne_bytes(), as_bytes(&k), MapFlags::ANY)
                .map_err(Error::bpf("writing a key to look up"))?;
        }
        let mut ctx = types::upstream_ctx {
            tid,
            nr: keys.len() as u32,
            ..Default::default()
        };
        run_syscall(&self.obj, "read_keys", &mut ctx)?;
        match ctx.err {
            0 => {}
            e if e == -libc::ESRCH => return Err(Error::NoSuchTask(tid)),
            e if e == -libc::ENODATA => {
                return Ok(UpstreamView {
                    registered: false,
                    cnt: 0,
                    start: 0,
                    values: vec![None; keys.len()],
                })
            }
            err => {
                return Err(Error::Program {
                    prog: "read_keys",
                    err,
                })
            }
        }
        let mut values = Vec::with_capacity(keys.len());
        for i in 0..keys.len() {
            let bytes = array
                .lookup(&(i as u32).to_ne_bytes(), MapFlags::ANY)
                .map_err(Error::bpf("reading a looked-up key"))?
                .unwrap_or_default();
            let k: types::tld_upstream_key = from_bytes(&bytes);
            values.push((k.found != 0).then(|| UpstreamValue {
                slot: k.slot,
                slot_size: k.slot_size,
                page_offset: k.page_off,
                bytes: k.value[..usize::from(k.value_len).min(VALUE_MAX)].to_vec(),
            }));
        }
        Ok(UpstreamView {
            registered: true,
            cnt: ctx.cnt as u8,
            start: ctx.start,
            values,
        })
    }
}

/// The bytes of a skeleton plain-data struct.
fn as_bytes<T: Copy>(value: &T) -> &[u8] {
    // SAFETY: T is a skeleton's plain-data struct (integers and arrays).
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_sizes() {
        assert_eq!(size_of::<types::tld_upstream_key>(), 64 + 4 + 4 + 4 + VALUE_MAX);
        assert_eq!(size_of::<types::upstream_ctx>(), 24);
    }
}
