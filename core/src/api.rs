//! The Rust API: keys, typed access for the calling thread, maps.

use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};


use crate::abi::{self, NameProblem};
use crate::error::{Error, Result};
use crate::keys::{self, CreateError, KeyInfo, KeyKind, ReserveError};
use crate::{maps, runtime};

fn display_name(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

fn check_name(name: &[u8]) -> Result<()> {
    abi::check_name(name).map_err(|p| match p {
        NameProblem::Empty => Error::InvalidName { name: String::new(), reason: "the name is empty" },
        NameProblem::ContainsNul => {
            Error::InvalidName { name: display_name(name), reason: "the name contains a NUL byte" }
        }
        NameProblem::TooLong => Error::NameTooLong { name: display_name(name), len: name.len() },
    })
}

fn check_size(name: &[u8], size: usize, shared: &runtime::Shared) -> Result<u16> {
    let max = abi::max_data_size(shared.page_size());
    if size == 0 {
        return Err(Error::InvalidSize { name: display_name(name), size });
    }
    if size > max {
        // As upstream: a key that can never fit is E2BIG, not EINVAL.
        return Err(Error::NeverFits { name: display_name(name), size, max });
    }
    Ok(size as u16)
}

fn creation_error(name: &[u8], size: usize, e: CreateError, shared: &runtime::Shared) -> Error {
    match e {
        CreateError::Exists(_) => Error::Exists { name: display_name(name) },
        CreateError::TooBig { available } => Error::TooBig { name: display_name(name), size, available },
        CreateError::NoSpace => Error::NoSpace { name: display_name(name), max: shared.max_slots_count() },
        CreateError::Reentered => Error::Reentered { what: "a key creation or lookup" },
    }
}

fn create(name: &[u8], size: usize, kind: KeyKind) -> Result<KeyInfo> {
    check_name(name)?;
    let shared = runtime::runtime()?;
    let size16 = check_size(name, size, shared)?;
    let result = keys::create(shared, &shared.budget, name, size16, kind);
    if kind == KeyKind::Static {
        shared.publish_size();
    }
    result.map_err(|e| creation_error(name, size, e, shared))
}

fn get_or_create(name: &[u8], size: usize, kind: KeyKind) -> Result<KeyInfo> {
    match create(name, size, kind) {
        Err(Error::Exists { .. }) => {
            let found = find(name)?;
            if found.size as usize != size {
                return Err(Error::SizeMismatch {
                    name: display_name(name),
                    existing: found.size as usize,
                    requested: size,
                });
            }
            Ok(found)
        }
        other => other,
    }
}

fn find(name: &[u8]) -> Result<KeyInfo> {
    check_name(name)?;
    let shared = runtime::runtime()?;
    keys::find(shared, name)
        .map_err(|e| creation_error(name, 0, e, shared))?
        .ok_or_else(|| Error::NotFound { name: display_name(name) })
}

impl runtime::Shared {
    fn max_slots_count(&self) -> usize {
        abi::max_slots(self.page_size())
    }
}

/// A key for raw bytes: a slot in the metadata page and a range of every
/// thread's data area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawKey {
    info: KeyInfo,
}

impl RawKey {
    /// Creates a key of `size` bytes. Strict, like upstream `tld_create_key`:
    /// [`Error::Exists`] if the name is taken, [`Error::TooBig`] if it does not
    /// fit the data area, [`Error::NoSpace`] when all slots are taken,
    /// [`Error::InvalidSize`] for 0, [`Error::InvalidName`]/[`Error::NameTooLong`]
    /// for bad names. A failed call changes nothing already published.
    pub fn create(name: impl AsRef<[u8]>, size: usize) -> Result<RawKey> {
        create(name.as_ref(), size, KeyKind::Dynamic).map(|info| RawKey { info })
    }

    /// Returns the key of that name if it exists with `size` bytes
    /// ([`Error::SizeMismatch`] if with another size), else creates it.
    ///
    /// ```
    /// let a = tld::RawKey::get_or_create("shared_by_two_libraries", 16)?;
    /// let b = tld::RawKey::get_or_create("shared_by_two_libraries", 16)?;
    /// assert_eq!(a, b);
    /// b.write(b"sixteen bytes!!!")?;
    /// let mut out = [0u8; 16];
    /// a.read(&mut out)?;
    /// assert_eq!(&out, b"sixteen bytes!!!");
    /// # Ok::<(), tld::Error>(())
    /// ```
    pub fn get_or_create(name: impl AsRef<[u8]>, size: usize) -> Result<RawKey> {
        get_or_create(name.as_ref(), size, KeyKind::Dynamic).map(|info| RawKey { info })
    }

    /// Creates a static key: while no thread block exists it grows every
    /// block by its size instead of using the dynamic reserve. Used by
    /// [`static_key!`](crate::static_key!) and `TLD_DEFINE_KEY`; get-or-create semantics.
    pub fn get_or_create_static(name: impl AsRef<[u8]>, size: usize) -> Result<RawKey> {
        get_or_create(name.as_ref(), size, KeyKind::Static).map(|info| RawKey { info })
    }

    /// Creates a static key, strictly (upstream `TLD_DEFINE_KEY` semantics).
    pub fn create_static(name: impl AsRef<[u8]>, size: usize) -> Result<RawKey> {
        create(name.as_ref(), size, KeyKind::Static).map(|info| RawKey { info })
    }

    /// Finds a published key by name ([`Error::NotFound`] if none).
    pub fn find(name: impl AsRef<[u8]>) -> Result<RawKey> {
        find(name.as_ref()).map(|info| RawKey { info })
    }

    /// Offset of the value in every thread's data area (the upstream `tld_key_t.off`).
    pub fn offset(&self) -> usize {
        self.info.offset as usize
    }

    /// Size of the value in bytes.
    pub fn size(&self) -> usize {
        self.info.size as usize
    }

    /// Index of the key's metadata slot.
    pub fn slot(&self) -> usize {
        self.info.slot as usize
    }

    /// Pointer to the calling thread's value (8-byte aligned, `size()` bytes).
    /// The first call on a thread allocates and registers its block. The
    /// pointer is valid on this thread until it exits (or calls
    /// [`free_thread_block`]); other threads must not use it.
    #[inline]
    pub fn as_ptr(&self) -> Result<NonNull<u8>> {
        let data = runtime::thread_data()?;
        // SAFETY: every published key lies inside the frozen data size, which every block holds.
        Ok(unsafe { NonNull::new_unchecked(data.add(self.info.offset as usize)) })
    }

    /// Copies `bytes` (at most `size()` of them) into the calling thread's value.
    pub fn write(&self, bytes: &[u8]) -> Result<()> {
        if bytes.len() > self.size() {
            return Err(Error::InvalidSize { name: format!("slot {}", self.slot()), size: bytes.len() });
        }
        let p = self.as_ptr()?;
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.as_ptr(), bytes.len()) };
        Ok(())
    }

    /// Copies the calling thread's value into `buf` (at most `size()` bytes).
    pub fn read(&self, buf: &mut [u8]) -> Result<usize> {
        let n = buf.len().min(self.size());
        let p = self.as_ptr()?;
        unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), buf.as_mut_ptr(), n) };
        Ok(n)
    }
}

/// Plain old data: any bit pattern is a valid value and there are no
/// pointers, so BPF, other languages and other threads may write it.
///
/// Implemented for the integers, `f32`, `f64` and arrays of them. For a
/// struct of your own, enable the crate's `bytemuck` feature (off by
/// default) and derive `bytemuck::Pod`: every
/// `bytemuck::Pod` type is a `Pod` here, and bytemuck's derive refuses at
/// compile time a struct with padding (whose bytes BPF would read
/// uninitialized), pointers, or a layout other than `#[repr(C)]` or
/// `#[repr(transparent)]`. No `unsafe` in your code:
///
/// ```
/// # #[cfg(feature = "bytemuck")] {
/// // Cargo.toml: task-local-data = { version = "..", features = ["bytemuck"] }
/// //             bytemuck = { version = "1", features = ["derive"] }
/// #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
/// #[repr(C)]
/// struct Hints {
///     request_id: u64,
///     priority: i32,
///     in_critical_section: u32, // not a bool: any bit pattern must be valid
/// }
///
/// let hints = tld::Key::<Hints>::create("hints")?;
/// hints.set(Hints { request_id: 42, priority: 3, in_critical_section: 1 })?;
/// assert_eq!(hints.get()?.request_id, 42);
/// # }
/// # Ok::<(), tld::Error>(())
/// ```
///
/// Padding is a compile error (here 4 bytes after `priority`):
///
/// ```compile_fail
/// #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
/// #[repr(C)]
/// struct Padded {
///     priority: i32,
///     request_id: u64,
/// }
/// ```
///
/// Values are 8-byte aligned in every thread block: a type aligned to more
/// is refused when its key is made ([`Error::Alignment`]).
///
/// # Safety
/// Without the feature, implement it by hand only for `Copy` types that have
/// no padding, no references or pointers, no invalid bit patterns (no
/// `bool`, `char` or enums), with alignment at most 8. With the feature,
/// implement `bytemuck::Pod` instead: a manual `Pod` impl conflicts with
/// nothing only for types that are not `bytemuck::Pod`.
pub unsafe trait Pod: Copy + 'static {}

// Without bytemuck: the primitives and arrays, listed here. With it: the
// one blanket impl below covers them (bytemuck implements its Pod for every
// primitive and array), and two impls would overlap.
#[cfg(not(feature = "bytemuck"))]
macro_rules! pod {
    ($($t:ty),*) => { $(unsafe impl Pod for $t {})* };
}
#[cfg(not(feature = "bytemuck"))]
pod!(u8, u16, u32, u64, i8, i16, i32, i64, usize, isize, f32, f64);
#[cfg(not(feature = "bytemuck"))]
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}

// SAFETY: bytemuck::Pod promises what Pod needs (any bit pattern valid, no
// padding, no pointers, Copy + 'static); alignment is checked at key creation.
#[cfg(feature = "bytemuck")]
unsafe impl<T: bytemuck::Pod> Pod for T {}

/// A key holding a `T`, shared by name with BPF and every other language.
#[derive(Debug, PartialEq, Eq)]
pub struct Key<T: Pod> {
    raw: RawKey,
    _type: PhantomData<fn() -> T>,
}

impl<T: Pod> Clone for Key<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: Pod> Copy for Key<T> {}

impl<T: Pod> Key<T> {
    fn typed(name: &[u8], raw: Result<RawKey>) -> Result<Self> {
        if std::mem::align_of::<T>() > abi::VALUE_ALIGN {
            return Err(Error::Alignment { name: display_name(name), align: std::mem::align_of::<T>() });
        }
        raw.map(|raw| Key { raw, _type: PhantomData })
    }

    /// Creates the key (strict); errors as [`RawKey::create`].
    ///
    /// ```
    /// // Without an attached map the values still work; BPF sees them once one is attached.
    /// let in_cs = tld::Key::<u8>::create("in_critical_section")?;
    /// in_cs.set(1)?;
    /// assert_eq!(in_cs.get()?, 1);
    /// assert_eq!(tld::Key::<u8>::create("in_critical_section").unwrap_err().errno(), libc::EEXIST);
    /// std::thread::spawn(move || assert_eq!(in_cs.get().unwrap(), 0)).join().unwrap();
    /// # Ok::<(), tld::Error>(())
    /// ```
    pub fn create(name: impl AsRef<[u8]>) -> Result<Self> {
        let name = name.as_ref();
        Self::typed(name, RawKey::create(name, std::mem::size_of::<T>()))
    }

    /// Returns the existing key of this name and size, or creates it.
    pub fn get_or_create(name: impl AsRef<[u8]>) -> Result<Self> {
        let name = name.as_ref();
        Self::typed(name, RawKey::get_or_create(name, std::mem::size_of::<T>()))
    }

    /// Finds an existing key; [`Error::SizeMismatch`] if its size is not `size_of::<T>()`.
    pub fn find(name: impl AsRef<[u8]>) -> Result<Self> {
        let name = name.as_ref();
        let raw = RawKey::find(name)?;
        if raw.size() != std::mem::size_of::<T>() {
            return Err(Error::SizeMismatch {
                name: display_name(name),
                existing: raw.size(),
                requested: std::mem::size_of::<T>(),
            });
        }
        Self::typed(name, Ok(raw))
    }

    /// Types an untyped key; [`Error::SizeMismatch`] unless its size is `size_of::<T>()`.
    pub fn try_from_raw(raw: RawKey) -> Result<Self> {
        let name = format!("slot {}", raw.slot());
        if raw.size() != std::mem::size_of::<T>() {
            return Err(Error::SizeMismatch { name, existing: raw.size(), requested: std::mem::size_of::<T>() });
        }
        Self::typed(name.as_bytes(), Ok(raw))
    }

    /// The untyped key.
    pub fn raw(&self) -> RawKey {
        self.raw
    }

    /// Pointer to the calling thread's value; see [`RawKey::as_ptr`] for the thread rule.
    #[inline]
    pub fn as_ptr(&self) -> Result<NonNull<T>> {
        self.raw.as_ptr().map(NonNull::cast)
    }

    /// The calling thread's value (zero until set).
    #[inline]
    pub fn get(&self) -> Result<T> {
        // Volatile: BPF and the inspector read this memory outside the compiler's view.
        self.as_ptr().map(|p| unsafe { std::ptr::read_volatile(p.as_ptr()) })
    }

    /// Sets the calling thread's value: one store once the thread is set up.
    #[inline]
    pub fn set(&self, value: T) -> Result<()> {
        self.as_ptr().map(|p| unsafe { std::ptr::write_volatile(p.as_ptr(), value) })
    }
}

/// A key defined at load time with [`static_key!`](crate::static_key!): it gets exactly its size
/// in every thread block. It resolves itself on first use if the loader did
/// not run its constructor.
pub struct StaticKey<T: Pod> {
    name: &'static str,
    /// 0 unresolved; `1 << 63 | slot << 32 | offset << 16 | size` resolved.
    state: AtomicU64,
    _type: PhantomData<fn() -> T>,
}

const RESOLVED: u64 = 1 << 63;

impl<T: Pod> StaticKey<T> {
    #[doc(hidden)]
    pub const fn new(name: &'static str) -> Self {
        StaticKey { name, state: AtomicU64::new(0), _type: PhantomData }
    }

    /// Creates the key now (the constructor [`static_key!`](crate::static_key!) emits calls this).
    #[doc(hidden)]
    pub fn register(&self) {
        let _ = self.key();
    }

    /// The key's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The typed key: get-or-create of a static key of `size_of::<T>()`
    /// bytes, done once; afterwards a load.
    ///
    /// On failure it returns the error (naming the key and the cause, as
    /// [`RawKey::get_or_create_static`]: another size under that name is
    /// [`Error::SizeMismatch`], no room left [`Error::TooBig`] or
    /// [`Error::NoSpace`], an incompatible runtime in the process
    /// [`Error::IncompatibleRuntime`]) and remembers nothing: the next call
    /// tries again. The constructor [`static_key!`](crate::static_key!) emits makes the first
    /// attempt before `main` and ignores its error, which the first use then
    /// reports.
    pub fn key(&self) -> Result<Key<T>> {
        let s = self.state.load(Ordering::Acquire);
        if s & RESOLVED != 0 {
            let info = KeyInfo { slot: (s >> 32) as u16, offset: (s >> 16) as u16, size: s as u16 };
            return Ok(Key { raw: RawKey { info }, _type: PhantomData });
        }
        let result =
            Key::typed(self.name.as_bytes(), RawKey::get_or_create_static(self.name, std::mem::size_of::<T>()));
        if let Ok(k) = &result {
            let i = k.raw.info;
            let packed = RESOLVED | (i.slot as u64) << 32 | (i.offset as u64) << 16 | i.size as u64;
            self.state.store(packed, Ordering::Release);
        }
        result
    }

    /// The calling thread's value.
    pub fn get(&self) -> Result<T> {
        self.key()?.get()
    }

    /// Sets the calling thread's value.
    pub fn set(&self, value: T) -> Result<()> {
        self.key()?.set(value)
    }

    /// Pointer to the calling thread's value.
    pub fn as_ptr(&self) -> Result<NonNull<T>> {
        self.key()?.as_ptr()
    }
}

/// Defines a static key created before `main` (like `TLD_DEFINE_KEY`), so it
/// gets exactly its size in every thread block.
///
/// ```
/// tld::static_key!(static REQUEST_ID: u64 = "request_id");
///
/// REQUEST_ID.set(42)?;
/// assert_eq!(REQUEST_ID.get()?, 42);
/// assert_eq!(tld::RawKey::find("request_id")?.size(), 8);
/// # Ok::<(), tld::Error>(())
/// ```
#[macro_export]
macro_rules! static_key {
    ($(#[$attr:meta])* $vis:vis static $ident:ident : $ty:ty = $name:expr $(;)?) => {
        $(#[$attr])*
        $vis static $ident: $crate::StaticKey<$ty> = $crate::StaticKey::new($name);
        const _: () = {
            extern "C" fn __tld_register_static_key() {
                $ident.register();
            }
            #[used]
            #[link_section = ".init_array"]
            static __TLD_REGISTER: extern "C" fn() = __tld_register_static_key;
        };
    };
}

/// Attaches the map pinned at [`default_map_path()`](crate::default_map_path)
/// (`$TLD_MAP_PATH` or `/sys/fs/bpf/tld/tld_data_map`).
pub fn attach_default() -> Result<()> {
    maps::attach_path(&maps::default_map_path())
}

/// Attaches the `tld_data_map` pinned at `path`. Every thread registers with
/// it on its next data access. Attaching the same map again is a no-op.
///
/// Errors name the path and the cause: nothing there, not on bpffs, not a
/// map, a map of another type or layout, no BTF, no permission.
pub fn attach_path(path: impl AsRef<Path>) -> Result<()> {
    maps::attach_path(path.as_ref())
}

/// Attaches the map behind `fd`. The runtime keeps its own duplicate, so the
/// caller may close `fd` afterwards.
pub fn attach_fd(fd: BorrowedFd<'_>) -> Result<()> {
    maps::attach_fd(fd.as_raw_fd()).map(drop)
}

/// Sets the bytes every thread block keeps for keys created after the first
/// block exists (default [`DEFAULT_DYNAMIC_RESERVE`](crate::DEFAULT_DYNAMIC_RESERVE)).
/// It may grow until the first thread touches its data and shrink only while
/// no key exists; otherwise `EBUSY`.
pub fn set_dynamic_reserve(bytes: usize) -> Result<()> {
    let shared = runtime::runtime()?;
    let reason = match shared.budget.set_reserve(bytes) {
        Ok(_) => {
            shared.publish_size();
            return Ok(());
        }
        Err(ReserveError::Frozen) => "a thread block exists, so the data size is frozen".to_string(),
        Err(ReserveError::KeysExist) => "keys exist; the reserve can only grow now".to_string(),
        Err(ReserveError::TooLarge { max }) => format!("too large: at most {max} bytes"),
    };
    Err(Error::Reserve { requested: bytes, reason })
}

/// Every published key, in slot order.
pub fn keys() -> Result<Vec<(String, RawKey)>> {
    use crate::keys::MetaSlots;
    let shared = runtime::runtime()?;
    let cnt = (shared.cnt().load(Ordering::Acquire) as usize).min(shared.max_slots());
    let mut out = Vec::with_capacity(cnt);
    let mut off = 0usize;
    for i in 0..cnt {
        let size = keys::wait_size(shared, i).map_err(|e| creation_error(b"", 0, e, shared))?;
        let field = shared.slot_name(i);
        let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
        let info = KeyInfo { slot: i as u16, offset: off as u16, size };
        out.push((display_name(&field[..end]), RawKey { info }));
        off += abi::round_up8(size as usize);
    }
    Ok(out)
}

/// The calling thread's data area (the base every key offset is relative to),
/// allocating and registering its block on first use.
#[inline]
pub fn thread_data() -> Result<NonNull<u8>> {
    runtime::thread_data().map(|p| unsafe { NonNull::new_unchecked(p) })
}

/// Releases the calling thread's block now, deregistering it from every map
/// (upstream `tld_free()`). Blocks are released at thread exit anyway. Any
/// pointer into the block, from any language, is invalid afterwards; the next
/// access allocates a new block.
pub fn free_thread_block() {
    // The only failure is a signal handler interrupting this thread's first
    // access, when there is no block to free yet.
    let _ = runtime::free_thread_block();
}

/// Checks every map attached by path against its pin now and follows a
/// replaced pin (DESIGN §8.4): the new map is attached, every live thread is
/// registered with it, the old map detached. The pin watcher does the same
/// within about a second unless `TLD_PIN_WATCH=0`; call this to be sure at a
/// point of your choosing.
pub fn refresh() -> Result<()> {
    maps::refresh()
}

/// A snapshot of the runtime, for tests and diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuntimeStats {
    /// Address of the metadata page: the same in every copy of the core in a process.
    pub meta_page: usize,
    /// Page size the runtime was laid out for.
    pub page_size: usize,
    /// Thread blocks allocated and not yet released.
    pub live_blocks: usize,
    /// Released blocks kept out of use until their map entries are deleted (DESIGN §5.2).
    pub quarantined_blocks: usize,
    /// Maps attached.
    pub attached_maps: usize,
    /// Bytes of data every block holds (static keys + dynamic reserve).
    pub data_size: usize,
    /// Whether the data size is frozen (a block exists or existed).
    pub frozen: bool,
}

/// Creates or joins the runtime and describes it.
pub fn runtime_stats() -> Result<RuntimeStats> {
    let s = runtime::runtime()?;
    let budget = s.budget.load();
    Ok(RuntimeStats {
        meta_page: s.meta_page() as usize,
        page_size: s.page_size(),
        live_blocks: s.pool.live(),
        quarantined_blocks: s.pool.quarantined(),
        attached_maps: s.maps.live_count(),
        data_size: budget.capacity(),
        frozen: budget.frozen(),
    })
}

pub use crate::runtime::DataCache;

/// Fills a binding's [`DataCache`] with the calling thread's data area
/// (allocating and registering its block on first use) and registers the
/// cache with the runtime, which clears it when the pointer stops being the
/// one to use (DESIGN §4). With `map_fd`, upstream `tld_get_data` semantics:
/// the map it names is attached when the thread gets its block. Returns the
/// data area, and how many of its bytes keys may use.
///
/// # Safety
/// `cache` lives in thread-local storage of the calling thread, outlives
/// every use by the runtime (thread-locals without destructors do), and is
/// only ever used by that thread's hot path.
#[doc(hidden)]
pub unsafe fn fill_thread_cache(cache: *const DataCache, map_fd: Option<i32>) -> Result<(NonNull<u8>, usize)> {
    let shared = runtime::runtime()?;
    if let Some(fd) = map_fd {
        let allocating = runtime::thread_descriptor(shared)?.is_null();
        maps::attach_for_get_data(fd, allocating)?;
    }
    let data = runtime::fill_cache(shared, unsafe { &*cache })?;
    Ok((unsafe { NonNull::new_unchecked(data) }, shared.data_size()))
}

/// Registers the calling thread with the map behind `map_fd`, attaching it
/// first if needed, and returns its data area (upstream `tld_get_data`).
#[doc(hidden)]
pub fn thread_data_for_map_fd(map_fd: i32) -> Result<NonNull<u8>> {
    let shared = runtime::runtime()?;
    let allocating = runtime::thread_descriptor(shared)?.is_null();
    maps::attach_for_get_data(map_fd, allocating)?;
    thread_data()
}

/// Kernel ids of the attached maps (for tests and diagnostics).
#[doc(hidden)]
pub fn attached_map_ids() -> Result<Vec<u32>> {
    Ok(runtime::runtime()?.maps.live_ids())
}

/// A process-wide word of the shared runtime reserved for one companion
/// library (DESIGN §4): whichever copy of the core asks, in whatever
/// language, gets the same word, so "exactly one per process" decisions
/// (claim with a compare-and-swap from 0) hold across copies.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum RuntimeExtension {
    /// The OpenTelemetry process context (OTEP 4719) mapping of this process.
    OtelProcessContext = 0,
    /// The OpenTelemetry thread-context TLS publisher (OTEP 4947) of this process.
    OtelThreadSymbol = 1,
}

/// The shared runtime's word for `which` (created or joined on first use).
#[doc(hidden)]
pub fn runtime_extension(which: RuntimeExtension) -> Result<&'static AtomicU64> {
    Ok(&runtime::runtime()?.extensions[which as usize])
}

/// The rendezvous addresses this process's copies of the core try, in order
/// (DESIGN §4), for tests of the rendezvous.
#[doc(hidden)]
pub fn runtime_candidates() -> Vec<usize> {
    runtime::rendezvous::candidates(runtime::rendezvous::address_bits()).collect()
}
