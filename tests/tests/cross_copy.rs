//! Two copies of the core in one process (the C ABI built into two
//! differently named shared objects, both loaded RTLD_LOCAL) plus the copy
//! linked into this test share one metadata page: keys created through one
//! are found at the same offset through the others, a thread gets the same
//! address from each, and BPF sees the keys of all of them.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use tld::RawKey;
use tld_tests::{int_value, kernel, CLibrary, TempDir};

#[test]
fn copies_share_one_runtime() {
    let Some(bpf) = kernel() else { return };
    let dir = TempDir::new("cross-copy");
    let a = Arc::new(CLibrary::load_copy(&dir.0, "libtld_copy_a.so"));
    let b = Arc::new(CLibrary::load_copy(&dir.0, "libtld_copy_b.so"));

    // Copy A starts the runtime; B and this binary's copy join it.
    let ka = a.create_key("xc_from_a", 4);
    assert!(ka.off >= 0, "{}", a.last_error());
    assert_eq!(b.find_key("xc_from_a"), ka, "B finds A's key at the same offset");
    let kb = b.key("xc_from_b", 8);
    assert!(kb.off >= 0);
    assert_eq!(a.key("xc_from_b", 8), kb, "get-or-create from A returns B's key");
    assert_eq!(RawKey::find("xc_from_b").unwrap().offset(), kb.off as usize);
    let kr = RawKey::create("xc_from_rust", 8).unwrap();
    assert_eq!(a.find_key("xc_from_rust").off as usize, kr.offset());

    let meta = tld::runtime_stats().unwrap().meta_page;
    assert_eq!(a.metadata_page(), meta, "one metadata page");
    assert_eq!(b.metadata_page(), meta, "one metadata page");

    // Attach through A only: the map is the runtime's, so every copy registers with it.
    assert_eq!(a.attach_fd(bpf.data_map_fd().as_raw_fd()), 0, "{}", a.last_error());
    assert_eq!(tld::runtime_stats().unwrap().attached_maps, 1);

    let base = tld::runtime_stats().unwrap().live_blocks;
    let bpf = Arc::new(bpf);
    let threads: Vec<_> = (0..8u32)
        .map(|i| {
            let (a, b, bpf) = (a.clone(), b.clone(), bpf.clone());
            std::thread::spawn(move || {
                // First access through B, then A, then Rust: one block.
                let pb = b.data(ka);
                let pa = a.data(ka);
                let pr = unsafe { tld::thread_data().unwrap().as_ptr().add(ka.off as usize) };
                assert!(!pa.is_null());
                assert_eq!(pa, pb, "thread {i}: same address from both copies");
                assert_eq!(pa, pr, "thread {i}: same address from the Rust copy");
                unsafe {
                    (pa as *mut u32).write_volatile(100 + i);
                    (b.data(kb) as *mut u64).write_volatile(200 + i as u64);
                    (tld::thread_data().unwrap().as_ptr().add(kr.offset()) as *mut u64).write_volatile(300 + i as u64);
                }
                let dump = bpf.dump_current().unwrap();
                assert_eq!(int_value(&dump, "xc_from_a"), Some(100 + i as i64));
                assert_eq!(int_value(&dump, "xc_from_b"), Some(200 + i as i64));
                assert_eq!(int_value(&dump, "xc_from_rust"), Some(300 + i as i64));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(tld::runtime_stats().unwrap().live_blocks, base, "each thread had one block, released once");
    // Read once every thread is done: the counter is the runtime's, shared,
    // so both copies see the same figure (not while other threads still run).
    assert_eq!(a.live_blocks() as usize, base);
    assert_eq!(b.live_blocks() as usize, base);
}
