//! The one cxx bridge of the C++ binding. `include/tld/tld.hpp` is the public
//! API; the functions here are its plumbing (C++ namespace `tld::detail`).
//!
//! Errors do not cross as `Result<T>`, the cxx default: cxx turns an `Err`
//! into `rust::Error`, which carries the message but not the errno, and it
//! would throw through code built with `-fno-exceptions`, which the binding
//! supports (the `std::error_code&` overloads). So each call returns 0 or a
//! positive errno and leaves the message, which names the key or map and the
//! cause, in a per-thread slot (`last_failure`); tld.hpp turns both into a
//! `tld::Error` exception or a `std::error_code`.
//!
//! Panics never cross into C++: the core does not panic on any input, and
//! cxx aborts the process if a bridged function panics anyway.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tld::{Error, RawKey};

#[cxx::bridge(namespace = "tld")]
mod ffi {
    // ---- Shared types (public in C++: tld::KeyInfo, tld::RuntimeStats) ----

    /// Where a key's value lives: the upstream `tld_key_t.off` plus its size
    /// and metadata slot. `size == 0` marks "no key".
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    struct KeyInfo {
        /// Offset of the value in every thread's data area.
        offset: u16,
        /// Size of the value in bytes.
        size: u16,
        /// Index of the key's metadata slot.
        slot: u16,
    }

    /// A snapshot of the process's runtime, for tests and diagnostics.
    #[derive(Clone, Copy, Debug, Default)]
    struct RuntimeStats {
        /// Address of the metadata page: the same in every copy of the core in a process.
        meta_page: usize,
        /// Page size the runtime was laid out for.
        page_size: usize,
        /// Thread blocks allocated and not yet released, process-wide.
        live_blocks: usize,
        /// Maps attached.
        attached_maps: usize,
        /// Bytes of data every thread block holds (static keys + dynamic reserve).
        data_size: usize,
        /// Whether the data size is frozen (a thread block exists or existed).
        frozen: bool,
    }

    /// How `key` finds or creates a key.
    #[namespace = "tld::detail"]
    enum KeyMode {
        /// Strict creation: `EEXIST` if the name is taken.
        Create,
        /// The existing key of that name and size, else a new one.
        GetOrCreate,
        /// As `GetOrCreate`, as a static key (grows every block while none exists).
        GetOrCreateStatic,
        /// Look up only: `ENOENT` if absent; `size` 0 accepts any size.
        Find,
    }

    /// The calling thread's last error.
    #[namespace = "tld::detail"]
    struct Failure {
        /// Positive errno (0: no error recorded on this thread).
        code: i32,
        /// Names the key or map and the cause.
        message: String,
    }

    /// The core's layout constants that tld.hpp repeats as `constexpr`
    /// (for `static_assert`); a test compares the two.
    #[namespace = "tld::detail"]
    struct Limits {
        max_name_bytes: usize,
        value_align: usize,
    }

    // ---- OpenTelemetry (tld::otel in tld.hpp; DESIGN §10) ----

    /// A W3C span context: ids in wire order; all zero: no span.
    #[namespace = "tld::otel"]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    struct SpanContext {
        /// W3C trace id (16 bytes as on the wire).
        trace_id: [u8; 16],
        /// W3C span id (8 bytes as on the wire).
        span_id: [u8; 8],
        /// W3C trace flags (bit 0: sampled).
        trace_flags: u8,
    }

    /// An attribute by name for `otel_set`: the bytes of two strings the
    /// C++ caller keeps alive for the call (addresses as integers: cxx
    /// passes no slice of string views).
    #[namespace = "tld::otel::detail"]
    struct NamedAttr {
        name: usize,
        name_len: usize,
        value: usize,
        value_len: usize,
    }

    /// An attribute by key index for `otel_set_indexed`.
    #[namespace = "tld::otel::detail"]
    struct IndexedAttr {
        key: u8,
        value: usize,
        value_len: usize,
    }

    /// A resource attribute for `otel_publish_process_context`; `kind`:
    /// 0 string (`text`, `text_len`), 1 bool, 2 int, 3 double.
    #[namespace = "tld::otel::detail"]
    struct ResourceAttr {
        key: usize,
        key_len: usize,
        kind: u8,
        text: usize,
        text_len: usize,
        int_value: i64,
        double_value: f64,
        bool_value: bool,
    }

    /// One `attrs-data` entry of a record read back.
    #[namespace = "tld::otel::detail"]
    struct RecordAttr {
        key: u8,
        value: Vec<u8>,
    }

    /// The calling thread's record read back.
    #[namespace = "tld::otel::detail"]
    struct RecordView {
        valid: bool,
        span: SpanContext,
        attributes: Vec<RecordAttr>,
    }

    #[namespace = "tld::otel::detail"]
    extern "Rust" {
        /// `tld_otel::set_record_size`. Returns 0 or a positive errno.
        fn otel_set_record_size(bytes: usize) -> i32;
        /// `tld_otel::record_key` into `out`. Returns 0 or a positive errno.
        fn otel_record_key(out: &mut KeyInfo) -> i32;
        /// Registers or finds an attribute key name; its index into `out`.
        fn otel_attr_key(name: &[u8], out: &mut u8) -> i32;
        /// `tld_otel::set` with attributes by name.
        fn otel_set(span: &SpanContext, attrs: &[NamedAttr]) -> i32;
        /// `tld_otel::set_with_keys`.
        fn otel_set_indexed(span: &SpanContext, attrs: &[IndexedAttr]) -> i32;
        /// `tld_otel::clear`.
        fn otel_clear() -> i32;
        /// Copies the calling thread's record into `saved` (640 bytes).
        fn otel_save(saved: &mut [u8]) -> i32;
        /// Puts back a record `otel_save` copied on this thread.
        fn otel_restore(saved: &[u8]) -> i32;
        /// The calling thread's record as readers see it, into `out`.
        fn otel_current(out: &mut RecordView) -> i32;
        /// `tld_otel::publish_process_context`.
        fn otel_publish_process_context(attrs: &[ResourceAttr]) -> i32;
        /// `tld_otel::set_schema_version`.
        fn otel_set_schema_version(version: &[u8]) -> i32;
        /// `tld_otel::process_context_address` into `out`.
        fn otel_process_context(out: &mut usize) -> i32;
    }

    // ---- Rust functions called from tld.hpp ----

    #[namespace = "tld::detail"]
    extern "Rust" {
        /// Finds or creates the key `name` of `size` bytes as `mode` says;
        /// writes `out` only on success. Returns 0 or a positive errno.
        fn key(mode: KeyMode, name: &[u8], size: usize, out: &mut KeyInfo) -> i32;

        /// Attaches the map pinned at `path` (empty: `$TLD_MAP_PATH` or the
        /// default path). Returns 0 or a positive errno.
        fn attach_path(path: &[u8]) -> i32;

        /// Attaches the map behind `fd` (the runtime keeps a duplicate).
        fn attach_fd(fd: i32) -> i32;

        /// Sets the dynamic reserve. Returns 0 or a positive errno.
        fn set_dynamic_reserve(bytes: usize) -> i32;

        /// The slow path of `Key<T>::get()`: the calling thread's data area,
        /// allocating and registering its block on first use and with maps
        /// attached since, written to `cache` on success. Returns 0 or a
        /// positive errno.
        /// Fills the `thread_local` cache at `cache` (a `tld::detail::DataCache`,
        /// the layout of the core's `DataCache`) and registers it with the
        /// runtime, which clears it; `data` gets the thread's data area.
        fn refresh_thread_cache(cache: usize, data: &mut usize) -> i32;

        /// Releases the calling thread's block now (upstream `tld_free`).
        fn free_thread_block();
        fn refresh() -> i32;

        /// Writes a snapshot of the runtime into `out`. Returns 0 or a positive errno.
        fn runtime_stats(out: &mut RuntimeStats) -> i32;

        /// The calling thread's last error (code 0 if none).
        fn last_failure() -> Failure;

        /// The core's constants behind `tld::max_name_length` and `tld::value_alignment`.
        fn limits() -> Limits;
    }
}

use ffi::{
    Failure, IndexedAttr, KeyInfo, KeyMode, Limits, NamedAttr, RecordAttr, RecordView,
    ResourceAttr, RuntimeStats,
};

thread_local! {
    static LAST: RefCell<(i32, String)> = const { RefCell::new((0, String::new())) };
}

fn fail(e: Error) -> i32 {
    let errno = e.errno();
    LAST.with(|l| *l.borrow_mut() = (errno, e.to_string()));
    errno
}

fn status(r: tld::Result<()>) -> i32 {
    r.map_or_else(fail, |()| 0)
}

fn key(mode: KeyMode, name: &[u8], size: usize, out: &mut KeyInfo) -> i32 {
    let found = match mode {
        KeyMode::Create => RawKey::create(name, size),
        KeyMode::GetOrCreate => RawKey::get_or_create(name, size),
        KeyMode::GetOrCreateStatic => RawKey::get_or_create_static(name, size),
        KeyMode::Find => RawKey::find(name).and_then(|k| {
            if size != 0 && k.size() != size {
                return Err(Error::SizeMismatch {
                    name: String::from_utf8_lossy(name).into_owned(),
                    existing: k.size(),
                    requested: size,
                });
            }
            Ok(k)
        }),
        // cxx enums are open on the C++ side: an unknown mode is a caller bug, not a panic.
        _ => Err(Error::InvalidName {
            name: String::from_utf8_lossy(name).into_owned(),
            reason: "unknown key mode from C++",
        }),
    };
    match found {
        Ok(k) => {
            *out = KeyInfo {
                offset: k.offset() as u16,
                size: k.size() as u16,
                slot: k.slot() as u16,
            };
            0
        }
        Err(e) => fail(e),
    }
}

fn attach_path(path: &[u8]) -> i32 {
    if path.is_empty() {
        return status(tld::attach_default());
    }
    status(tld::attach_path(Path::new(OsStr::from_bytes(path))))
}

fn attach_fd(fd: i32) -> i32 {
    if fd < 0 {
        return fail(Error::Map {
            source: tld::MapSource::Fd(fd),
            problem: tld::MapProblem::NotAMap {
                kind: "negative file descriptor".into(),
            },
        });
    }
    // SAFETY: the core only duplicates the fd; the caller keeps it open for the call.
    status(tld::attach_fd(unsafe { BorrowedFd::borrow_raw(fd) }))
}

fn set_dynamic_reserve(bytes: usize) -> i32 {
    status(tld::set_dynamic_reserve(bytes))
}

fn refresh_thread_cache(cache: usize, data: &mut usize) -> i32 {
    // SAFETY: tld.hpp passes its constant-initialized, trivially destructible
    // thread_local cache of the calling thread.
    match unsafe { tld::fill_thread_cache(cache as *const tld::DataCache, None) } {
        Ok((p, _)) => {
            *data = p.as_ptr() as usize;
            0
        }
        Err(e) => fail(e),
    }
}

fn refresh() -> i32 {
    status(tld::refresh())
}

fn free_thread_block() {
    tld::free_thread_block()
}

fn runtime_stats(out: &mut RuntimeStats) -> i32 {
    match tld::runtime_stats() {
        Ok(s) => {
            *out = RuntimeStats {
                meta_page: s.meta_page,
                page_size: s.page_size,
                live_blocks: s.live_blocks,
                attached_maps: s.attached_maps,
                data_size: s.data_size,
                frozen: s.frozen,
            };
            0
        }
        Err(e) => fail(e),
    }
}

fn last_failure() -> Failure {
    LAST.with(|l| {
        let l = l.borrow();
        Failure {
            code: l.0,
            message: l.1.clone(),
        }
    })
}

fn limits() -> Limits {
    Limits {
        max_name_bytes: tld::abi::MAX_NAME_BYTES,
        value_align: tld::abi::VALUE_ALIGN,
    }
}

// ---- OpenTelemetry ----

fn otel_fail(e: tld_otel::Error) -> i32 {
    let errno = e.errno();
    LAST.with(|l| *l.borrow_mut() = (errno, e.to_string()));
    errno
}

fn otel_status(r: tld_otel::Result<()>) -> i32 {
    r.map_or_else(otel_fail, |()| 0)
}

fn otel_invalid(message: String) -> tld_otel::Error {
    tld_otel::Error::new(libc::EINVAL, message)
}

/// The UTF-8 text at `ptr` (`len` bytes) that C++ keeps alive for the call.
///
/// # Safety
/// `ptr` points at `len` readable bytes (or `len` is 0).
unsafe fn text<'a>(
    ptr: usize,
    len: usize,
    what: impl FnOnce() -> String,
) -> tld_otel::Result<&'a str> {
    if len == 0 {
        return Ok("");
    }
    if ptr == 0 {
        return Err(otel_invalid(format!(
            "{} is a null pointer with {len} bytes",
            what()
        )));
    }
    // SAFETY: tld.hpp passes string_views that outlive the call.
    let bytes = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
    std::str::from_utf8(bytes).map_err(|_| otel_invalid(format!("{} is not valid UTF-8", what())))
}

fn otel_span(s: &ffi::SpanContext) -> tld_otel::SpanContext {
    tld_otel::SpanContext::new(s.trace_id, s.span_id, s.trace_flags)
}

/// Up to this many attributes are converted on the stack; more go through a Vec.
const STACK_ATTRS: usize = 4;

fn otel_set_record_size(bytes: usize) -> i32 {
    otel_status(tld_otel::set_record_size(bytes))
}

fn otel_record_key(out: &mut KeyInfo) -> i32 {
    match tld_otel::record_key() {
        Ok(k) => {
            *out = KeyInfo {
                offset: k.offset() as u16,
                size: k.size() as u16,
                slot: k.slot() as u16,
            };
            0
        }
        Err(e) => otel_fail(e),
    }
}

fn otel_attr_key(name: &[u8], out: &mut u8) -> i32 {
    let r = std::str::from_utf8(name)
        .map_err(|_| otel_invalid("otel attribute key name is not valid UTF-8".into()))
        .and_then(tld_otel::AttributeKey::register);
    match r {
        Ok(k) => {
            *out = k.index();
            0
        }
        Err(e) => otel_fail(e),
    }
}

fn otel_set(span: &ffi::SpanContext, attrs: &[NamedAttr]) -> i32 {
    let span = otel_span(span);
    let convert = |a: &NamedAttr| -> tld_otel::Result<(&str, &str)> {
        // SAFETY: tld.hpp passes string_views alive for the call.
        let name = unsafe { text(a.name, a.name_len, || "an otel attribute name".into()) }?;
        let value = unsafe {
            text(a.value, a.value_len, || {
                format!("the value of otel attribute {name:?}")
            })
        }?;
        Ok((name, value))
    };
    let r = if attrs.len() <= STACK_ATTRS {
        (|| {
            let mut buf = [("", ""); STACK_ATTRS];
            for (slot, a) in buf.iter_mut().zip(attrs) {
                *slot = convert(a)?;
            }
            tld_otel::set(&span, &buf[..attrs.len()])
        })()
    } else {
        attrs
            .iter()
            .map(convert)
            .collect::<tld_otel::Result<Vec<_>>>()
            .and_then(|v| tld_otel::set(&span, &v))
    };
    otel_status(r)
}

fn otel_set_indexed(span: &ffi::SpanContext, attrs: &[IndexedAttr]) -> i32 {
    let span = otel_span(span);
    let convert = |a: &IndexedAttr| -> tld_otel::Result<(tld_otel::AttributeKey, &str)> {
        // SAFETY: tld.hpp passes string_views alive for the call.
        let value = unsafe {
            text(a.value, a.value_len, || {
                format!("the value of otel attribute index {}", a.key)
            })
        }?;
        Ok((tld_otel::AttributeKey::from_index(a.key)?, value))
    };
    let r = if attrs.is_empty() {
        tld_otel::set_with_keys(&span, &[])
    } else if attrs.len() <= STACK_ATTRS {
        (|| {
            let first = convert(&attrs[0])?;
            let mut buf = [first; STACK_ATTRS];
            for (slot, a) in buf.iter_mut().zip(attrs).skip(1) {
                *slot = convert(a)?;
            }
            tld_otel::set_with_keys(&span, &buf[..attrs.len()])
        })()
    } else {
        attrs
            .iter()
            .map(convert)
            .collect::<tld_otel::Result<Vec<_>>>()
            .and_then(|v| tld_otel::set_with_keys(&span, &v))
    };
    otel_status(r)
}

fn otel_clear() -> i32 {
    otel_status(tld_otel::clear())
}

const SAVED_BYTES: usize = std::mem::size_of::<tld_otel::SavedContext>();
const _: () = assert!(SAVED_BYTES == tld_otel::MAX_RECORD_SIZE);

fn otel_save(saved: &mut [u8]) -> i32 {
    if saved.len() != SAVED_BYTES {
        return otel_fail(otel_invalid(format!(
            "otel save buffer of {} bytes, not {SAVED_BYTES}",
            saved.len()
        )));
    }
    match tld_otel::SavedContext::save() {
        Ok(s) => {
            // SAFETY: SavedContext is repr(C) around its MAX_RECORD_SIZE bytes
            // (the C ABI's tld_otel_saved_t is the same); `saved` is that long.
            unsafe {
                std::ptr::write_unaligned(saved.as_mut_ptr() as *mut tld_otel::SavedContext, s)
            };
            0
        }
        Err(e) => otel_fail(e),
    }
}

fn otel_restore(saved: &[u8]) -> i32 {
    if saved.len() != SAVED_BYTES {
        return otel_fail(otel_invalid(format!(
            "otel saved record of {} bytes, not {SAVED_BYTES}",
            saved.len()
        )));
    }
    // SAFETY: as in otel_save: plain bytes, any pattern is a SavedContext.
    let s = unsafe { std::ptr::read_unaligned(saved.as_ptr() as *const tld_otel::SavedContext) };
    otel_status(s.restore())
}

fn otel_current(out: &mut RecordView) -> i32 {
    match tld_otel::current() {
        Ok(r) => {
            out.valid = r.valid;
            out.span = ffi::SpanContext {
                trace_id: r.span.trace_id,
                span_id: r.span.span_id,
                trace_flags: r.span.trace_flags,
            };
            out.attributes = r
                .attributes
                .into_iter()
                .map(|(key, value)| RecordAttr { key, value })
                .collect();
            0
        }
        Err(e) => otel_fail(e),
    }
}

fn otel_publish_process_context(attrs: &[ResourceAttr]) -> i32 {
    let r = (|| {
        let mut pairs = Vec::with_capacity(attrs.len());
        for a in attrs {
            // SAFETY: tld.hpp passes string_views alive for the call.
            let key =
                unsafe { text(a.key, a.key_len, || "an otel resource attribute key".into()) }?;
            let value = match a.kind {
                0 => tld_otel::ResourceValue::String(unsafe {
                    text(a.text, a.text_len, || {
                        format!("the value of otel resource attribute {key:?}")
                    })
                }?),
                1 => tld_otel::ResourceValue::Bool(a.bool_value),
                2 => tld_otel::ResourceValue::Int(a.int_value),
                3 => tld_otel::ResourceValue::Double(a.double_value),
                k => {
                    return Err(otel_invalid(format!(
                        "otel resource attribute {key:?}: unknown kind {k}"
                    )))
                }
            };
            pairs.push((key, value));
        }
        tld_otel::publish_process_context(&pairs)
    })();
    otel_status(r)
}

fn otel_set_schema_version(version: &[u8]) -> i32 {
    let r = std::str::from_utf8(version)
        .map_err(|_| otel_invalid("otel schema version is not valid UTF-8".into()))
        .and_then(tld_otel::set_schema_version);
    otel_status(r)
}

fn otel_process_context(out: &mut usize) -> i32 {
    match tld_otel::process_context_address() {
        Ok(a) => {
            *out = a;
            0
        }
        Err(e) => otel_fail(e),
    }
}
