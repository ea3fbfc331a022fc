//! The BPF side of `tld top`: `tld_top` (`src/bpf/tld_top.bpf.c`, built once
//! per map layout) on `tp_btf/sched_switch` charges every slice of the
//! target process's threads to the value their key holds when the slice
//! ends, read through `tld.bpf.h` as any consumer would. [`Top::buckets`]
//! returns the CPU time charged so far, per thread and value.
//!
//! Thread and process ids are those of the initial pid namespace.

use std::fmt;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use libbpf_rs::{Link, MapCore, MapFlags, Object};

use crate::skels::tld_top::types;
use crate::{from_bytes, load_object, map, objects, prog, with_rodata, DataMap, Error, Layout};

/// Bytes of a value that tell buckets apart; longer values are grouped by
/// their first bytes ([`Held::Value`] then holds those).
pub const VALUE_MAX: usize = 64;

/// A field of the OpenTelemetry record (`otel.thread_ctx_v1`, DESIGN §10)
/// to charge the time to, instead of a plain key's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtelField {
    /// The span id (8 bytes), read with `tld_otel_record()`.
    SpanId,
    /// The trace id (16 bytes), read with `tld_otel_record()`.
    TraceId,
    /// The value of one attribute (its first [`VALUE_MAX`] bytes), read
    /// with `tld_otel_attr()`; its key-index is set with
    /// [`Top::set_attr_index`] (none at first).
    Attr,
}

/// What a thread's key held when a slice ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Held {
    /// The key's value (its first [`VALUE_MAX`] bytes).
    Value(Vec<u8>),
    /// The thread had no current registration (it never touched its task
    /// local data, its entry was deleted, or it is stale after an exec).
    NoData,
    /// The thread was registered, but the key was not published (yet), or
    /// its slot is smaller than the size asked.
    NoKey,
    /// By an OpenTelemetry field: the thread had no valid record (none
    /// published, cleared, or the process has no record key).
    NoRecord,
    /// By an attribute: a valid record without it (or its index was not
    /// set yet).
    NoAttr,
    /// By an attribute: its value (the first [`VALUE_MAX`] bytes) and its
    /// whole length.
    Attr(Vec<u8>, u16),
}

/// CPU time charged to one thread and one [`Held`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// The thread.
    pub tid: i32,
    /// What its key held.
    pub held: Held,
    /// On-CPU nanoseconds charged.
    pub ns: u64,
    /// Slices charged.
    pub slices: u64,
}

/// The `tld_top` program, loaded against a pinned map and attached.
pub struct Top {
    /// Detached first (field order).
    link: Link,
    obj: Object,
    layout: Layout,
    by_attr: bool,
}

impl fmt::Debug for Top {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Top")
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

/// What [`Top::open`] charges.
#[derive(Debug, Clone, Copy)]
pub struct TopConfig<'a> {
    /// The process (initial pid namespace).
    pub tgid: i32,
    /// The key's name (1 to 61 bytes).
    pub key: &'a str,
    /// The key's size as published (from `tld keys`).
    pub key_size: u16,
    /// Read the key (false: charge every slice as [`Held::NoData`] without
    /// touching task local data: the benchmark's baseline).
    pub read_tld: bool,
    /// Charge to this field of the OpenTelemetry record, whose key
    /// (`otel.thread_ctx_v1`) `key` must then name; None: to `key`'s value.
    pub otel: Option<OtelField>,
}

impl Top {
    /// Loads `tld_top` for the map pinned at `pinned` (built for its
    /// layout) and attaches it to `sched_switch`.
    ///
    /// # Errors
    ///
    /// As [`crate::TestBpf::load`]; [`Error::Bpf`] (`EINVAL`) for a key name
    /// that is empty, longer than 61 bytes or holds a NUL, or a size of 0;
    /// [`Error::Bpf`] when the map or the program is refused.
    pub fn open(pinned: &Path, config: TopConfig<'_>) -> Result<Self, Error> {
        let name = config.key.as_bytes();
        let otel_key = config.otel.is_none() || config.key == "otel.thread_ctx_v1";
        if name.is_empty() || name.len() > 61 || name.contains(&0) || config.key_size == 0 || !otel_key {
            return Err(Error::Bpf {
                op: format!(
                    "charging CPU time to key {:?} of size {} (names are 1 to 61 bytes, sizes at least 1; \
                     OpenTelemetry fields are read from otel.thread_ctx_v1)",
                    config.key, config.key_size
                ),
                source: libbpf_rs::Error::from_raw_os_error(libc::EINVAL),
            });
        }
        let target = DataMap::Pinned(pinned);
        let layout = target.layout(Layout::Value24)?;
        let bytes = match layout {
            Layout::Value24 => objects::TOP,
            Layout::Value16 => objects::TOP16,
        };
        let obj = load_object(bytes, "tld_top", |open| {
            with_rodata(open, |r: &mut types::rodata| {
                r.target_tgid = config.tgid;
                r.key_size = u32::from(config.key_size);
                r.read_tld = i32::from(config.read_tld);
                r.by_field = match config.otel {
                    None => 0,
                    Some(OtelField::SpanId) => 1,
                    Some(OtelField::TraceId) => 2,
                    Some(OtelField::Attr) => 3,
                };
                for (dst, &src) in r.key_name.iter_mut().zip(name) {
                    *dst = src as _;
                }
            })?;
            target.apply(open)
        })?;
        let link = prog(&obj, "tld_top_switch")
            .attach()
            .map_err(Error::bpf("attaching tld_top to sched_switch"))?;
        Ok(Top { link, obj, layout, by_attr: config.otel == Some(OtelField::Attr) })
    }

    /// The layout of the map this program reads.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The CPU time charged so far, per thread and value, in no order.
    ///
    /// # Errors
    ///
    /// [`Error::Bpf`] when reading the map fails.
    pub fn buckets(&self) -> Result<Vec<Bucket>, Error> {
        let time = map(&self.obj, "top_time");
        let mut out = Vec::new();
        for key in time.keys() {
            let Some(value) = time
                .lookup(&key, MapFlags::ANY)
                .map_err(Error::bpf("reading tld_top's buckets"))?
            else {
                continue; // deleted meanwhile: never, nothing deletes
            };
            let k: types::tld_top_key = from_bytes(&key);
            let t: types::tld_top_time = from_bytes(&value);
            let value = k.value[..usize::from(k.len).min(VALUE_MAX)].to_vec();
            let held = match k.status {
                0 if self.by_attr => Held::Attr(value, k.full_len),
                0 => Held::Value(value),
                1 => Held::NoData,
                3 => Held::NoRecord,
                4 => Held::NoAttr,
                _ => Held::NoKey,
            };
            out.push(Bucket {
                tid: k.tid,
                held,
                ns: t.ns,
                slices: t.slices,
            });
        }
        Ok(out)
    }

    /// Sets the key-index of the attribute [`OtelField::Attr`] charges to
    /// (its position in the process's attribute key map); None: not known
    /// (slices of valid records are charged to [`Held::NoAttr`]).
    ///
    /// # Errors
    ///
    /// [`Error::Bpf`] when the program's variable cannot be written.
    pub fn set_attr_index(&self, index: Option<u8>) -> Result<(), Error> {
        let m = self
            .obj
            .maps()
            .find(|m| m.name().to_string_lossy().ends_with(".data.attr"))
            .expect("tld_top has the .data.attr section");
        let value = index.map_or(u32::MAX, u32::from);
        m.update(&0u32.to_ne_bytes(), &value.to_ne_bytes(), MapFlags::ANY)
            .map_err(Error::bpf("setting tld_top's attribute index"))
    }

    /// Slices that found no room in the buckets map (16384 buckets).
    ///
    /// # Errors
    ///
    /// [`Error::Bpf`] when reading the counter fails.
    pub fn dropped(&self) -> Result<u64, Error> {
        let bss = map(&self.obj, ".bss");
        let bytes = bss
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(Error::bpf("reading tld_top's dropped counter"))?
            .unwrap_or_default();
        let b: types::bss = from_bytes(&bytes);
        Ok(b.dropped)
    }

    /// The kernel's run-time statistics of the program: `(run_time_ns,
    /// run_cnt)`, counted while statistics are enabled
    /// ([`crate::bench::RunStats`]).
    ///
    /// # Errors
    ///
    /// [`Error::Bpf`] when the program's info cannot be read.
    pub fn run_stats(&self) -> Result<(u64, u64), Error> {
        let p = prog(&self.obj, "tld_top_switch");
        prog_run_stats(p.as_fd().as_raw_fd())
    }

    /// Whether the link is attached (it is, while `self` lives).
    pub fn attached(&self) -> bool {
        self.link.as_fd().as_raw_fd() >= 0
    }
}

/// `run_time_ns` and `run_cnt` of the program behind `fd`.
pub(crate) fn prog_run_stats(fd: i32) -> Result<(u64, u64), Error> {
    let mut info = libbpf_rs::libbpf_sys::bpf_prog_info::default();
    let mut len = size_of::<libbpf_rs::libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: info is a valid out buffer of `len` bytes.
    let rc = unsafe {
        libbpf_rs::libbpf_sys::bpf_prog_get_info_by_fd(fd, &mut info, &mut len)
    };
    if rc < 0 {
        return Err(Error::Bpf {
            op: "reading a program's run-time statistics".into(),
            source: libbpf_rs::Error::from_raw_os_error(-rc),
        });
    }
    Ok((info.run_time_ns, info.run_cnt))
}
