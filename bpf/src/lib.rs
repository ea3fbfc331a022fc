//! BPF side of task local data (TLD).
//!
//! This crate ships two things:
//!
//! - `tld.bpf.h` (at the crate root): the header a BPF program includes to
//!   read task local data, API-compatible with the BPF side of the task local
//!   data library in the Linux BPF selftests (`tld_object_init()`,
//!   `tld_get_data()`, the `tld_data_map` and `tld_key_map` task storage maps).
//! - [`TestBpf`]: a loader for three test programs built on that header, so
//!   that Rust tests (of this crate and of the rest of the workspace) can see
//!   exactly what a BPF program sees of a thread's task local data:
//!   [`TestBpf::read_basic`] goes through the public header API,
//!   [`TestBpf::dump_current`] / [`TestBpf::dump_tid`] walk the raw metadata
//!   of any thread, and [`TestBpf::count_registered`] counts the registered
//!   threads of a process with a task iterator.
//! - [`inspect`]: the production loader of the `tld` command-line tool: it
//!   creates and pins `tld_data_map` and reads any process's task local data
//!   with a generic task iterator.
//! - [`hand`]: test support for registering threads by hand (pages written
//!   byte by byte, no TLD runtime), shared by the tests of this crate and of
//!   the `tld` tool.
//!
//! Everything here needs a kernel with BPF task storage UPTRs (Linux 6.13+)
//! and BTF, and the privileges to load tracing BPF programs (root, or
//! `CAP_BPF` with `CAP_PERFMON`); see [`has_bpf_privileges`].
//!
//! TLD values are untrusted hints: whoever can write `tld_data_map` can set
//! the values of any task. The test programs treat them as such, and so
//! should every consumer.

use std::ffi::CStr;
use std::fmt;
use std::io::Read;
use std::mem::{offset_of, size_of, ManuallyDrop, MaybeUninit};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Iter, Link, MapCore, MapFlags, OpenObject, ProgramInput};

/// The skeletons libbpf-cargo generates (see build.rs), one module per
/// BPF object.
#[allow(
    clippy::all,
    dead_code,
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unused_imports,
    unsafe_op_in_unsafe_fn
)]
mod skels {
    pub(crate) mod tld_test {
        include!(concat!(env!("OUT_DIR"), "/tld_test.skel.rs"));
    }
    pub(crate) mod tld_inspect {
        include!(concat!(env!("OUT_DIR"), "/tld_inspect.skel.rs"));
    }
}

pub mod hand;
pub mod inspect;

use skels::tld_test::{types, TldTestSkel, TldTestSkelBuilder};

/// The page size the BPF programs were compiled for (`__PAGE_SIZE` in
/// `tld.bpf.h`). [`TestBpf::load`] refuses to run on a kernel whose page
/// size differs.
pub const COMPILED_PAGE_SIZE: usize = parse_usize(env!("TLD_BPF_COMPILED_PAGE_SIZE"));

/// Metadata slots [`TestBpf::dump_current`] reports at most (63 exist on
/// 4 KiB pages).
pub const DUMP_MAX_KEYS: usize = 64;

/// Bytes of each value [`KeyDump::value`] holds at most.
pub const DUMP_VALUE_MAX: usize = 64;

/// Key offsets in a [`KeyDump`] saturate at this value (past any page).
pub const DUMP_OFFSET_CAP: i32 = 0x10000;

/// Entries of the `dumps` results map (`TLD_TEST_DUMP_SLOTS`).
const DUMP_SLOTS: u32 = 1024;

const fn parse_usize(s: &str) -> usize {
    let bytes = s.as_bytes();
    let mut value = 0;
    let mut i = 0;
    while i < bytes.len() {
        assert!(
            bytes[i].is_ascii_digit(),
            "TLD_BPF_COMPILED_PAGE_SIZE is not a number"
        );
        value = value * 10 + (bytes[i] - b'0') as usize;
        i += 1;
    }
    value
}

/// Errors of this crate. Every message names the operation and the cause.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The process may not load BPF programs: it needs root, or `CAP_BPF`
    /// and `CAP_PERFMON` (or `CAP_SYS_ADMIN`).
    PermissionDenied,
    /// The running kernel lacks something these programs need.
    Unsupported(String),
    /// The kernel's page size is not the one the programs were built for.
    PageSizeMismatch {
        /// [`COMPILED_PAGE_SIZE`].
        compiled: usize,
        /// The page size of the running kernel.
        running: usize,
    },
    /// [`TestBpf::dump_tid`] found no thread with that id.
    NoSuchTask(i32),
    /// A BPF operation (libbpf or a `bpf()` system call) failed.
    Bpf {
        /// What was being done.
        op: String,
        /// What libbpf or the kernel reported.
        source: libbpf_rs::Error,
    },
    /// A test program reported an unexpected error (`-errno`).
    Program {
        /// The program's name.
        prog: &'static str,
        /// The negative errno it returned.
        err: i32,
    },
}

impl Error {
    fn bpf(op: impl Into<String>) -> impl FnOnce(libbpf_rs::Error) -> Self {
        let op = op.into();
        move |source| Error::Bpf { op, source }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::PermissionDenied => {
                f.write_str("loading TLD BPF programs needs root, or CAP_BPF and CAP_PERFMON")
            }
            Error::Unsupported(what) => write!(f, "the running kernel is not supported: {what}"),
            Error::PageSizeMismatch { compiled, running } => write!(
                f,
                "the TLD test BPF programs were built for {compiled}-byte pages but the kernel \
                 uses {running}-byte pages (rebuild with TLD_BPF_PAGE_SIZE={running})"
            ),
            Error::NoSuchTask(tid) => write!(f, "no thread with id {tid}"),
            Error::Bpf { op, source } => write!(f, "{op}: {source}"),
            Error::Program { prog, err } => write!(
                f,
                "BPF program {prog} failed: {}",
                std::io::Error::from_raw_os_error(-err)
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Bpf { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Whether the calling process has the capabilities to load the test
/// programs: `CAP_SYS_ADMIN`, or `CAP_BPF` together with `CAP_PERFMON`
/// (tracing programs and kfuncs need both), in its effective set.
pub fn has_bpf_privileges() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;

    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        // No procfs: fall back to the effective user id.
        // SAFETY: geteuid has no preconditions.
        return unsafe { libc::geteuid() } == 0;
    };
    let caps = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

/// What `read_basic` saw of the calling thread through `tld.bpf.h`.
///
/// It looks up four keys with `tld_get_data()`: `"test_static_int"` (an
/// `int`), `"test_dyn_int"` (an `int`), `"test_dyn_struct"` (32 bytes) and
/// `"test_never_created"` (an `int`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicView {
    /// The result of `tld_object_init()`: 0, `-ENODATA` when the thread has
    /// no `tld_data_map` entry, `-ENOMEM`. The other fields are `None` /
    /// `false` unless it is 0.
    pub init_err: i32,
    /// The value of `"test_static_int"`, if found.
    pub static_int: Option<i32>,
    /// The value of `"test_dyn_int"`, if found.
    pub dyn_int: Option<i32>,
    /// The value of `"test_dyn_struct"`, if found.
    pub dyn_struct: Option<[u8; 32]>,
    /// Whether `"test_never_created"` was found (it should never be).
    pub never_created_found: bool,
}

/// What `dump_task` saw of one thread, without creating anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDump {
    /// The thread has a `tld_data_map` entry. Every other field is zero or
    /// empty when it has none.
    pub registered: bool,
    /// The entry's `data` UPTR is set.
    pub has_data: bool,
    /// The entry's `meta` UPTR is set. Nothing below `start` is read
    /// without it.
    pub has_meta: bool,
    /// The entry's `start`: offset of the data area in the data page.
    pub start: u16,
    /// The metadata `cnt`, as read (garbage is reported as is).
    pub cnt: u16,
    /// The metadata `size`, as read.
    pub meta_size: u16,
    /// Slots `0..n` in order, `n` = `min(cnt, slots in a page,`
    /// [`DUMP_MAX_KEYS`]`)`, ending early at a slot of size 0.
    pub keys: Vec<KeyDump>,
    /// The walk ended at a slot of size 0 (claimed, not published yet).
    pub stopped_at_unwritten: bool,
}

/// One published metadata slot, as `dump_task` saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDump {
    /// Slot index.
    pub slot: usize,
    /// The name up to its first NUL (all 62 bytes if there is none),
    /// invalid UTF-8 replaced.
    pub name: String,
    /// The slot's size (never 0: such a slot ends the walk).
    pub size: u16,
    /// The key: the offset of the value in the data area, the sum of the
    /// slot sizes before it rounded up to 8. Saturates at
    /// [`DUMP_OFFSET_CAP`], which only garbage sizes reach.
    pub offset: i32,
    /// The whole value lies inside the data page (`start + offset + size`
    /// is at most the page size) and the data UPTR is set.
    pub in_page: bool,
    /// The first `min(size, 64)` bytes of the value when `in_page`, else
    /// empty: nothing outside the page is ever read.
    pub value: Vec<u8>,
}

/// The maps of the test object that [`TestBpf::pin_map`] can pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestMap {
    /// `tld_data_map`, the real thing (as [`TestBpf::pin_data_map`]).
    Data,
    /// `wrong_value_map`: `BPF_MAP_TYPE_TASK_STORAGE` with `BPF_F_NO_PREALLOC`
    /// and an `int` key like `tld_data_map`, but an 8-byte value.
    WrongValue,
    /// `plain_hash_map`: `BPF_MAP_TYPE_HASH`, `int` key, a 24-byte value
    /// (the size of `tld_data_map`'s), 16 entries.
    PlainHash,
}

impl TestMap {
    /// The map's name in the BPF object.
    pub fn name(self) -> &'static str {
        match self {
            TestMap::Data => "tld_data_map",
            TestMap::WrongValue => "wrong_value_map",
            TestMap::PlainHash => "plain_hash_map",
        }
    }
}

/// A loaded skeleton, with whatever else borrows its libbpf object (`T`),
/// together with the heap storage of that object, which `T` borrows for
/// `'static` and which is freed after `T` is dropped.
pub(crate) struct Loaded<T> {
    /// Borrows `object`, so it is dropped first.
    value: ManuallyDrop<T>,
    /// Heap storage for the libbpf object, freed in `drop` after `value`.
    /// Only touched there.
    object: NonNull<MaybeUninit<OpenObject>>,
}

impl<T> Loaded<T> {
    /// Runs [`preflight`], then `load` with storage for the libbpf object
    /// that lives as long as the result: `load` opens the skeleton in it,
    /// and may keep nothing borrowing it but what it returns.
    pub(crate) fn new(
        load: impl FnOnce(&'static mut MaybeUninit<OpenObject>) -> Result<T, Error>,
    ) -> Result<Self, Error> {
        preflight()?;
        let object = NonNull::from(Box::leak(Box::new(MaybeUninit::<OpenObject>::uninit())));
        // SAFETY: the storage lives until `drop` frees it, after the
        // value, or below on failure, after the failed skeleton is gone.
        let storage: &'static mut MaybeUninit<OpenObject> = unsafe { &mut *object.as_ptr() };
        match load(storage) {
            Ok(value) => Ok(Loaded {
                value: ManuallyDrop::new(value),
                object,
            }),
            Err(err) => {
                // SAFETY: load returned, so nothing borrows the storage.
                drop(unsafe { Box::from_raw(object.as_ptr()) });
                Err(err)
            }
        }
    }
}

impl<T> std::ops::Deref for Loaded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> std::ops::DerefMut for Loaded<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T> Drop for Loaded<T> {
    fn drop(&mut self) {
        // SAFETY: the value is dropped exactly once, here, before the
        // storage it borrows; `object` came from Box::leak in `new`.
        unsafe {
            ManuallyDrop::drop(&mut self.value);
            drop(Box::from_raw(self.object.as_ptr()));
        }
    }
}

/// Makes `map`, the `tld_data_map` of an object about to be loaded, reuse
/// the map pinned at `path`.
pub(crate) fn reuse_pinned_data_map(
    map: &mut libbpf_rs::OpenMapMut<'_>,
    path: &Path,
) -> Result<(), Error> {
    let op = || format!("reusing the tld_data_map pinned at {}", path.display());
    if !path.exists() {
        return Err(Error::Bpf {
            op: op(),
            source: libbpf_rs::Error::from_raw_os_error(libc::ENOENT),
        });
    }
    map.reuse_pinned_map(path).map_err(Error::bpf(op()))
}

/// Runs the task iterator behind `link` over every task and returns what it
/// wrote; `what` names it in errors.
pub(crate) fn run_iter(link: &Link, what: &str) -> Result<Vec<u8>, Error> {
    let mut iter = Iter::new(link).map_err(Error::bpf("creating a task iterator"))?;
    let mut out = Vec::new();
    iter.read_to_end(&mut out).map_err(|e| Error::Bpf {
        op: format!("running the {what} task iterator"),
        source: e.into(),
    })?;
    Ok(out)
}

/// The test programs, loaded into the kernel.
///
/// Every method takes `&self` except [`TestBpf::pin_data_map`], and may be
/// called from many threads at once.
pub struct TestBpf {
    /// The loaded skeleton. Dropped first (the link below does not need it).
    skel: Loaded<TldTestSkel<'static>>,
    /// Next `dumps` entry to use: each dump call gets its own.
    next_slot: AtomicU32,
    /// Serializes count_registered (its input and outputs are globals) and
    /// holds its iterator link once created.
    iter_link: Mutex<Option<Link>>,
}

// SAFETY: the object storage of `skel` is only touched when it is dropped;
// the skeleton is Send + Sync, the atomic and the mutex are too.
unsafe impl Send for TestBpf {}
// SAFETY: `&self` methods only issue bpf() system calls on the skeleton's
// file descriptors, and serialize the one that uses globals with a mutex.
unsafe impl Sync for TestBpf {}

impl fmt::Debug for TestBpf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestBpf").finish_non_exhaustive()
    }
}

impl TestBpf {
    /// Loads the test programs with a new, empty `tld_data_map`.
    ///
    /// # Errors
    ///
    /// [`Error::PermissionDenied`] without the capabilities of
    /// [`has_bpf_privileges`]; [`Error::Unsupported`] when the kernel has no
    /// BTF; [`Error::PageSizeMismatch`]; [`Error::Bpf`] when libbpf or the
    /// verifier rejects the object (for instance a kernel older than 6.13,
    /// without UPTRs; libbpf prints the verifier log to stderr).
    pub fn load() -> Result<Self, Error> {
        Self::open(None)
    }

    /// Loads the test programs sharing the `tld_data_map` pinned at `pinned`
    /// (by [`TestBpf::pin_data_map`], or by any loader of a map with the
    /// same definition), so that applications registering with the pinned
    /// map are visible to these programs.
    ///
    /// # Errors
    ///
    /// As [`TestBpf::load`], plus [`Error::Bpf`] when `pinned` does not hold
    /// a compatible map.
    pub fn load_reusing(pinned: &Path) -> Result<Self, Error> {
        Self::open(Some(pinned))
    }

    fn open(pinned: Option<&Path>) -> Result<Self, Error> {
        Ok(TestBpf {
            skel: Loaded::new(|storage| Self::open_skel(storage, pinned))?,
            next_slot: AtomicU32::new(0),
            iter_link: Mutex::new(None),
        })
    }

    fn open_skel(
        storage: &'static mut MaybeUninit<OpenObject>,
        pinned: Option<&Path>,
    ) -> Result<TldTestSkel<'static>, Error> {
        let mut open = TldTestSkelBuilder::default()
            .open(storage)
            .map_err(Error::bpf("opening the TLD test BPF object"))?;
        if let Some(path) = pinned {
            reuse_pinned_data_map(&mut open.maps.tld_data_map, path)?;
        }
        open.load().map_err(Error::bpf(
            "loading the TLD test BPF programs (see the libbpf log above)",
        ))
    }

    /// The file descriptor of `tld_data_map`, for registering threads
    /// (`BPF_MAP_UPDATE_ELEM` with a pidfd of the thread as the key).
    pub fn data_map_fd(&self) -> BorrowedFd<'_> {
        self.skel.maps.tld_data_map.as_fd()
    }

    /// Pins `tld_data_map` at `path` (on a bpffs, usually under
    /// `/sys/fs/bpf`), so that applications and other BPF programs (see
    /// [`TestBpf::load_reusing`]) meet at that path. The pin outlives this
    /// object: remove the file to drop it.
    ///
    /// The pin's file mode is the trust boundary: anyone who can open it
    /// for writing can set the task local data of any task.
    ///
    /// # Errors
    ///
    /// [`Error::Bpf`] when pinning fails (no bpffs there, the file exists,
    /// or the map is already pinned elsewhere).
    pub fn pin_data_map(&mut self, path: &Path) -> Result<(), Error> {
        self.skel
            .maps
            .tld_data_map
            .pin(path)
            .map_err(Error::bpf(format!(
                "pinning tld_data_map at {}",
                path.display()
            )))
    }

    /// Pins one of the object's maps at `path` (on a bpffs), with the
    /// `BPF_OBJ_PIN` system call on its fd. Unlike
    /// [`TestBpf::pin_data_map`], the same map may be pinned at several
    /// paths. The pin outlives this object: remove the file to drop it.
    ///
    /// [`TestMap::WrongValue`] and [`TestMap::PlainHash`] are not
    /// `tld_data_map`s: they exist so that tests can check how user space
    /// refuses them.
    ///
    /// # Errors
    ///
    /// [`Error::Bpf`] when pinning fails (no bpffs there, the file exists).
    pub fn pin_map(&self, which: TestMap, path: &Path) -> Result<(), Error> {
        let maps = &self.skel.maps;
        let fd = match which {
            TestMap::Data => maps.tld_data_map.as_fd(),
            TestMap::WrongValue => maps.wrong_value_map.as_fd(),
            TestMap::PlainHash => maps.plain_hash_map.as_fd(),
        };
        obj_pin(fd, path).map_err(Error::bpf(format!(
            "pinning {} at {}",
            which.name(),
            path.display()
        )))
    }

    /// The file descriptor of one of the object's maps.
    pub fn map_fd(&self, which: TestMap) -> BorrowedFd<'_> {
        let maps = &self.skel.maps;
        match which {
            TestMap::Data => maps.tld_data_map.as_fd(),
            TestMap::WrongValue => maps.wrong_value_map.as_fd(),
            TestMap::PlainHash => maps.plain_hash_map.as_fd(),
        }
    }

    /// Pins the `dump_task` program at `path` (on a bpffs): a pinned BPF
    /// object that is not a map. The pin outlives this object: remove the
    /// file to drop it.
    ///
    /// # Errors
    ///
    /// [`Error::Bpf`] when pinning fails (no bpffs there, the file exists).
    pub fn pin_program(&self, path: &Path) -> Result<(), Error> {
        obj_pin(self.skel.progs.dump_task.as_fd(), path).map_err(Error::bpf(format!(
            "pinning the dump_task program at {}",
            path.display()
        )))
    }

    /// Runs `read_basic` on the calling thread (`BPF_PROG_TEST_RUN` runs a
    /// syscall program in the caller's context) and returns what it saw.
    ///
    /// Its key cache (`tld_key_map`) belongs to the calling thread and
    /// persists between calls, so a second call exercises the cached path.
    ///
    /// # Errors
    ///
    /// [`Error::Bpf`] when the test run fails. A thread without task local
    /// data is not an error: [`BasicView::init_err`] is then `-ENODATA`.
    pub fn read_basic(&self) -> Result<BasicView, Error> {
        let mut ctx = types::basic_ctx::default();
        Self::run("read_basic", &self.skel.progs.read_basic, &mut ctx)?;

        let found = |flag: u8| flag != 0;
        let mut dyn_struct = [0u8; 32];
        for (chunk, word) in dyn_struct.chunks_exact_mut(8).zip(ctx.dyn_struct) {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        Ok(BasicView {
            init_err: ctx.init_err,
            static_int: found(ctx.found_static_int).then_some(ctx.static_int),
            dyn_int: found(ctx.found_dyn_int).then_some(ctx.dyn_int),
            dyn_struct: found(ctx.found_dyn_struct).then_some(dyn_struct),
            never_created_found: found(ctx.found_never_created),
        })
    }

    /// Runs `dump_task` on the calling thread.
    ///
    /// # Errors
    ///
    /// [`Error::Bpf`] when the test run or reading its result fails.
    pub fn dump_current(&self) -> Result<TaskDump, Error> {
        self.dump(0)
    }

    /// Runs `dump_task` on the thread `tid` (as `gettid()` returns it in the
    /// caller's pid namespace), of any process; 0 means the calling thread.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchTask`] when no such thread exists; [`Error::Bpf`] when
    /// the test run or reading its result fails.
    pub fn dump_tid(&self, tid: i32) -> Result<TaskDump, Error> {
        self.dump(tid)
    }

    fn dump(&self, tid: i32) -> Result<TaskDump, Error> {
        // Concurrent callers get distinct entries (until 1024 are in flight).
        let slot = self.next_slot.fetch_add(1, Ordering::Relaxed) % DUMP_SLOTS;
        let mut ctx = types::dump_ctx {
            tid,
            slot,
            ..Default::default()
        };
        Self::run("dump_task", &self.skel.progs.dump_task, &mut ctx)?;
        match ctx.err {
            0 => {}
            err if err == -libc::ESRCH => return Err(Error::NoSuchTask(tid)),
            err => {
                return Err(Error::Program {
                    prog: "dump_task",
                    err,
                })
            }
        }

        let bytes = self
            .skel
            .maps
            .dumps
            .lookup(&slot.to_ne_bytes(), MapFlags::ANY)
            .map_err(Error::bpf("reading the dump_task result"))?
            .ok_or_else(|| Error::Bpf {
                op: "reading the dump_task result".into(),
                source: libbpf_rs::Error::from_raw_os_error(libc::ENOENT),
            })?;
        let dump: types::task_dump = from_bytes(&bytes);
        Ok(task_dump_from(&dump))
    }

    /// Counts the threads of process `tgid` with a `tld_data_map` entry, by
    /// running the `count_registered` task iterator over every task.
    ///
    /// Returns `(registered, threads)`: threads of `tgid` with an entry, and
    /// all threads of `tgid` seen. Calls are serialized.
    ///
    /// # Errors
    ///
    /// [`Error::Bpf`] when attaching, reading or the global variables fail.
    pub fn count_registered(&self, tgid: i32) -> Result<(usize, usize), Error> {
        let mut link = self
            .iter_link
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if link.is_none() {
            *link = Some(
                self.skel
                    .progs
                    .count_registered
                    .attach()
                    .map_err(Error::bpf("attaching the count_registered task iterator"))?,
            );
        }
        let link = link.as_ref().expect("set above");

        // The globals live in the .bss map's single entry; its generated
        // struct has private padding, so go through byte offsets.
        let bss = &self.skel.maps.bss;
        let zero = 0u32.to_ne_bytes();
        let mut input = vec![0u8; size_of::<types::bss>()];
        input[offset_of!(types::bss, target_tgid)..][..4].copy_from_slice(&tgid.to_ne_bytes());
        bss.update(&zero, &input, MapFlags::ANY)
            .map_err(Error::bpf("setting count_registered's target_tgid"))?;

        // The program prints nothing: reading to EOF just runs it over
        // every task.
        run_iter(link, "count_registered")?;

        let bytes = bss
            .lookup(&zero, MapFlags::ANY)
            .map_err(Error::bpf("reading count_registered's counters"))?
            .ok_or_else(|| Error::Bpf {
                op: "reading count_registered's counters".into(),
                source: libbpf_rs::Error::from_raw_os_error(libc::ENOENT),
            })?;
        let counter = |offset: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[offset..offset + 8]);
            u64::from_ne_bytes(word) as usize
        };
        Ok((
            counter(offset_of!(types::bss, registered_tasks)),
            counter(offset_of!(types::bss, total_tasks)),
        ))
    }

    /// Runs a syscall program with `ctx` as its context; the kernel copies
    /// the context back, so `ctx` holds what the program wrote.
    fn run<T: Copy>(
        name: &str,
        prog: &libbpf_rs::ProgramMut<'_>,
        ctx: &mut T,
    ) -> Result<(), Error> {
        // SAFETY: T is one of the skeleton's plain-data context structs,
        // without implicit padding, for which any byte pattern is valid.
        let bytes =
            unsafe { std::slice::from_raw_parts_mut((ctx as *mut T).cast::<u8>(), size_of::<T>()) };
        let input = ProgramInput {
            context_in: Some(bytes),
            ..Default::default()
        };
        prog.test_run(input)
            .map_err(Error::bpf(format!("running {name}")))?;
        Ok(())
    }
}

/// Privileges, kernel BTF and page size: what every loader here needs.
pub(crate) fn preflight() -> Result<(), Error> {
    if !has_bpf_privileges() {
        return Err(Error::PermissionDenied);
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(Error::Unsupported(
            "no kernel BTF at /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF=y is needed)".into(),
        ));
    }
    // SAFETY: sysconf has no preconditions.
    let running = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    if running != COMPILED_PAGE_SIZE {
        return Err(Error::PageSizeMismatch {
            compiled: COMPILED_PAGE_SIZE,
            running,
        });
    }
    Ok(())
}

/// `BPF_OBJ_PIN` of `fd` at `path`.
fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> Result<(), libbpf_rs::Error> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;

    let cpath = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| libbpf_rs::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a valid fd and a NUL-terminated path that outlives the call.
    let ret = unsafe { libbpf_rs::libbpf_sys::bpf_obj_pin(fd.as_raw_fd(), cpath.as_ptr()) };
    if ret < 0 {
        return Err(libbpf_rs::Error::from_raw_os_error(-ret));
    }
    Ok(())
}

/// A skeleton plain-data struct from bytes the kernel returned.
fn from_bytes<T: Copy + Default>(bytes: &[u8]) -> T {
    let mut value = T::default();
    let n = bytes.len().min(size_of::<T>());
    // SAFETY: integers and arrays of them accept any byte pattern, and at
    // most size_of::<T>() bytes are written.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), (&mut value as *mut T).cast::<u8>(), n);
    }
    value
}

fn task_dump_from(dump: &types::task_dump) -> TaskDump {
    let nr_keys = usize::from(dump.nr_keys).min(DUMP_MAX_KEYS);
    let keys = dump.keys[..nr_keys]
        .iter()
        .enumerate()
        .map(|(slot, key)| {
            let raw: Vec<u8> = key.name.iter().map(|&c| c as u8).collect();
            let name = match CStr::from_bytes_until_nul(&raw) {
                Ok(cstr) => cstr.to_string_lossy().into_owned(),
                Err(_) => String::from_utf8_lossy(&raw).into_owned(),
            };
            let len = usize::from(key.value_len).min(DUMP_VALUE_MAX);
            KeyDump {
                slot,
                name,
                size: key.size,
                offset: key.offset as i32,
                in_page: key.in_page != 0,
                value: if key.in_page != 0 {
                    key.value[..len].to_vec()
                } else {
                    Vec::new()
                },
            }
        })
        .collect();
    TaskDump {
        registered: dump.registered != 0,
        has_data: dump.has_data != 0,
        has_meta: dump.has_meta != 0,
        start: dump.start,
        cnt: dump.cnt,
        meta_size: dump.meta_size,
        keys,
        stopped_at_unwritten: dump.stopped_at_unwritten != 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The skeleton's types are generated from the object's BTF; check them
    /// against the wire sizes the C side asserts or documents.
    #[test]
    fn wire_sizes_match_the_bpf_object() {
        assert_eq!(size_of::<types::tld_map_value>(), 24);
        assert_eq!(size_of::<types::tld_metadata>(), 64);
        assert_eq!(size_of::<types::tld_data_u>(), COMPILED_PAGE_SIZE);
        assert_eq!(
            size_of::<types::tld_meta_u>(),
            4 + 64 * (COMPILED_PAGE_SIZE / 64 - 1)
        );
        assert_eq!(offset_of!(types::tld_map_value, start), 16);
        assert_eq!(offset_of!(types::tld_meta_u, metadata), 4);
        assert_eq!(size_of::<types::tld_test_key_dump>(), 136);
        assert_eq!(size_of::<types::task_dump>(), 16 + DUMP_MAX_KEYS * 136);
        assert_eq!(size_of::<types::basic_ctx>(), 48);
        assert_eq!(size_of::<types::dump_ctx>(), 16);
    }

    #[test]
    fn compiled_page_size_is_sane() {
        assert!(COMPILED_PAGE_SIZE.is_power_of_two() && COMPILED_PAGE_SIZE >= 4096);
    }
}
