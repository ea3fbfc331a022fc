//! Publishing the calling thread's record (DESIGN §10.2): the static key
//! `otel.thread_ctx_v1`, the valid-flag protocol, the TLS pointer, scopes.

use std::cell::Cell;
use std::ffi::c_void;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::record::*;
use crate::{process, symbol};
use tld::DataCache;

/// Environment variable giving the record size when no code set it.
pub const RECORD_SIZE_ENV: &str = "TLD_OTEL_RECORD_SIZE";

/// The size this copy asked for with `set_record_size` (0: none).
static REQUESTED_SIZE: AtomicUsize = AtomicUsize::new(0);

/// Sets the size in bytes of every thread's record (default
/// [`DEFAULT_RECORD_SIZE`], else `TLD_OTEL_RECORD_SIZE`), which bounds the
/// attributes a record holds: `size - 28` bytes, 2 per attribute plus its value.
///
/// The size is the size of the tld key `otel.thread_ctx_v1`, so it must be
/// set before the key exists: before [`record_key`], [`static_record_key!`](crate::static_record_key!),
/// `TLD_OTEL_DEFINE_RECORD_KEY` or the first publication in any language.
/// Errors: `EINVAL` outside 28..=640; `EBUSY` when the key already exists
/// with another size (setting the size it has is a no-op).
pub fn set_record_size(bytes: usize) -> Result<()> {
    check_record_size(bytes, "set_record_size")?;
    let existing = match tld::RawKey::find(RECORD_KEY) {
        Ok(k) => Some(k.size()),
        Err(tld::Error::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    match existing {
        Some(size) if size != bytes => Err(Error::new(
            libc::EBUSY,
            format!(
                "otel record size {bytes}: the key {RECORD_KEY} already exists with {size} bytes; set the size \
                 before it is created (tld_otel::static_record_key!, TLD_OTEL_DEFINE_RECORD_KEY, {RECORD_SIZE_ENV}, \
                 or before the first publication)"
            ),
        )),
        _ => {
            REQUESTED_SIZE.store(bytes, Ordering::Relaxed);
            Ok(())
        }
    }
}

/// The size to create the key with, and whether code asked for it.
fn configured_size() -> Result<(usize, bool)> {
    let requested = REQUESTED_SIZE.load(Ordering::Relaxed);
    if requested != 0 {
        return Ok((requested, true));
    }
    match std::env::var(RECORD_SIZE_ENV) {
        Err(std::env::VarError::NotPresent) => Ok((DEFAULT_RECORD_SIZE, false)),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(Error::invalid(format!("{RECORD_SIZE_ENV} is not a number of bytes")))
        }
        Ok(v) => {
            let n = v
                .trim()
                .parse::<usize>()
                .map_err(|_| Error::invalid(format!("{RECORD_SIZE_ENV}={v:?} is not a number of bytes")))?;
            check_record_size(n, RECORD_SIZE_ENV)?;
            Ok((n, false))
        }
    }
}

fn existing_record_key(k: tld::RawKey, wanted: Option<usize>) -> Result<tld::RawKey> {
    if check_record_size(k.size(), "existing key").is_err() {
        return Err(Error::new(
            libc::EPROTO,
            format!("the tld key {RECORD_KEY} exists with {} bytes, which is not a thread context record", k.size()),
        ));
    }
    match wanted {
        Some(n) if n != k.size() => Err(Error::new(
            libc::EEXIST,
            format!("otel record size {n}: the key {RECORD_KEY} already exists with {} bytes", k.size()),
        )),
        _ => Ok(k),
    }
}

/// The static key `otel.thread_ctx_v1`, created if it does not exist yet.
///
/// It is a static key (DESIGN §3.4): created before any thread touches tld
/// data, it grows every thread block by the record size. Created later, it
/// must fit the dynamic reserve, which 128 bytes do not by default: `E2BIG`,
/// with a message saying how to create it in time. An existing key is used
/// whatever its size (another copy or language created it), unless this copy
/// set another size with [`set_record_size`] (`EEXIST`).
pub fn record_key() -> Result<tld::RawKey> {
    let key = find_or_create_record_key()?;
    // An exported copy claims the live symbol as soon as the record key is
    // used through it, not at its first publication: a thread publishing
    // through a copy whose symbol is hidden (a library linked with
    // --exclude-libs) then finds the live symbol even if no thread has
    // published through the exported copy yet (DESIGN §10.5).
    symbol::claim();
    Ok(key)
}

fn find_or_create_record_key() -> Result<tld::RawKey> {
    let (size, explicit) = configured_size()?;
    let wanted = explicit.then_some(size);
    if let Ok(k) = tld::RawKey::find(RECORD_KEY) {
        return existing_record_key(k, wanted);
    }
    match tld::RawKey::get_or_create_static(RECORD_KEY, size) {
        Ok(k) => Ok(k),
        // Another copy created it with its own size between our find and create.
        Err(tld::Error::SizeMismatch { .. }) => existing_record_key(tld::RawKey::find(RECORD_KEY)?, wanted),
        Err(e @ tld::Error::TooBig { .. }) => Err(Error::too_big(format!(
            "{e}: create the otel record key before any thread touches tld data (tld_otel::static_record_key!, \
             TLD_OTEL_DEFINE_RECORD_KEY, or tld_otel::record_key() first thing in main), raise the dynamic \
             reserve, or set a smaller record size"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Creates the record key before `main`, as [`tld::static_key!`] does for
/// its keys, so it gets its own room in every thread block; optionally with
/// a record size (else `TLD_OTEL_RECORD_SIZE`, else 128). Errors are
/// reported again by the first publication.
///
/// ```
/// tld_otel::static_record_key!(256);
///
/// assert_eq!(tld_otel::record_key()?.size(), 256);
/// # Ok::<(), tld_otel::Error>(())
/// ```
#[macro_export]
macro_rules! static_record_key {
    () => {
        $crate::static_record_key!(@ctor {});
    };
    ($size:expr) => {
        $crate::static_record_key!(@ctor { let _ = $crate::set_record_size($size); });
    };
    (@ctor { $($first:tt)* }) => {
        const _: () = {
            extern "C" fn __tld_otel_record_key() {
                $($first)*
                let _ = $crate::record_key();
            }
            #[used]
            #[link_section = ".init_array"]
            static __TLD_OTEL_RECORD_KEY: extern "C" fn() = __tld_otel_record_key;
        };
    };
}

/// What every copy resolves once: the live-symbol word and the record's place.
struct Shared {
    symbol: &'static AtomicU64,
    offset: usize,
    size: usize,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

fn shared() -> Result<&'static Shared> {
    if let Some(s) = SHARED.get() {
        return Ok(s);
    }
    let key = record_key()?;
    let s = Shared { symbol: symbol::word()?, offset: key.offset(), size: key.size() };
    let _ = SHARED.set(s);
    Ok(SHARED.get().expect("set above"))
}

/// The calling thread's record and TLS slot.
#[derive(Clone, Copy)]
struct Cached {
    record: *mut u8,
    slot: *mut *mut c_void,
}

/// The live symbol's word as last seen by this thread, and its slot there.
#[derive(Clone, Copy)]
struct SlotCache {
    filled: bool,
    owner: u64,
    slot: *mut *mut c_void,
}

thread_local! {
    // The runtime clears it when the thread's data area moves (DESIGN §4).
    // Neither has a destructor: usable from late destructors.
    static DATA: DataCache = const { DataCache::new() };
    static SLOT: Cell<SlotCache> = const { Cell::new(SlotCache { filled: false, owner: 0, slot: std::ptr::null_mut() }) };
}

#[inline]
fn thread_record() -> Result<(&'static Shared, Cached)> {
    if let Some(sh) = SHARED.get() {
        let data = DATA.with(DataCache::get);
        let s = SLOT.with(Cell::get);
        if let Some(data) = data {
            if s.filled && s.owner == sh.symbol.load(Ordering::Relaxed) {
                // SAFETY: the key lies inside every block's data area.
                return Ok((sh, Cached { record: unsafe { data.add(sh.offset) }, slot: s.slot }));
            }
        }
    }
    thread_record_slow()
}

#[cold]
fn thread_record_slow() -> Result<(&'static Shared, Cached)> {
    let sh = shared()?;
    // SAFETY: DATA is this thread's, lives as long as the thread and has no destructor.
    let (data, _) = unsafe { tld::fill_thread_cache(DATA.with(|d| d as *const DataCache), None)? };
    let (owner, slot) = symbol::live_slot(sh.symbol);
    SLOT.with(|s| s.set(SlotCache { filled: true, owner, slot }));
    // SAFETY: the key lies inside every block's data area.
    Ok((sh, Cached { record: unsafe { data.as_ptr().add(sh.offset) }, slot }))
}

fn valid_flag(record: *mut u8) -> &'static AtomicU8 {
    // SAFETY: the byte lies in the thread's block, which outlives this call.
    unsafe { AtomicU8::from_ptr(record.add(VALID_OFFSET)) }
}

fn set_slot(c: &Cached, record: *mut u8) {
    if !c.slot.is_null() {
        // SAFETY: the live copy's accessor returned this thread's slot.
        unsafe { AtomicPtr::from_ptr(c.slot) }.store(record as *mut c_void, Ordering::Release);
    }
}

/// Rewrites the record in place with the OTEP 4947 valid-flag protocol:
/// `valid = 0`, the fields, `valid = 1`. Only this thread writes its record;
/// the fences keep the field stores between the two flag stores, for the
/// compiler and, on weakly ordered CPUs, for readers on other CPUs.
fn write_record<'a>(
    c: &Cached,
    span: &SpanContext,
    attrs: impl Iterator<Item = (u8, &'a [u8], &'a str)> + Clone,
    attrs_len: usize,
) {
    let rec = c.record;
    let valid = valid_flag(rec);
    valid.store(0, Ordering::Relaxed);
    fence(Ordering::Release);
    unsafe {
        std::ptr::copy_nonoverlapping(span.trace_id.as_ptr(), rec.add(TRACE_ID_OFFSET), 16);
        std::ptr::copy_nonoverlapping(span.span_id.as_ptr(), rec.add(SPAN_ID_OFFSET), 8);
        rec.add(FLAGS_OFFSET).write(span.trace_flags);
        std::ptr::copy_nonoverlapping((attrs_len as u16).to_ne_bytes().as_ptr(), rec.add(ATTRS_SIZE_OFFSET), 2);
        write_attrs(std::slice::from_raw_parts_mut(rec.add(HEADER_SIZE), attrs_len), attrs);
    }
    valid.store(1, Ordering::Release);
    set_slot(c, rec);
}

fn publish<'a>(span: &SpanContext, attrs: impl Iterator<Item = (u8, &'a [u8], &'a str)> + Clone) -> Result<()> {
    span.check()?;
    let (sh, c) = thread_record()?;
    let attrs_len = attrs_size(sh.size, attrs.clone())?;
    // OTEP readers need the process context to find the key map and the symbol;
    // the thread record is published whether or not it could be.
    let _ = process::ensure_published();
    write_record(&c, span, attrs, attrs_len);
    Ok(())
}

/// An attribute key registered in `threadlocal.attribute_key_map`: its
/// one-byte index, stable for the life of the process (and its forks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttributeKey(u8);

impl AttributeKey {
    /// Registers `name` (or finds it: the map is append-only and shared by
    /// every copy and language in the process) and republishes the process
    /// context when it is new. Errors: `EINVAL` for an empty name, one longer
    /// than 127 bytes or containing NUL; `ENOSPC` past 256 keys.
    pub fn register(name: &str) -> Result<AttributeKey> {
        process::key_index(name).map(AttributeKey)
    }

    /// The key of a registered index (from another language, or the C ABI);
    /// `EINVAL` when no key has that index yet.
    pub fn from_index(index: u8) -> Result<AttributeKey> {
        let n = process::key_count()?;
        if index as usize >= n {
            return Err(Error::invalid(format!("otel attribute key index {index} is not registered ({n} keys are)")));
        }
        Ok(AttributeKey(index))
    }

    /// The index written in records.
    pub fn index(self) -> u8 {
        self.0
    }
}

/// Most attributes a record can hold (each takes at least 2 bytes).
const MAX_ENTRIES: usize = (MAX_RECORD_SIZE - HEADER_SIZE) / 2;

/// Publishes the calling thread's context: `span` and attributes by name
/// (registered in the key map on first use). Readers (BPF through tld, and
/// OTEP 4947 readers through `otel_thread_ctx_v1`) see it until the next
/// `set` or [`clear`] on this thread.
///
/// Errors, with the record left as it was: `EINVAL` for a span context
/// OTEP 4947 forbids (one id zero and not the other; flags without ids) or a
/// bad attribute name; `E2BIG` when a value is longer than 255 bytes or the
/// attributes do not fit the record; `ENOSPC` when the key map is full; the
/// core's errors when the thread's block cannot be had.
///
/// ```
/// use tld_otel::SpanContext;
///
/// let span = SpanContext::new([0x4b; 16], [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7], 0x01);
/// tld_otel::set(&span, &[("http.route", "/users/:id")])?;
/// let rec = tld_otel::current()?;
/// assert!(rec.valid);
/// assert_eq!(rec.span, span);
/// tld_otel::clear()?;
/// assert!(!tld_otel::current()?.valid);
/// # Ok::<(), tld_otel::Error>(())
/// ```
pub fn set(span: &SpanContext, attributes: &[(&str, &str)]) -> Result<()> {
    if attributes.len() > MAX_ENTRIES {
        return Err(Error::too_big(format!(
            "otel thread context: {} attributes cannot fit a record (at most {MAX_ENTRIES})",
            attributes.len()
        )));
    }
    let mut index = [0u8; MAX_ENTRIES];
    for (i, (name, _)) in attributes.iter().enumerate() {
        index[i] = process::key_index(name)?;
    }
    publish(span, attributes.iter().enumerate().map(|(i, (name, v))| (index[i], v.as_bytes(), *name)))
}

/// As [`set`], with keys registered beforehand: no name lookup.
pub fn set_with_keys(span: &SpanContext, attributes: &[(AttributeKey, &str)]) -> Result<()> {
    publish(span, attributes.iter().map(|(k, v)| (k.0, v.as_bytes(), "(by index)")))
}

/// Marks the calling thread's record invalid (`valid = 0`) and sets its
/// `otel_thread_ctx_v1` to NULL: readers see no context. The other bytes are
/// left as they were and mean nothing.
pub fn clear() -> Result<()> {
    let (_, c) = thread_record()?;
    valid_flag(c.record).store(0, Ordering::Release);
    set_slot(&c, std::ptr::null_mut());
    Ok(())
}

/// The calling thread's record as readers see it.
pub fn current() -> Result<Record> {
    let (sh, c) = thread_record()?;
    // SAFETY: the record is `size` bytes of this thread's block.
    Ok(Record::decode(unsafe { std::slice::from_raw_parts(c.record, sh.size) }))
}

/// The calling thread's record: `record_key()?.size()` bytes, valid on this
/// thread until it exits or frees its tld block; for bindings that write it
/// themselves, following DESIGN §10.2.
pub fn thread_record_ptr() -> Result<NonNull<u8>> {
    let (_, c) = thread_record()?;
    Ok(NonNull::new(c.record).expect("a block address is never null"))
}

/// A copy of the calling thread's record, to put back later: what [`Scope`]
/// holds, and what the C ABI's `tld_otel_saved_t` is (the same bytes).
#[repr(C)]
#[derive(Clone)]
pub struct SavedContext {
    record: [u8; MAX_RECORD_SIZE],
}

impl SavedContext {
    /// Copies the calling thread's record.
    pub fn save() -> Result<SavedContext> {
        let (sh, c) = thread_record()?;
        let mut record = [0u8; MAX_RECORD_SIZE];
        unsafe { std::ptr::copy_nonoverlapping(c.record, record.as_mut_ptr(), sh.size) };
        Ok(SavedContext { record })
    }

    /// Puts the saved record back on the calling thread, valid or not as it
    /// was, with the valid-flag protocol; the TLS pointer follows.
    pub fn restore(&self) -> Result<()> {
        let (sh, c) = thread_record()?;
        let rec = c.record;
        let valid = valid_flag(rec);
        valid.store(0, Ordering::Relaxed);
        fence(Ordering::Release);
        unsafe {
            std::ptr::copy_nonoverlapping(self.record.as_ptr(), rec, VALID_OFFSET);
            std::ptr::copy_nonoverlapping(
                self.record.as_ptr().add(VALID_OFFSET + 1),
                rec.add(VALID_OFFSET + 1),
                sh.size - VALID_OFFSET - 1,
            );
        }
        let was_valid = self.record[VALID_OFFSET] == 1;
        valid.store(self.record[VALID_OFFSET], Ordering::Release);
        set_slot(&c, if was_valid { rec } else { std::ptr::null_mut() });
        Ok(())
    }
}

/// A published context that restores the previous one when dropped: the
/// scoped form of [`set`], for code that activates a span and returns.
/// Belongs to the thread that made it; drop scopes in reverse order.
#[must_use = "the previous context comes back when the scope is dropped"]
pub struct Scope {
    saved: SavedContext,
    // Thread-bound: the record it restores is the creating thread's.
    _thread: PhantomData<*const ()>,
}

impl Drop for Scope {
    fn drop(&mut self) {
        // Fails only when the thread's block cannot be had: nothing to restore into.
        let _ = self.saved.restore();
    }
}

/// Publishes `span` and `attributes` as [`set`] does and returns a [`Scope`]
/// that puts the previous context back. Errors as [`set`]; on error nothing
/// changed.
///
/// ```
/// use tld_otel::SpanContext;
///
/// let parent = SpanContext::new([1; 16], [2; 8], 1);
/// let child = SpanContext::new([1; 16], [3; 8], 1);
/// let _p = tld_otel::scope(&parent, &[])?;
/// {
///     let _c = tld_otel::scope(&child, &[("db.system", "postgresql")])?;
///     assert_eq!(tld_otel::current()?.span, child);
/// }
/// assert_eq!(tld_otel::current()?.span, parent);
/// # Ok::<(), tld_otel::Error>(())
/// ```
pub fn scope(span: &SpanContext, attributes: &[(&str, &str)]) -> Result<Scope> {
    let saved = SavedContext::save()?;
    set(span, attributes)?;
    Ok(Scope { saved, _thread: PhantomData })
}
