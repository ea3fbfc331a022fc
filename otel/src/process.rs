//! The process context (OTEP 4719) and the attribute key map (OTEP 4947),
//! one per process whatever the number of copies of this crate (DESIGN §10.3,
//! §10.4).
//!
//! Every copy finds one `State` through the runtime's process-wide word
//! `RuntimeExtension::OtelProcessContext`: the first copy maps it and claims
//! the word with a compare-and-swap; the others join it. The state lives in
//! a private anonymous mapping that a child inherits across `fork()`, so the
//! key indexes inherited thread records use keep their meaning. The
//! `OTEL_CTX` mapping it publishes is `MADV_DONTFORK`: a child publishes its
//! own on its next use of the API.

use std::cell::UnsafeCell;
use std::sync::atomic::{fence, AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::Once;

use prost::Message;

use crate::error::{Error, Result};
use crate::proto::{AnyValue, ArrayValue, KeyValue, Resource, Value};

/// The `threadlocal.schema_version` tld publishes unless told otherwise.
pub const DEFAULT_SCHEMA_VERSION: &str = "tld_uptr_v1";
/// Attribute keys a process can register: OTEP 4947 key indexes are one byte.
pub const MAX_ATTRIBUTE_KEYS: usize = 256;
/// Longest attribute key name in bytes.
pub const MAX_ATTRIBUTE_KEY_NAME: usize = 127;
/// Bytes the application's resource attributes may take, protobuf-encoded.
pub const MAX_RESOURCE_BYTES: usize = 16384;
/// Longest `threadlocal.schema_version` value.
pub const MAX_SCHEMA_VERSION: usize = 63;

/// Bytes of the `OTEL_CTX` mapping: the header, then the payload (room for a
/// full key map and resource; pages stay unbacked until written).
pub const CONTEXT_MAPPING_SIZE: usize = 65536;
/// Bytes of the OTEP 4719 header.
pub const CONTEXT_HEADER_SIZE: usize = 32;
/// The OTEP 4719 format version tld writes.
pub const CONTEXT_VERSION: u32 = 2;
/// The signature, written last.
pub const CONTEXT_SIGNATURE: &[u8; 8] = b"OTEL_CTX";

const STATE_MAGIC: u64 = u64::from_le_bytes(*b"TLDOTELS");
/// Layout of `State`: major << 16 | minor. A different major refuses to join.
const STATE_VERSION: u32 = 1 << 16;

/// An attribute value of the process context.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ResourceValue<'a> {
    /// `string_value`.
    String(&'a str),
    /// `bool_value`.
    Bool(bool),
    /// `int_value`.
    Int(i64),
    /// `double_value`.
    Double(f64),
}

/// The OTEP 4719 header (32 bytes, host byte order).
#[repr(C)]
struct ContextHeader {
    signature: AtomicU64,
    version: u32,
    payload_size: AtomicU32,
    published_at_ns: AtomicU64,
    payload: AtomicU64,
}

/// What only the lock holder reads or writes.
#[repr(C)]
struct Locked {
    /// Address of the `OTEL_CTX` mapping published by `pid` (0: none).
    context: u64,
    /// `published_at_ns` of the last publication: every new one is larger.
    published_at_ns: u64,
    schema_len: u32,
    resource_len: u32,
    schema: [u8; MAX_SCHEMA_VERSION + 1],
    resource: [u8; MAX_RESOURCE_BYTES],
}

/// The process-wide state, shared by every copy (its layout is versioned).
#[repr(C)]
struct State {
    magic: u64,
    version: u32,
    /// Keys registered: names `0..key_count` are written and never change.
    key_count: AtomicU32,
    /// Thread id of the lock holder, 0 when free.
    lock: AtomicI32,
    /// The process whose `OTEL_CTX` mapping `Locked::context` is (0: never published).
    pid: AtomicI32,
    /// `[len, bytes...]` per key index.
    key_names: [[u8; MAX_ATTRIBUTE_KEY_NAME + 1]; MAX_ATTRIBUTE_KEYS],
    locked: UnsafeCell<Locked>,
}

// SAFETY: `locked` is only touched under `lock`; names are written before `key_count` publishes them.
unsafe impl Sync for State {}

fn state_mapping_len() -> usize {
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    std::mem::size_of::<State>().div_ceil(page) * page
}

fn state() -> Result<&'static State> {
    let word = tld::runtime_extension(tld::RuntimeExtension::OtelProcessContext)?;
    let mut addr = word.load(Ordering::Acquire);
    if addr == 0 {
        let len = state_mapping_len();
        // A private anonymous mapping: inherited by fork(), zero-filled.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        if p == libc::MAP_FAILED {
            return Err(Error::os("otel process state: mmap"));
        }
        let fresh = p as *mut State;
        unsafe {
            (*fresh).magic = STATE_MAGIC;
            (*fresh).version = STATE_VERSION;
        }
        match word.compare_exchange(0, p as u64, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => addr = p as u64,
            Err(theirs) => {
                unsafe { libc::munmap(p, len) };
                addr = theirs;
            }
        }
    }
    let s = unsafe { &*(addr as *const State) };
    if s.magic != STATE_MAGIC || s.version >> 16 != STATE_VERSION >> 16 {
        return Err(Error::new(
            libc::EPROTO,
            format!(
                "otel process state at {addr:#x}: another copy of tld's OpenTelemetry support in this process \
                 uses layout {}.{}, this one {}.{}",
                s.version >> 16,
                s.version & 0xffff,
                STATE_VERSION >> 16,
                STATE_VERSION & 0xffff
            ),
        ));
    }
    Ok(s)
}

fn gettid() -> i32 {
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// Whether `tid` is a thread of this process. After fork() the parent's
/// threads are not, so a lock one of them held is stale in the child.
fn thread_alive(tid: i32) -> bool {
    let r = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

struct Guard<'a> {
    state: &'a State,
}

impl State {
    /// Takes the lock: the single-writer rule of OTEP 4947 for the key map
    /// and of OTEP 4719 for the mapping, across every copy and thread.
    fn lock(&self) -> Result<Guard<'_>> {
        let me = gettid();
        let mut spins = 0u32;
        loop {
            match self.lock.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Ok(Guard { state: self }),
                Err(holder) if holder == me => {
                    return Err(Error::new(
                        libc::EDEADLK,
                        "otel process context: called from a signal handler that interrupted an update of it on this thread",
                    ))
                }
                Err(holder) => {
                    spins += 1;
                    if spins % 64 == 0 && !thread_alive(holder) {
                        let _ = self.lock.compare_exchange(holder, 0, Ordering::AcqRel, Ordering::Relaxed);
                    }
                    std::thread::yield_now();
                }
            }
        }
    }

    fn key_name(&self, i: usize) -> &[u8] {
        let slot = &self.key_names[i];
        &slot[1..1 + slot[0] as usize]
    }

    /// Looks a name up without the lock.
    fn find_key(&self, name: &[u8]) -> Option<u8> {
        let n = self.key_count.load(Ordering::Acquire) as usize;
        (0..n.min(MAX_ATTRIBUTE_KEYS)).find(|&i| self.key_name(i) == name).map(|i| i as u8)
    }
}

impl Guard<'_> {
    #[allow(clippy::mut_from_ref)] // the lock makes this the only reference
    fn locked(&self) -> &mut Locked {
        unsafe { &mut *self.state.locked.get() }
    }

    fn schema(&self) -> String {
        let l = self.locked();
        if l.schema_len == 0 {
            DEFAULT_SCHEMA_VERSION.to_string()
        } else {
            String::from_utf8_lossy(&l.schema[..l.schema_len as usize]).into_owned()
        }
    }

    /// The payload: the application's attributes, then tld's `threadlocal.*` ones.
    fn payload(&self) -> Vec<u8> {
        let s = self.state;
        let l = self.locked();
        let mut bytes = l.resource[..l.resource_len as usize].to_vec();
        let n = s.key_count.load(Ordering::Acquire) as usize;
        let names = (0..n)
            .map(|i| AnyValue { value: Some(Value::String(String::from_utf8_lossy(s.key_name(i)).into_owned())) })
            .collect();
        let tld = Resource {
            attributes: vec![
                KeyValue::new("threadlocal.schema_version", Value::String(self.schema())),
                KeyValue::new("threadlocal.attribute_key_map", Value::Array(ArrayValue { values: names })),
            ],
            dropped_attributes_count: 0,
        };
        bytes.extend(tld.encode_to_vec());
        bytes
    }

    /// Publishes (OTEP 4719 publication protocol) or updates (updating
    /// protocol) the `OTEL_CTX` mapping of this process.
    fn publish(&self) -> Result<()> {
        let payload = self.payload();
        if payload.len() > CONTEXT_MAPPING_SIZE - CONTEXT_HEADER_SIZE {
            return Err(Error::too_big(format!(
                "otel process context: the payload is {} bytes, more than the {} its mapping holds",
                payload.len(),
                CONTEXT_MAPPING_SIZE - CONTEXT_HEADER_SIZE
            )));
        }
        let pid = unsafe { libc::getpid() };
        let l = self.locked();
        let now = realtime_ns().max(l.published_at_ns + 1);
        // After fork() the parent's mapping is gone (MADV_DONTFORK): map a new one.
        if self.state.pid.load(Ordering::Relaxed) != pid || l.context == 0 {
            let base = map_context()?;
            let hdr = unsafe { &mut *(base as *mut ContextHeader) };
            unsafe { copy_payload(base, &payload) };
            hdr.version = CONTEXT_VERSION;
            hdr.payload_size.store(payload.len() as u32, Ordering::Relaxed);
            hdr.payload.store(base as u64 + CONTEXT_HEADER_SIZE as u64, Ordering::Relaxed);
            hdr.published_at_ns.store(now, Ordering::Relaxed);
            // Every field before the signature: a reader that sees it sees them.
            fence(Ordering::SeqCst);
            hdr.signature.store(u64::from_ne_bytes(*CONTEXT_SIGNATURE), Ordering::Release);
            name_context(base);
            l.context = base as u64;
            self.state.pid.store(pid, Ordering::Release);
        } else {
            let base = l.context as *mut u8;
            let hdr = unsafe { &*(base as *const ContextHeader) };
            hdr.published_at_ns.store(0, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            unsafe { copy_payload(base, &payload) };
            hdr.payload_size.store(payload.len() as u32, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            hdr.published_at_ns.store(now, Ordering::Release);
            name_context(base);
        }
        l.published_at_ns = now;
        Ok(())
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.state.lock.store(0, Ordering::Release);
    }
}

unsafe fn copy_payload(base: *mut u8, payload: &[u8]) {
    unsafe { std::ptr::copy_nonoverlapping(payload.as_ptr(), base.add(CONTEXT_HEADER_SIZE), payload.len()) };
}

fn realtime_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64).max(1)
}

/// Maps the `OTEL_CTX` region: a memfd named OTEL_CTX (it shows as
/// `/memfd:OTEL_CTX` in /proc/PID/maps), else a shared anonymous mapping
/// named with prctl (`[anon_shmem:OTEL_CTX]`), as OTEP 4719 steps 2 to 5 say.
fn map_context() -> Result<*mut u8> {
    let len = CONTEXT_MAPPING_SIZE;
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let fd = unsafe { libc::memfd_create(c"OTEL_CTX".as_ptr(), libc::MFD_CLOEXEC) };
    let p = if fd >= 0 && unsafe { libc::ftruncate(fd, len as libc::off_t) } == 0 {
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_PRIVATE, fd, 0) };
        unsafe { libc::close(fd) };
        p
    } else {
        if fd >= 0 {
            unsafe { libc::close(fd) };
        }
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1, 0) };
        if p != libc::MAP_FAILED && !name_context(p as *mut u8) {
            // Neither a memfd nor a name: readers could not find it (OTEP 4719).
            unsafe { libc::munmap(p, len) };
            return Err(Error::new(
                libc::EOPNOTSUPP,
                "otel process context: memfd_create and PR_SET_VMA_ANON_NAME both failed, so readers could not find the mapping",
            ));
        }
        p
    };
    if p == libc::MAP_FAILED {
        return Err(Error::os("otel process context: mmap of OTEL_CTX"));
    }
    if unsafe { libc::madvise(p, len, libc::MADV_DONTFORK) } != 0 {
        let e = Error::os("otel process context: madvise(MADV_DONTFORK)");
        unsafe { libc::munmap(p, len) };
        return Err(e);
    }
    Ok(p as *mut u8)
}

/// Names the mapping `OTEL_CTX` (Linux 5.17+ with CONFIG_ANON_VMA_NAME; a
/// memfd mapping is named by its file already and the call fails there).
/// Done on every publication, as the OTEP asks, for readers hooking prctl.
fn name_context(base: *mut u8) -> bool {
    const PR_SET_VMA: libc::c_int = 0x53564d41;
    const PR_SET_VMA_ANON_NAME: libc::c_ulong = 0;
    let r = unsafe {
        libc::prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, base as libc::c_ulong, CONTEXT_MAPPING_SIZE, c"OTEL_CTX".as_ptr())
    };
    r == 0
}

/// Set in the child of a fork() by this copy's handler: the next thread
/// record published republishes the process context first.
static STALE_AFTER_FORK: AtomicBool = AtomicBool::new(true);
static FORK_HANDLER: Once = Once::new();

extern "C" fn child_after_fork() {
    STALE_AFTER_FORK.store(true, Ordering::Relaxed);
}

/// Publishes the process context unless this process already did: called
/// when a thread record is published, so OTEP readers find the key map.
#[inline]
pub(crate) fn ensure_published() -> Result<()> {
    if !STALE_AFTER_FORK.load(Ordering::Relaxed) {
        return Ok(());
    }
    ensure_published_slow()
}

#[cold]
fn ensure_published_slow() -> Result<()> {
    FORK_HANDLER.call_once(|| unsafe {
        libc::pthread_atfork(None, None, Some(child_after_fork));
    });
    let s = state()?;
    if s.pid.load(Ordering::Acquire) != unsafe { libc::getpid() } {
        let g = s.lock()?;
        if s.pid.load(Ordering::Relaxed) != unsafe { libc::getpid() } {
            g.publish()?;
        }
    }
    STALE_AFTER_FORK.store(false, Ordering::Relaxed);
    Ok(())
}

fn check_key_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_ATTRIBUTE_KEY_NAME || name.contains('\0') {
        return Err(Error::invalid(format!(
            "otel attribute key {name:?}: names are 1 to {MAX_ATTRIBUTE_KEY_NAME} bytes of UTF-8 without NUL ({} given)",
            name.len()
        )));
    }
    Ok(())
}

/// The index of attribute key `name` in `threadlocal.attribute_key_map`,
/// registering it (and republishing the process context) if it is new.
pub(crate) fn key_index(name: &str) -> Result<u8> {
    let s = state()?;
    if let Some(i) = s.find_key(name.as_bytes()) {
        return Ok(i);
    }
    check_key_name(name)?;
    let g = s.lock()?;
    if let Some(i) = s.find_key(name.as_bytes()) {
        return Ok(i);
    }
    let n = s.key_count.load(Ordering::Relaxed) as usize;
    if n >= MAX_ATTRIBUTE_KEYS {
        return Err(Error::new(
            libc::ENOSPC,
            format!("otel attribute key {name:?}: the key map is full ({MAX_ATTRIBUTE_KEYS} keys, one-byte indexes)"),
        ));
    }
    // SAFETY: slot n is not published yet and only the lock holder writes it.
    let slot = unsafe { &mut *(s.key_names[n].as_ptr() as *mut [u8; MAX_ATTRIBUTE_KEY_NAME + 1]) };
    slot[0] = name.len() as u8;
    slot[1..1 + name.len()].copy_from_slice(name.as_bytes());
    s.key_count.store(n as u32 + 1, Ordering::Release);
    // Published before the index is handed out: a record using it is never
    // seen before the key map naming it.
    g.publish()?;
    Ok(n as u8)
}

/// How many attribute keys are registered.
pub(crate) fn key_count() -> Result<usize> {
    Ok(state()?.key_count.load(Ordering::Acquire) as usize)
}

/// The registered attribute key names, by index.
pub fn attribute_keys() -> Result<Vec<String>> {
    let s = state()?;
    let n = s.key_count.load(Ordering::Acquire) as usize;
    Ok((0..n).map(|i| String::from_utf8_lossy(s.key_name(i)).into_owned()).collect())
}

/// Sets the application's resource attributes (replacing earlier ones) and
/// publishes the process context with them, `threadlocal.schema_version` and
/// `threadlocal.attribute_key_map`.
///
/// Keys must be unique, 1 to 255 bytes, and not in the `threadlocal.`
/// namespace (tld writes those): otherwise `EINVAL`. More than
/// [`MAX_RESOURCE_BYTES`] encoded: `E2BIG`. `EDEADLK` from a signal handler
/// that interrupted an update on the same thread.
pub fn publish_process_context(attributes: &[(&str, ResourceValue<'_>)]) -> Result<()> {
    for (i, (key, _)) in attributes.iter().enumerate() {
        if key.is_empty() || key.len() > 255 || key.starts_with("threadlocal.") {
            return Err(Error::invalid(format!(
                "otel resource attribute {key:?}: keys are 1 to 255 bytes and the threadlocal. namespace belongs to tld"
            )));
        }
        if attributes[..i].iter().any(|(k, _)| k == key) {
            return Err(Error::invalid(format!("otel resource attribute {key:?} is given twice (keys must be unique)")));
        }
    }
    let resource = Resource {
        attributes: attributes
            .iter()
            .map(|(k, v)| {
                let v = match *v {
                    ResourceValue::String(s) => Value::String(s.to_string()),
                    ResourceValue::Bool(b) => Value::Bool(b),
                    ResourceValue::Int(i) => Value::Int(i),
                    ResourceValue::Double(d) => Value::Double(d),
                };
                KeyValue::new(k, v)
            })
            .collect(),
        dropped_attributes_count: 0,
    }
    .encode_to_vec();
    if resource.len() > MAX_RESOURCE_BYTES {
        return Err(Error::too_big(format!(
            "otel resource attributes: {} bytes encoded, more than {MAX_RESOURCE_BYTES}",
            resource.len()
        )));
    }
    let s = state()?;
    let g = s.lock()?;
    let l = g.locked();
    l.resource[..resource.len()].copy_from_slice(&resource);
    l.resource_len = resource.len() as u32;
    g.publish()
}

/// Sets `threadlocal.schema_version` (default [`DEFAULT_SCHEMA_VERSION`])
/// and republishes. For readers that only follow OTEP 4947's TLS symbol and
/// know only its own schema name (`"tlsdesc_v1_dev"`): the records are the
/// same either way (DESIGN §10.4).
pub fn set_schema_version(version: &str) -> Result<()> {
    if version.is_empty() || version.len() > MAX_SCHEMA_VERSION {
        return Err(Error::invalid(format!(
            "otel schema version {version:?}: 1 to {MAX_SCHEMA_VERSION} bytes"
        )));
    }
    let s = state()?;
    let g = s.lock()?;
    let l = g.locked();
    l.schema[..version.len()].copy_from_slice(version.as_bytes());
    l.schema_len = version.len() as u32;
    g.publish()
}

/// Address of this process's `OTEL_CTX` mapping, publishing it first if
/// needed: the same in every copy of tld in the process.
pub fn process_context_address() -> Result<usize> {
    ensure_published_slow()?;
    let s = state()?;
    let g = s.lock()?;
    Ok(g.locked().context as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        assert_eq!(std::mem::size_of::<ContextHeader>(), CONTEXT_HEADER_SIZE);
        assert_eq!(std::mem::offset_of!(ContextHeader, version), 8);
        assert_eq!(std::mem::offset_of!(ContextHeader, payload_size), 12);
        assert_eq!(std::mem::offset_of!(ContextHeader, published_at_ns), 16);
        assert_eq!(std::mem::offset_of!(ContextHeader, payload), 24);
    }

    #[test]
    fn key_names_are_checked() {
        assert_eq!(check_key_name("").unwrap_err().errno(), libc::EINVAL);
        assert!(check_key_name(&"k".repeat(127)).is_ok());
        assert!(check_key_name(&"k".repeat(128)).unwrap_err().message().contains("128 given"));
        assert!(check_key_name("a\0b").is_err());
    }
}
