//! Finding or creating the process's runtime (DESIGN §4): a page at an
//! address every copy of the core computes the same way, found without symbol
//! lookup.
//!
//! A copy first looks for the runtime's magic at every candidate address and
//! joins the first it finds. Only when no candidate holds a runtime does it
//! claim one: it prepares the runtime's contents in a memory file and maps it
//! with `MAP_FIXED_NOREPLACE`, so the page appears with its magic already
//! written; a copy that loses that race (`EEXIST`) reads a complete header
//! there at once and joins. A foreign mapping sends every copy to the next
//! candidate.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use super::{fork, pool, register, watch, RuntimeLock, Shared};
use crate::abi;
use crate::error::{Error, Result};
use crate::keys::Budget;
use crate::sys;

/// `"TLD-RT\0\x01"` little-endian: the first word of the runtime. The same
/// for every major version, followed by the version, so copies of different
/// majors find each other and refuse instead of making two runtimes.
pub const MAGIC: u64 = u64::from_le_bytes(*b"TLD-RT\0\x01");

/// Major version in the high 16 bits (layout of the shared runtime structure and of the wire),
/// minor in the low 16 (fields appended at its end).
pub const RUNTIME_ABI_VERSION: u32 = match option_env!("TLD_TEST_RUNTIME_ABI_VERSION") {
    // Lets the cross-version test build a copy that claims another version.
    Some(_) => parse_version_override(),
    None => 2 << 16,
};

const fn parse_version_override() -> u32 {
    let s = match option_env!("TLD_TEST_RUNTIME_ABI_VERSION") {
        Some(s) => s.as_bytes(),
        None => return 2 << 16,
    };
    let mut v: u32 = 0;
    let mut i = 0;
    while i < s.len() {
        v = v * 10 + (s[i] - b'0') as u32;
        i += 1;
    }
    v
}

/// The candidate ranges for a 47-bit address space: `(base, count)`, 4 GiB
/// apart. High enough to avoid the heap and PIE images, far from the mmap
/// base and from Go's arena hints (`0x??c0_0000_0000`). The first range is
/// application memory for plain processes and AddressSanitizer;
/// ThreadSanitizer reserves it (and the second) for itself, so every copy in
/// such a process moves on to the last range, inside TSan's high application
/// range.
const RANGES_47: [(u64, u64); 3] = [(0x3d1d_0000_0000, 16), (0x0d1d_0000_0000, 8), (0x7e9d_0000_0000, 8)];

/// The bit length of the addresses this process uses: that of its initial
/// stack (which `AT_RANDOM` points into), the same for every copy of the core.
pub(crate) fn address_bits() -> u32 {
    let at_random = unsafe { libc::getauxval(libc::AT_RANDOM) };
    let here = 0u8;
    let addr = if at_random != 0 { at_random } else { &here as *const u8 as u64 };
    64 - addr.leading_zeros()
}

/// Candidate addresses for an address space of `bits` bits: the 47-bit
/// positions scaled by `2^(bits - 47)`, so they keep their place relative to
/// the heap, the libraries and the stack on 39-, 42-, 48- and 57-bit layouts.
pub(crate) fn candidates(bits: u32) -> impl Iterator<Item = usize> {
    let scale = move |a: u64| if bits >= 47 { a << (bits - 47) } else { a >> (47 - bits) };
    RANGES_47.into_iter().flat_map(move |(base, n)| (0..n).map(move |i| scale(base + (i << 32)) as usize))
}

/// What a candidate address holds.
enum Probe {
    Runtime,
    Foreign,
    Free,
}

fn probe(addr: usize) -> Result<Probe> {
    let mut word = [0u8; 8];
    match sys::read_own_memory(addr, &mut word) {
        Ok(()) if u64::from_le_bytes(word) == MAGIC => Ok(Probe::Runtime),
        Ok(()) => Ok(Probe::Foreign),
        // Nothing readable there (the errno depends on the kernel version).
        Err(libc::EFAULT) | Err(libc::ENOMEM) | Err(libc::ESRCH) => Ok(Probe::Free),
        Err(errno) => Err(Error::Os { op: "process_vm_readv (runtime rendezvous)", errno }),
    }
}

/// A prepared runtime image that was not needed.
struct Prepared {
    image: *mut u8,
    len: usize,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        let unused = unsafe { &*(self.image as *const Shared) };
        unsafe {
            libc::pthread_key_delete(unused.thread_key);
            libc::munmap(unused.meta.cast(), sys::page_size());
            libc::munmap(self.image.cast(), self.len);
        }
    }
}

/// Finds the process's runtime, or creates it.
pub(crate) fn find_or_create() -> Result<&'static Shared> {
    let page = sys::page_size();
    let len = std::mem::size_of::<Shared>().next_multiple_of(page);
    let bits = address_bits();
    // Look everywhere first: a runtime created while a foreign mapping sat
    // at an earlier candidate is found where it is, even once that address
    // is free again.
    for addr in candidates(bits) {
        if let Probe::Runtime = probe(addr)? {
            return join(addr);
        }
    }
    let mut prepared: Option<Prepared> = None;
    for addr in candidates(bits) {
        match probe(addr)? {
            Probe::Runtime => return join(addr),
            Probe::Foreign => continue,
            Probe::Free => {}
        }
        let image = match &prepared {
            Some(p) => p.image,
            None => prepared.insert(prepare(page, len)?).image,
        };
        let fd = sys::memfd_with(unsafe { std::slice::from_raw_parts(image, len) }, len)
            .map_err(|errno| Error::Os { op: "memfd_create", errno })?;
        let mapped = sys::mmap_fixed_noreplace(addr, len, fd);
        sys::close(fd);
        match mapped {
            Ok(p) => {
                // The image is live now: its key and metadata page are the runtime's.
                let p2 = prepared.take().expect("prepared above");
                unsafe { libc::munmap(p2.image.cast(), p2.len) };
                std::mem::forget(p2);
                super::pin_this_copy();
                return Ok(unsafe { &*(p as *const Shared) });
            }
            // Someone mapped it first: what is there decides.
            Err(libc::EEXIST) => match probe(addr)? {
                Probe::Runtime => return join(addr),
                _ => continue,
            },
            Err(libc::ENOMEM) | Err(libc::EINVAL) | Err(libc::EPERM) => continue,
            Err(errno) => return Err(Error::Os { op: "mmap (runtime rendezvous)", errno }),
        }
    }
    Err(Error::Os { op: "runtime rendezvous: every candidate address is taken", errno: libc::EADDRINUSE })
}

/// Joins the runtime at `addr`.
fn join(addr: usize) -> Result<&'static Shared> {
    let shared = unsafe { &*(addr as *const Shared) };
    let found = shared.abi_version;
    if found >> 16 != RUNTIME_ABI_VERSION >> 16 || shared.page_size as usize != sys::page_size() {
        return Err(Error::IncompatibleRuntime { found, ours: RUNTIME_ABI_VERSION });
    }
    Ok(shared)
}

/// Builds the image of a new runtime in page-aligned memory: the metadata
/// page (stamped, DESIGN §5.5), the pthread key, [`Shared`].
fn prepare(page: usize, len: usize) -> Result<Prepared> {
    let meta = sys::mmap_anon(page).map_err(|errno| Error::Os { op: "mmap (metadata page)", errno })?;
    let mut key: libc::pthread_key_t = 0;
    let r = unsafe { libc::pthread_key_create(&mut key, Some(super::thread_exit)) };
    if r != 0 {
        unsafe { libc::munmap(meta.cast(), page) };
        return Err(Error::Os { op: "pthread_key_create", errno: r });
    }
    let image = match sys::mmap_anon(len) {
        Ok(p) => p,
        Err(errno) => {
            unsafe {
                libc::pthread_key_delete(key);
                libc::munmap(meta.cast(), page);
            }
            return Err(Error::Os { op: "mmap (runtime image)", errno });
        }
    };
    let shared = Shared {
        magic: MAGIC,
        abi_version: RUNTIME_ABI_VERSION,
        page_size: page as u32,
        meta,
        thread_key: key,
        pid: AtomicI32::new(sys::getpid()),
        lock: RuntimeLock::new(),
        budget: Budget::new(crate::DEFAULT_DYNAMIC_RESERVE, abi::max_data_size(page)),
        attach_epoch: AtomicU64::new(0),
        claims: fork::Claims::new(),
        maps: register::MapTable::new(),
        pool: pool::Pool::new(),
        watcher: watch::WatcherState::new(),
        extensions: std::array::from_fn(|_| AtomicU64::new(0)),
    };
    unsafe {
        (*(meta.add(2) as *const crate::sync::AtomicU16)).store(crate::DEFAULT_DYNAMIC_RESERVE as u16, Ordering::Relaxed);
        if let Some(stamp) = sys::exec_stamp() {
            (meta.add(page - 16) as *mut u64).write(abi::STAMP_MAGIC);
            (meta.add(page - 8) as *mut u64).write(stamp);
        }
        std::ptr::write(image as *mut Shared, shared);
    }
    Ok(Prepared { image, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIDTHS: [u32; 5] = [39, 42, 47, 48, 57];

    #[test]
    fn forty_seven_bits_keep_the_known_addresses() {
        let c: Vec<usize> = candidates(47).collect();
        assert_eq!(c.len(), 32);
        assert_eq!(c[0], 0x3d1d_0000_0000);
        assert_eq!(c[15], 0x3d2c_0000_0000);
        assert_eq!(c[16], 0x0d1d_0000_0000);
        assert_eq!(c[24], 0x7e9d_0000_0000);
        assert_eq!(c[31], 0x7ea4_0000_0000);
    }

    #[test]
    fn candidates_fit_every_address_space_width() {
        for bits in WIDTHS {
            let c: Vec<usize> = candidates(bits).collect();
            let top = 1usize << bits;
            // Room for the runtime (a few pages) between neighbours and below the top.
            let room = 1usize << 20;
            for (i, &a) in c.iter().enumerate() {
                assert!(a + room <= top, "{bits} bits: {a:#x} is outside the address space");
                assert!(a >= top / 16, "{bits} bits: {a:#x} is in the low part (heap, program)");
                assert_eq!(a % 65536, 0, "{bits} bits: {a:#x} is not aligned for 64 KiB pages");
                for &b in &c[i + 1..] {
                    assert!(a.abs_diff(b) >= room, "{bits} bits: {a:#x} and {b:#x} overlap");
                }
            }
            // Below the range the mmap base is randomised in, under the stack.
            assert!(c.iter().all(|&a| a < top - top / 128), "{bits} bits: a candidate is near the stack");
        }
    }

    #[test]
    fn this_process_uses_a_known_width() {
        let bits = address_bits();
        assert!((39..=57).contains(&bits), "address bits {bits}");
        let stack_var = 0u8;
        assert!((&stack_var as *const u8 as u64) < 1u64 << bits);
    }
}
