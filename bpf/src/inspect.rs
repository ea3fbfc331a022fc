//! The production loader behind the `tld` command-line tool: creates and
//! pins `tld_data_map` (either layout, [`Layout`]), probes the kernel for
//! UPTR support, and reads the task local data of live threads with the
//! `tld_inspect` task iterator (`src/bpf/tld_inspect.bpf.c`, built once per
//! layout; the loader picks the build matching the pinned map).
//!
//! The iterator reuses the pinned map, walks each registered thread's
//! metadata and data pages through the UPTRs of its map value, with no key
//! name compiled in, and writes records that [`Inspector::scan`] parses.
//! It treats what it reads as untrusted: a `cnt` beyond the slot count is
//! clamped ([`ThreadView::cnt_clamped`]), a slot still being written (size 0)
//! ends the walk ([`ThreadView::unwritten_slot`]), a value running past the
//! data page is reported without its bytes ([`KeyView::in_page`]), and an
//! entry an `execve` left behind is reported as stale without its keys
//! ([`ThreadView::stale`]). Nothing outside the two pinned pages is read.
//!
//! Thread and process ids are those of the initial pid namespace.

use std::ffi::CStr;
use std::fmt;
use std::mem::size_of;
use std::os::fd::AsFd;
use std::path::Path;

use libbpf_rs::{Link, Object};

use crate::skels::tld_inspect::types;
use crate::{
    from_bytes, load_object, objects, obj_pin, prog, run_iter, with_rodata, DataMap,
    Error, Layout,
};

/// Bytes of a value the iterator copies out at most; longer values are
/// reported truncated ([`KeyView::truncated`]).
pub const VALUE_MAX: usize = 64;

/// Bytes of the value of [`Filter::full_key`] the iterator copies out at most.
pub const FULL_MAX: usize = 640;

const KIND_KEY: u32 = 1;
const KIND_TASK: u32 = 2;
const KIND_FULL: u32 = 3;
const HAS_DATA: u32 = 0x1;
const HAS_META: u32 = 0x2;
const CNT_CLAMPED: u32 = 0x4;
const UNWRITTEN: u32 = 0x8;
const STALE: u32 = 0x10;

/// One published key of one thread, as BPF sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyView {
    /// Slot index in the metadata page.
    pub slot: u16,
    /// The name up to its first NUL (all 62 bytes if there is none),
    /// invalid UTF-8 replaced.
    pub name: String,
    /// The slot's size in bytes (never 0).
    pub size: u16,
    /// The key: offset of the value in the thread's data area (sum of the
    /// earlier sizes rounded up to 8), saturating at 0x10000.
    pub offset: u32,
    /// The whole value lies inside the thread's data page (and the data
    /// UPTR is set). When false, [`KeyView::value`] is empty: the value
    /// was skipped, not read.
    pub in_page: bool,
    /// The first `min(size, VALUE_MAX)` bytes of the value when `in_page`
    /// (`min(size, FULL_MAX)` for the key [`Filter::full_key`] names).
    pub value: Vec<u8>,
}

impl KeyView {
    /// `value` holds fewer bytes than `size` (the value is longer than
    /// [`VALUE_MAX`]).
    pub fn truncated(&self) -> bool {
        self.in_page && self.value.len() < usize::from(self.size)
    }
}

/// One thread with a `tld_data_map` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadView {
    /// Process id.
    pub tgid: i32,
    /// Thread id.
    pub tid: i32,
    /// The kernel's `comm` of the thread.
    pub comm: String,
    /// The map value's `data` UPTR is set.
    pub has_data: bool,
    /// The map value's `meta` UPTR is set (nothing is walked without it).
    pub has_meta: bool,
    /// The data area's offset in the data page: the map value's `start`,
    /// or for a 16-byte map the u64 at offset 0 of the data page (reported
    /// as the page size when it lies past the page).
    pub start: u16,
    /// The metadata `cnt`, as the map's layout reads it (a u8 for 16-byte
    /// maps).
    pub cnt: u16,
    /// The metadata `size`, raw.
    pub meta_size: u16,
    /// Slots in a metadata page (`P / 64 - 1`).
    pub max_slots: u16,
    /// `cnt` exceeded `max_slots`: only `max_slots` slots were walked.
    pub cnt_clamped: bool,
    /// The walk stopped at this slot, of size 0 (claimed, not yet published
    /// or garbage): it and every later slot were skipped.
    pub unwritten_slot: Option<u16>,
    /// The metadata page carries an exec stamp other than the thread's
    /// current `mm->arg_start`: the entry belongs to an image the thread
    /// replaced with `execve` (DESIGN.md §5.5). Nothing was walked: its
    /// keys and values are not the thread's.
    pub stale: bool,
    /// Number of published slots walked.
    pub nr_keys: u16,
    /// The published keys in slot order (empty when the inspector was
    /// opened without keys).
    pub keys: Vec<KeyView>,
}

/// Which threads [`Inspector`] reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only threads of this process (0: every process).
    pub tgid: i32,
    /// Only this thread (0: every thread).
    pub tid: i32,
    /// Report keys and values, not only the threads.
    pub keys: bool,
    /// A key whose values are copied whole, up to [`FULL_MAX`] bytes rather
    /// than [`VALUE_MAX`] (`tld dump` names `otel.thread_ctx_v1`); None:
    /// none. Names longer than 61 bytes match nothing.
    pub full_key: Option<&'static str>,
}

/// The `tld_inspect` build for `layout`.
fn inspect_object(layout: Layout) -> &'static [u8] {
    match layout {
        Layout::Value24 => objects::INSPECT,
        Layout::Value16 => objects::INSPECT16,
    }
}

/// Loads the `tld_inspect` object of `layout` with its program switched
/// off, so that loading only creates the maps.
fn maps_only(layout: Layout) -> Result<Object, Error> {
    load_object(inspect_object(layout), "tld_inspect", |open| {
        for mut p in open.progs_mut() {
            p.set_autoload(false);
        }
        Ok(())
    })
}

/// Creates a new `tld_data_map` of `layout` (the definition of
/// `tld.bpf.h`, with its UPTR BTF describing full pages) and pins it at
/// `path`, whose directory must exist on a bpffs. The pin gets the default
/// mode; change it with `chmod`.
///
/// # Errors
///
/// [`Error::PermissionDenied`] without privileges; [`Error::Bpf`] when the
/// kernel refuses the map (no UPTR support: Linux 6.13+ is needed; the `op`
/// then starts with "creating") or the pin (the path exists, or is not on a
/// bpffs; the `op` starts with "pinning").
pub fn create_pinned_map(path: &Path, layout: Layout) -> Result<(), Error> {
    let obj = maps_only(layout).map_err(|e| match e {
        Error::Bpf { source, .. } => Error::Bpf {
            op: format!("creating a {}-byte tld_data_map", layout.value_size()),
            source,
        },
        other => other,
    })?;
    let map = crate::map(&obj, "tld_data_map");
    obj_pin(map.as_fd(), path).map_err(Error::bpf(format!(
        "pinning tld_data_map at {}",
        path.display()
    )))
}

/// Checks that the kernel can create a `tld_data_map` (task storage whose
/// value holds UPTRs, Linux 6.13+) by creating one, and dropping it.
///
/// # Errors
///
/// [`Error::PermissionDenied`] without privileges; [`Error::Bpf`] when the
/// kernel refuses the map.
pub fn probe_uptr() -> Result<(), Error> {
    maps_only(Layout::Value24).map(drop).map_err(|e| match e {
        Error::Bpf { source, .. } => Error::Bpf {
            op: "creating a task storage map with UPTRs".into(),
            source,
        },
        other => other,
    })
}

/// The `tld_inspect` iterator, loaded against a pinned `tld_data_map` and
/// attached; [`Inspector::scan`] runs it.
pub struct Inspector {
    /// Dropped before the object (field order).
    link: Link,
    _obj: Object,
    layout: Layout,
}

impl fmt::Debug for Inspector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inspector")
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl Inspector {
    /// Loads the iterator sharing the `tld_data_map` pinned at `pinned`
    /// (libbpf's reuse of a pinned map), built for that map's layout,
    /// reporting the threads `filter` selects.
    ///
    /// # Errors
    ///
    /// [`Error::PermissionDenied`], [`Error::Unsupported`],
    /// [`Error::PageSizeMismatch`] as [`crate::TestBpf::load`];
    /// [`Error::Bpf`] when `pinned` does not hold a compatible map or the
    /// program is refused.
    pub fn open(pinned: &Path, filter: Filter) -> Result<Self, Error> {
        let target = DataMap::Pinned(pinned);
        let layout = target.layout(Layout::Value24)?;
        let obj = load_object(inspect_object(layout), "tld_inspect", |open| {
            with_rodata(open, |r: &mut types::rodata| {
                r.target_tgid = filter.tgid;
                r.target_tid = filter.tid;
                r.emit_keys = i32::from(filter.keys);
                if let Some(name) = filter.full_key.filter(|n| n.len() < 62) {
                    for (dst, &src) in r.full_key.iter_mut().zip(name.as_bytes()) {
                        *dst = src as _;
                    }
                }
            })?;
            target.apply(open)
        })?;
        let link = prog(&obj, "tld_inspect")
            .attach()
            .map_err(Error::bpf("attaching the tld_inspect task iterator"))?;
        Ok(Inspector {
            link,
            _obj: obj,
            layout,
        })
    }

    /// The layout of the map this inspector reads.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Runs the iterator over every task once and returns the registered
    /// threads it selected, in the kernel's iteration order (by thread id).
    ///
    /// # Errors
    ///
    /// [`Error::Bpf`] when running the iterator fails, or its output is
    /// malformed.
    pub fn scan(&self) -> Result<Vec<ThreadView>, Error> {
        parse(&run_iter(&self.link, "tld_inspect")?)
    }
}

fn malformed(what: &str) -> Error {
    Error::Bpf {
        op: format!("parsing the tld_inspect output ({what})"),
        source: libbpf_rs::Error::from_raw_os_error(libc::EPROTO),
    }
}

fn c_string(raw: &[u8]) -> String {
    match CStr::from_bytes_until_nul(raw) {
        Ok(cstr) => cstr.to_string_lossy().into_owned(),
        Err(_) => String::from_utf8_lossy(raw).into_owned(),
    }
}

/// Parses the iterator's records.
fn parse(mut out: &[u8]) -> Result<Vec<ThreadView>, Error> {
    let mut threads = Vec::new();
    let mut pending: Vec<KeyView> = Vec::new();
    let mut pending_tid = None;
    while !out.is_empty() {
        if out.len() < 4 {
            return Err(malformed("truncated record"));
        }
        let kind = u32::from_ne_bytes(out[..4].try_into().expect("4 bytes"));
        match kind {
            KIND_KEY => {
                let len = size_of::<types::tld_inspect_key>();
                if out.len() < len {
                    return Err(malformed("truncated key record"));
                }
                let k: types::tld_inspect_key = from_bytes(&out[..len]);
                out = &out[len..];
                if pending_tid.is_some_and(|tid| tid != k.tid) {
                    return Err(malformed("keys of two threads interleaved"));
                }
                pending_tid = Some(k.tid);
                let raw: Vec<u8> = k.name.iter().map(|&c| c as u8).collect();
                let n = usize::from(k.value_len).min(VALUE_MAX);
                let in_page = k.in_page != 0;
                pending.push(KeyView {
                    slot: k.slot,
                    name: c_string(&raw),
                    size: k.size,
                    offset: k.offset,
                    in_page,
                    value: if in_page {
                        k.value[..n].to_vec()
                    } else {
                        Vec::new()
                    },
                });
            }
            KIND_FULL => {
                let len = size_of::<types::tld_inspect_full>();
                if out.len() < len {
                    return Err(malformed("truncated full value record"));
                }
                let f: types::tld_inspect_full = from_bytes(&out[..len]);
                out = &out[len..];
                let Some(k) = pending.last_mut().filter(|k| pending_tid == Some(f.tid) && k.slot == f.slot) else {
                    return Err(malformed("a full value without its key"));
                };
                if k.in_page {
                    k.value = f.value[..usize::from(f.len).min(FULL_MAX)].to_vec();
                }
            }
            KIND_TASK => {
                let len = size_of::<types::tld_inspect_task>();
                if out.len() < len {
                    return Err(malformed("truncated task record"));
                }
                let t: types::tld_inspect_task = from_bytes(&out[..len]);
                out = &out[len..];
                if pending_tid.is_some_and(|tid| tid != t.tid) {
                    return Err(malformed("keys without their thread"));
                }
                pending_tid = None;
                let raw: Vec<u8> = t.comm.iter().map(|&c| c as u8).collect();
                threads.push(ThreadView {
                    tgid: t.tgid,
                    tid: t.tid,
                    comm: c_string(&raw),
                    has_data: t.flags & HAS_DATA != 0,
                    has_meta: t.flags & HAS_META != 0,
                    start: t.start,
                    cnt: t.cnt,
                    meta_size: t.meta_size,
                    max_slots: t.max_slots,
                    cnt_clamped: t.flags & CNT_CLAMPED != 0,
                    unwritten_slot: (t.flags & UNWRITTEN != 0).then_some(t.stop_slot),
                    stale: t.flags & STALE != 0,
                    nr_keys: t.nr_keys,
                    keys: std::mem::take(&mut pending),
                });
            }
            _ => return Err(malformed("unknown record kind")),
        }
    }
    if !pending.is_empty() {
        return Err(malformed("keys without their thread"));
    }
    Ok(threads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_sizes() {
        assert_eq!(size_of::<types::tld_inspect_key>(), 144);
        assert_eq!(size_of::<types::tld_inspect_task>(), 44);
        assert_eq!(size_of::<types::tld_inspect_full>(), 652);
    }

    #[test]
    fn parse_rejects_garbage() {
        assert!(parse(&[]).unwrap().is_empty());
        assert!(parse(&[1, 0]).is_err());
        assert!(parse(&9u32.to_ne_bytes()).is_err());
        assert!(parse(&1u32.to_ne_bytes()).is_err());
    }
}
