//! The production loader `tld_bpf::inspect` against the real kernel: it
//! creates and pins `tld_data_map`, and its task iterator reports threads
//! registered BY HAND (DESIGN.md §2 layout, no runtime), garbage included.
//!
//! Needs root (or CAP_BPF + CAP_PERFMON): skipped with a message without
//! it, failed instead under CI=true.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use tld_bpf::has_bpf_privileges;
use tld_bpf::inspect::{self, Filter, Inspector};

fn privileged(test: &str) -> bool {
    if has_bpf_privileges() {
        return true;
    }
    let need = "needs root/CAP_BPF (CAP_BPF + CAP_PERFMON)";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} {need}, and CI=true does not allow skipping it");
    }
    let _ = writeln!(std::io::stderr(), "{test}: skipping: {need}");
    false
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// A pin path of its own, removed on drop.
struct Pin(PathBuf);

impl Pin {
    fn new(tag: &str) -> Pin {
        // SAFETY: getpid/gettid have no preconditions.
        let path = PathBuf::from(format!(
            "/sys/fs/bpf/tld_inspect_test_{}_{}_{tag}",
            unsafe { libc::getpid() },
            unsafe { libc::gettid() }
        ));
        let _ = std::fs::remove_file(&path);
        Pin(path)
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// An anonymous page, written with volatile stores.
struct Page(*mut u8);

impl Page {
    fn new() -> Page {
        // SAFETY: a fresh anonymous mapping, checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page_size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        Page(ptr.cast())
    }
    fn write(&self, off: usize, bytes: &[u8]) {
        assert!(off + bytes.len() <= page_size());
        for (i, &b) in bytes.iter().enumerate() {
            // SAFETY: in bounds of our mapping.
            unsafe { self.0.add(off + i).write_volatile(b) };
        }
    }
    fn slot(&self, i: usize, name: &[u8], size: u16) {
        let mut raw = [0u8; 62];
        raw[..name.len()].copy_from_slice(name);
        self.write(4 + 64 * i, &raw);
        self.write(4 + 64 * i + 62, &size.to_ne_bytes());
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: our mapping.
        unsafe { libc::munmap(self.0.cast(), page_size()) };
    }
}

/// Registers the calling thread in the map pinned at `pin`; returns the map
/// fd and the pidfd (the entry goes away with the thread or the map).
fn register(pin: &std::path::Path, data: &Page, meta: &Page, start: u16) -> (OwnedFd, OwnedFd) {
    let c = std::ffi::CString::new(pin.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    let map = unsafe { libbpf_rs::libbpf_sys::bpf_obj_get(c.as_ptr()) };
    assert!(map >= 0);
    // SAFETY: integers only; checked. PIDFD_THREAD is O_EXCL.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::gettid(), libc::O_EXCL) };
    assert!(pidfd >= 0);
    let (map, pidfd) = unsafe {
        (
            OwnedFd::from_raw_fd(map),
            OwnedFd::from_raw_fd(pidfd as i32),
        )
    };
    let mut value = [0u8; 24];
    value[0..8].copy_from_slice(&(data.0 as u64).to_ne_bytes());
    value[8..16].copy_from_slice(&(meta.0 as u64).to_ne_bytes());
    value[16..18].copy_from_slice(&start.to_ne_bytes());
    let key = pidfd.as_raw_fd();
    // SAFETY: buffers of the map's key and value sizes.
    let rc = unsafe {
        libbpf_rs::libbpf_sys::bpf_map_update_elem(
            map.as_raw_fd(),
            (&key as *const i32).cast(),
            value.as_ptr().cast(),
            0,
        )
    };
    assert_eq!(rc, 0, "registering the thread");
    (map, pidfd)
}

#[test]
fn probe_and_pin() {
    if !privileged("probe_and_pin") {
        return;
    }
    inspect::probe_uptr().expect("this kernel has UPTRs in task storage");
    let pin = Pin::new("pin");
    inspect::create_pinned_map(&pin.0, tld_bpf::Layout::Value24).unwrap();
    assert!(
        inspect::create_pinned_map(&pin.0, tld_bpf::Layout::Value24).is_err(),
        "pinning twice at one path"
    );
    // Nobody registered: an empty scan of this process.
    // SAFETY: getpid has no preconditions.
    let filter = Filter {
        tgid: unsafe { libc::getpid() },
        tid: 0,
        keys: true,
        full_key: None,
    };
    assert!(Inspector::open(&pin.0, filter)
        .unwrap()
        .scan()
        .unwrap()
        .is_empty());
}

#[test]
fn walks_published_keys_and_skips_garbage() {
    if !privileged("walks_published_keys_and_skips_garbage") {
        return;
    }
    let pin = Pin::new("walk");
    inspect::create_pinned_map(&pin.0, tld_bpf::Layout::Value24).unwrap();
    let page = page_size();
    let slots = page / 64 - 1;
    let (meta, data) = (Page::new(), Page::new());
    meta.write(0, &3u16.to_ne_bytes());
    meta.write(2, &24u16.to_ne_bytes());
    meta.slot(0, b"prio", 4);
    meta.slot(1, b"id", 8);
    meta.slot(2, b"tag", 12);
    data.write(8, &7i32.to_ne_bytes());
    data.write(16, &42u64.to_ne_bytes());
    data.write(24, &[9; 12]);
    let _reg = register(&pin.0, &data, &meta, 8);

    // SAFETY: getpid/gettid have no preconditions.
    let (pid, tid) = unsafe { (libc::getpid(), libc::gettid()) };
    let ins = Inspector::open(
        &pin.0,
        Filter {
            tgid: pid,
            tid,
            keys: true,
            full_key: None,
        },
    )
    .unwrap();
    let threads = ins.scan().unwrap();
    assert_eq!(threads.len(), 1);
    let t = &threads[0];
    assert_eq!(
        (t.tgid, t.tid, t.start, t.cnt, t.meta_size),
        (pid, tid, 8, 3, 24)
    );
    assert!(t.has_data && t.has_meta && !t.cnt_clamped && t.unwritten_slot.is_none());
    let keys: Vec<_> = t
        .keys
        .iter()
        .map(|k| (k.slot, k.name.as_str(), k.size, k.offset, k.value.clone()))
        .collect();
    assert_eq!(
        keys,
        [
            (0, "prio", 4, 0, 7i32.to_ne_bytes().to_vec()),
            (1, "id", 8, 8, 42u64.to_ne_bytes().to_vec()),
            (2, "tag", 12, 16, vec![9; 12]),
        ]
    );

    // Garbage: a huge count, a block at the end of the page, sizes past it.
    meta.write(0, &u16::MAX.to_ne_bytes());
    meta.slot(0, b"last8", 8);
    meta.slot(1, b"past", 60000);
    for i in 2..slots {
        meta.slot(i, &[b'A'; 62], u16::MAX);
    }
    data.write(page - 8, &[0xab; 8]);
    drop(_reg);
    let _reg = register(&pin.0, &data, &meta, (page - 8) as u16);
    let t = &ins.scan().unwrap()[0];
    assert!(t.cnt_clamped && t.unwritten_slot.is_none());
    assert_eq!(usize::from(t.max_slots), slots);
    assert_eq!(t.keys.len(), slots);
    assert!(t.keys[0].in_page && t.keys[0].value == [0xab; 8]);
    for k in &t.keys[1..] {
        assert!(!k.in_page && k.value.is_empty(), "{k:?}");
        assert!(k.offset <= 0x10000);
    }
    assert_eq!(t.keys[2].name, "A".repeat(62));

    // A slot still being written ends the walk.
    meta.write(4 + 64 + 62, &0u16.to_ne_bytes());
    let t = &ins.scan().unwrap()[0];
    assert_eq!(t.unwritten_slot, Some(1));
    assert_eq!(t.keys.len(), 1);

    // Threads only: no key records.
    let count = Inspector::open(
        &pin.0,
        Filter {
            tgid: pid,
            tid: 0,
            keys: false,
            full_key: None,
        },
    )
    .unwrap();
    let threads = count.scan().unwrap();
    assert_eq!(threads.len(), 1);
    assert!(threads[0].keys.is_empty() && threads[0].nr_keys == 1);
}
