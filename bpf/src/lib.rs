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
//!   threads of a process with a task iterator. Built for either map layout
//!   ([`Layout`]).
//! - [`upstream`]: a reader of the 16-byte layout that works the way the BPF
//!   side of upstream's library does, with key names and sizes chosen at
//!   run time.
//! - [`inspect`]: the production loader of the `tld` command-line tool: it
//!   creates and pins `tld_data_map` and reads any process's task local data
//!   with a generic task iterator; [`top`]: the `tld top` program, on
//!   `sched_switch`.
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
use std::mem::{offset_of, size_of};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use libbpf_rs::{Iter, Link, MapCore, MapFlags, Object, ObjectBuilder, OpenObject, ProgramInput};

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
    pub(crate) mod tld_top {
        include!(concat!(env!("OUT_DIR"), "/tld_top.skel.rs"));
    }
    pub(crate) mod tld_bench {
        include!(concat!(env!("OUT_DIR"), "/tld_bench.skel.rs"));
    }
    pub(crate) mod tld_upstream16 {
        include!(concat!(env!("OUT_DIR"), "/tld_upstream16.skel.rs"));
    }
}

/// The compiled BPF objects (see build.rs), loaded through libbpf's object
/// API so that one loader serves both builds of a source. The skeletons
/// above provide the types of their records, which both builds share.
pub(crate) mod objects {
    macro_rules! object {
        ($name:literal) => {
            include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".bpf.o"))
        };
    }
    pub(crate) static TEST: &[u8] = object!("tld_test");
    pub(crate) static TEST16: &[u8] = object!("tld_test16");
    pub(crate) static TEST_CLANG_UPSTREAM: &[u8] = object!("tld_test_clang_upstream");
    pub(crate) static INSPECT: &[u8] = object!("tld_inspect");
    pub(crate) static INSPECT16: &[u8] = object!("tld_inspect16");
    pub(crate) static TOP: &[u8] = object!("tld_top");
    pub(crate) static TOP16: &[u8] = object!("tld_top16");
    pub(crate) static BENCH: &[u8] = object!("tld_bench");
    pub(crate) static UPSTREAM16: &[u8] = object!("tld_upstream16");
}

pub mod bench;
pub mod hand;
pub mod inspect;
pub mod top;
pub mod upstream;

use skels::tld_test::types;

/// The page size the BPF programs were compiled for (`__PAGE_SIZE` in
/// `tld.bpf.h`). [`TestBpf::load`] refuses to run on a kernel whose page
/// size differs.
pub const COMPILED_PAGE_SIZE: usize = parse_usize(env!("TLD_BPF_COMPILED_PAGE_SIZE"));

/// The layout of a `tld_data_map`'s value (DESIGN.md §2.3, §2.4), chosen
/// per map by its value size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Layout {
    /// 24 bytes: `data`, `meta`, `u16 start` (tld's default).
    #[default]
    Value24,
    /// 16 bytes: `data`, `meta`; `start` is the u64 at offset 0 of the data
    /// page (upstream's layout in the Linux tree).
    Value16,
}

impl Layout {
    /// The map's value size in bytes.
    pub fn value_size(self) -> u32 {
        match self {
            Layout::Value24 => 24,
            Layout::Value16 => 16,
        }
    }

    /// The layout of a map whose value has `size` bytes, if any.
    pub fn from_value_size(size: u32) -> Option<Layout> {
        match size {
            24 => Some(Layout::Value24),
            16 => Some(Layout::Value16),
            _ => None,
        }
    }

    /// The layout of the map behind `fd`, by its value size.
    ///
    /// # Errors
    ///
    /// [`Error::Bpf`] when the map's info cannot be read or its value size
    /// is neither 24 nor 16 (`EINVAL`).
    pub fn of_map(fd: BorrowedFd<'_>) -> Result<Layout, Error> {
        let info = libbpf_rs::MapInfo::new(fd).map_err(Error::bpf("reading a map's info"))?;
        Layout::from_value_size(info.info.value_size).ok_or_else(|| Error::Bpf {
            op: format!(
                "map {:?} has a {}-byte value, neither tld layout (24 or 16 bytes)",
                info.name().unwrap_or("?"),
                info.info.value_size
            ),
            source: libbpf_rs::Error::from_raw_os_error(libc::EINVAL),
        })
    }

    /// The layout of the map pinned at `path`.
    ///
    /// # Errors
    ///
    /// As [`Layout::of_map`], and [`Error::Bpf`] when nothing is pinned there.
    pub fn of_pinned(path: &Path) -> Result<Layout, Error> {
        let map = libbpf_rs::MapHandle::from_pinned_path(path)
            .map_err(Error::bpf(format!("opening the map pinned at {}", path.display())))?;
        Layout::of_map(map.as_fd())
    }
}

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
    /// Whether `"test_dyn_int"` (4 bytes) was returned when 8 bytes were
    /// asked, by a search or through the key cached for 4 bytes (it must
    /// never be: DESIGN.md §2.6 step 4).
    pub too_big_found: bool,
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
    /// The entry's `start`: offset of the data area in the data page (for a
    /// 16-byte map, the u64 at offset 0 of the data page, reported as the
    /// page size when it lies past it).
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
    /// The metadata page carries an exec stamp that is not the thread's
    /// current `mm->arg_start`: the entry belongs to an image the thread
    /// replaced with `execve` (DESIGN.md §5.5), and nothing was walked.
    pub stale: bool,
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

/// Opens the BPF object `bytes` (`what` names it in errors), lets
/// `configure` set it up (reuse a map, set read-only data, switch programs
/// off), and loads it.
pub(crate) fn load_object(
    bytes: &[u8],
    what: &str,
    configure: impl FnOnce(&mut OpenObject) -> Result<(), Error>,
) -> Result<Object, Error> {
    preflight()?;
    let mut open = ObjectBuilder::default()
        .open_memory(bytes)
        .map_err(Error::bpf(format!("opening the {what} BPF object")))?;
    configure(&mut open)?;
    open.load().map_err(Error::bpf(format!(
        "loading the {what} BPF programs (TLD_DEBUG=1 or the libbpf log shows the verifier's reasons)"
    )))
}

/// The map `name` of an open object.
pub(crate) fn open_map<'a>(
    open: &'a mut OpenObject,
    name: &str,
) -> Result<libbpf_rs::OpenMapMut<'a>, Error> {
    open.maps_mut()
        .find(|m| m.name() == name || m.name().to_str().is_some_and(|n| n.ends_with(name)))
        .ok_or_else(|| Error::Unsupported(format!("the BPF object has no map {name}")))
}

/// The read-only data (`.rodata`) of an open object, as its skeleton type.
pub(crate) fn with_rodata<T: Copy>(
    open: &mut OpenObject,
    set: impl FnOnce(&mut T),
) -> Result<(), Error> {
    let mut map = open_map(open, ".rodata")?;
    let bytes = map
        .initial_value_mut()
        .ok_or_else(|| Error::Unsupported("the BPF object has no .rodata".into()))?;
    let mut value: T = from_bytes(bytes);
    set(&mut value);
    // SAFETY: T is a skeleton's plain-data struct for this section.
    let raw = unsafe { std::slice::from_raw_parts((&value as *const T).cast::<u8>(), size_of::<T>()) };
    let n = raw.len().min(bytes.len());
    bytes[..n].copy_from_slice(&raw[..n]);
    Ok(())
}

/// The map `name` of a loaded object (one of ours: it exists).
pub(crate) fn map<'a>(obj: &'a Object, name: &str) -> libbpf_rs::Map<'a> {
    obj.maps()
        .find(|m| m.name() == name || m.name().to_str().is_some_and(|n| n.ends_with(name)))
        .unwrap_or_else(|| panic!("the BPF object has no map {name}"))
}

/// The program `name` of a loaded object (one of ours: it exists).
pub(crate) fn prog<'a>(obj: &'a Object, name: &str) -> libbpf_rs::ProgramMut<'a> {
    obj.progs_mut()
        .find(|p| p.name() == name)
        .unwrap_or_else(|| panic!("the BPF object has no program {name}"))
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

/// Where a loader finds its `tld_data_map`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DataMap<'a> {
    /// A new map of its own.
    Own,
    /// The map pinned at this path.
    Pinned(&'a Path),
    /// The map behind this fd.
    Fd(BorrowedFd<'a>),
}

impl DataMap<'_> {
    /// Points the open object's `tld_data_map` at this map.
    pub(crate) fn apply(self, open: &mut OpenObject) -> Result<(), Error> {
        let mut map = open_map(open, "tld_data_map")?;
        match self {
            DataMap::Own => Ok(()),
            DataMap::Pinned(path) => reuse_pinned_data_map(&mut map, path),
            DataMap::Fd(fd) => map
                .reuse_fd(fd)
                .map_err(Error::bpf("reusing a tld_data_map by fd")),
        }
    }

    /// The layout of this map, or `own` for a new one.
    pub(crate) fn layout(self, own: Layout) -> Result<Layout, Error> {
        match self {
            DataMap::Own => Ok(own),
            DataMap::Pinned(path) => Layout::of_pinned(path),
            DataMap::Fd(fd) => Layout::of_map(fd),
        }
    }
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

/// Runs the syscall program `prog` with `ctx` as its context; the kernel
/// copies the context back, so `ctx` holds what the program wrote.
pub(crate) fn run_syscall<T: Copy>(obj: &Object, name: &str, ctx: &mut T) -> Result<(), Error> {
    // SAFETY: T is one of the skeletons' plain-data context structs,
    // without implicit padding, for which any byte pattern is valid.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut((ctx as *mut T).cast::<u8>(), size_of::<T>()) };
    let input = ProgramInput {
        context_in: Some(bytes),
        ..Default::default()
    };
    prog(obj, name)
        .test_run(input)
        .map_err(Error::bpf(format!("running {name}")))?;
    Ok(())
}

/// The test programs, loaded into the kernel.
///
/// Every method but [`TestBpf::pin_data_map`] takes `&self`, and may be
/// called from many threads at once.
pub struct TestBpf {
    /// The loaded object. Dropped after the link below (field order).
    iter_link: Mutex<Option<Link>>,
    obj: Object,
    layout: Layout,
    /// Next `dumps` entry to use: each dump call gets its own.
    next_slot: AtomicU32,
}

impl fmt::Debug for TestBpf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestBpf")
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl TestBpf {
    /// Loads the test programs with a new, empty `tld_data_map` of the
    /// 24-byte layout.
    ///
    /// # Errors
    ///
    /// [`Error::PermissionDenied`] without the capabilities of
    /// [`has_bpf_privileges`]; [`Error::Unsupported`] when the kernel has no
    /// BTF; [`Error::PageSizeMismatch`]; [`Error::Bpf`] when libbpf or the
    /// verifier rejects the object (for instance a kernel older than 6.13,
    /// without UPTRs; libbpf prints the verifier log to stderr).
    pub fn load() -> Result<Self, Error> {
        Self::open(DataMap::Own, Layout::Value24)
    }

    /// Loads the test programs built for `layout` (`tld.bpf.h` with or
    /// without `TLD_MAP_VALUE_16`), with a new, empty `tld_data_map` of
    /// that layout.
    ///
    /// # Errors
    ///
    /// As [`TestBpf::load`].
    pub fn load_layout(layout: Layout) -> Result<Self, Error> {
        Self::open(DataMap::Own, layout)
    }

    /// Loads the test programs sharing the `tld_data_map` pinned at `pinned`
    /// (by [`TestBpf::pin_data_map`], `tld pin`, or any loader of a map with
    /// the same definition), built for that map's layout, so that
    /// applications registering with the pinned map are visible to these
    /// programs.
    ///
    /// # Errors
    ///
    /// As [`TestBpf::load`], plus [`Error::Bpf`] when `pinned` does not hold
    /// a compatible map.
    pub fn load_reusing(pinned: &Path) -> Result<Self, Error> {
        let target = DataMap::Pinned(pinned);
        Self::open(target, target.layout(Layout::Value24)?)
    }

    /// Loads the test programs sharing the `tld_data_map` behind `fd` (for
    /// instance an [`upstream::UpstreamReader`]'s 16-byte map), built for
    /// that map's layout.
    ///
    /// # Errors
    ///
    /// As [`TestBpf::load_reusing`].
    pub fn load_reusing_fd(fd: BorrowedFd<'_>) -> Result<Self, Error> {
        let target = DataMap::Fd(fd);
        Self::open(target, target.layout(Layout::Value24)?)
    }

    /// Loads the test programs (24-byte layout, a new map) as clang >= 15
    /// compiled them (`CLANG_UPSTREAM` in the build, `clang-19` by
    /// default), where the other loaders use clang 14's build: `tld.bpf.h`
    /// is checked with both compilers.
    ///
    /// # Errors
    ///
    /// As [`TestBpf::load`].
    pub fn load_built_by_newer_clang() -> Result<Self, Error> {
        Self::open_object(
            objects::TEST_CLANG_UPSTREAM,
            "TLD test (clang >= 15)",
            DataMap::Own,
            Layout::Value24,
        )
    }

    fn open(target: DataMap<'_>, layout: Layout) -> Result<Self, Error> {
        let (bytes, what) = match layout {
            Layout::Value24 => (objects::TEST, "TLD test"),
            Layout::Value16 => (objects::TEST16, "TLD test (16-byte layout)"),
        };
        Self::open_object(bytes, what, target, layout)
    }

    fn open_object(
        bytes: &[u8],
        what: &str,
        target: DataMap<'_>,
        layout: Layout,
    ) -> Result<Self, Error> {
        let obj = load_object(bytes, what, |open| target.apply(open))?;
        Ok(TestBpf {
            iter_link: Mutex::new(None),
            obj,
            layout,
            next_slot: AtomicU32::new(0),
        })
    }

    /// The layout the programs were built for, and of their `tld_data_map`.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The file descriptor of `tld_data_map`, for registering threads
    /// (`BPF_MAP_UPDATE_ELEM` with a pidfd of the thread as the key).
    pub fn data_map_fd(&self) -> BorrowedFd<'_> {
        self.map_fd(TestMap::Data)
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
    /// [`Error::Bpf`] when pinning fails (no bpffs there, the file exists).
    pub fn pin_data_map(&mut self, path: &Path) -> Result<(), Error> {
        self.pin_map(TestMap::Data, path)
    }

    /// Pins one of the object's maps at `path` (on a bpffs), with the
    /// `BPF_OBJ_PIN` system call on its fd; the same map may be pinned at
    /// several paths. The pin outlives this object: remove the file to drop
    /// it.
    ///
    /// [`TestMap::WrongValue`] and [`TestMap::PlainHash`] are not
    /// `tld_data_map`s: they exist so that tests can check how user space
    /// refuses them.
    ///
    /// # Errors
    ///
    /// [`Error::Bpf`] when pinning fails (no bpffs there, the file exists).
    pub fn pin_map(&self, which: TestMap, path: &Path) -> Result<(), Error> {
        obj_pin(self.map_fd(which), path).map_err(Error::bpf(format!(
            "pinning {} at {}",
            which.name(),
            path.display()
        )))
    }

    /// The file descriptor of one of the object's maps.
    pub fn map_fd(&self, which: TestMap) -> BorrowedFd<'_> {
        let m = map(&self.obj, which.name());
        // SAFETY: the fd belongs to the object, which `self` owns and which
        // outlives the borrow.
        unsafe { BorrowedFd::borrow_raw(std::os::fd::AsRawFd::as_raw_fd(&m.as_fd())) }
    }

    /// Pins the `dump_task` program at `path` (on a bpffs): a pinned BPF
    /// object that is not a map. The pin outlives this object: remove the
    /// file to drop it.
    ///
    /// # Errors
    ///
    /// [`Error::Bpf`] when pinning fails (no bpffs there, the file exists).
    pub fn pin_program(&self, path: &Path) -> Result<(), Error> {
        obj_pin(prog(&self.obj, "dump_task").as_fd(), path).map_err(Error::bpf(format!(
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
        run_syscall(&self.obj, "read_basic", &mut ctx)?;

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
            too_big_found: found(ctx.found_too_big) || found(ctx.found_dyn_int_as_8),
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
        run_syscall(&self.obj, "dump_task", &mut ctx)?;
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

        let bytes = map(&self.obj, "dumps")
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
                prog(&self.obj, "count_registered")
                    .attach()
                    .map_err(Error::bpf("attaching the count_registered task iterator"))?,
            );
        }
        let link = link.as_ref().expect("set above");

        // The globals live in the .bss map's single entry; its generated
        // struct has private padding, so go through byte offsets.
        let bss = map(&self.obj, ".bss");
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
pub(crate) fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> Result<(), libbpf_rs::Error> {
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

/// A skeleton plain-data struct from bytes the kernel returned (zero
/// beyond them).
pub(crate) fn from_bytes<T: Copy>(bytes: &[u8]) -> T {
    // SAFETY: the skeletons' structs are integers and arrays of them, for
    // which zero and any byte pattern are valid; at most size_of::<T>()
    // bytes are written.
    unsafe {
        let mut value: T = std::mem::zeroed();
        let n = bytes.len().min(size_of::<T>());
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), (&mut value as *mut T).cast::<u8>(), n);
        value
    }
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
        stale: dump.stale != 0,
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
        assert_eq!(size_of::<types::tld_meta_u>(), COMPILED_PAGE_SIZE);
        assert_eq!(offset_of!(types::tld_map_value, start), 16);
        assert_eq!(offset_of!(types::tld_meta_u, metadata), 4);
        assert_eq!(
            offset_of!(types::tld_meta_u, stamp_magic),
            COMPILED_PAGE_SIZE - 16
        );
        assert_eq!(
            offset_of!(types::tld_meta_u, exec_stamp),
            COMPILED_PAGE_SIZE - 8
        );
        assert_eq!(size_of::<types::tld_test_key_dump>(), 136);
        assert_eq!(size_of::<types::task_dump>(), 16 + DUMP_MAX_KEYS * 136);
        assert_eq!(size_of::<types::basic_ctx>(), 56);
        assert_eq!(size_of::<types::dump_ctx>(), 16);
    }

    #[test]
    fn compiled_page_size_is_sane() {
        assert!(COMPILED_PAGE_SIZE.is_power_of_two() && COMPILED_PAGE_SIZE >= 4096);
    }
}
