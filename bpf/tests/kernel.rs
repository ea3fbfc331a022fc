//! Runs the test BPF programs against the real kernel.
//!
//! Threads are registered BY HAND here, following the wire layout of
//! DESIGN.md §2 (no TLD runtime involved): a metadata page and a data page
//! are mmapped, filled byte by byte, and a pidfd of the calling thread is
//! inserted into `tld_data_map` with the 24-byte value ([`tld_bpf::hand`]).
//!
//! Needs root (or CAP_BPF + CAP_PERFMON). Without it each test prints
//! "skipping: needs root/CAP_BPF" and passes, except when CI=true, where
//! it fails.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};

use tld_bpf::hand::{page_size, register, register16, Meta, Page, STAMP_MAGIC};
use tld_bpf::upstream::UpstreamReader;
use tld_bpf::{has_bpf_privileges, Error, KeyDump, Layout, TestBpf, DUMP_OFFSET_CAP};

/// Loads the programs, or returns None after saying why the test is skipped.
fn load_or_skip(test: &str) -> Option<TestBpf> {
    if !has_bpf_privileges() {
        let need = "needs root/CAP_BPF (CAP_BPF + CAP_PERFMON)";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test} {need}, and CI=true does not allow skipping it");
        }
        // Straight to stderr: eprintln! output is captured by the harness
        // and shown only for failing tests.
        let _ = writeln!(std::io::stderr(), "{test}: skipping: {need}");
        return None;
    }
    Some(TestBpf::load().unwrap_or_else(|e| panic!("{test}: loading the BPF programs: {e}")))
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

fn struct_bytes(seed: u8) -> [u8; 32] {
    std::array::from_fn(|i| seed.wrapping_add(i as u8 * 7))
}

fn key<'a>(keys: &'a [KeyDump], name: &str) -> &'a KeyDump {
    keys.iter()
        .find(|k| k.name == name)
        .unwrap_or_else(|| panic!("no key {name} in {keys:?}"))
}

#[test]
fn loads() {
    let Some(bpf) = load_or_skip("loads") else {
        return;
    };
    assert!(bpf.data_map_fd().as_raw_fd() >= 0);
}

#[test]
fn unregistered_thread_has_no_data() {
    let Some(bpf) = load_or_skip("unregistered_thread_has_no_data") else {
        return;
    };

    let view = bpf.read_basic().unwrap();
    assert_eq!(view.init_err, -libc::ENODATA);
    assert_eq!(
        (view.static_int, view.dyn_int, view.dyn_struct),
        (None, None, None)
    );
    assert!(!view.never_created_found);

    let dump = bpf.dump_current().unwrap();
    assert!(!dump.registered);
    assert!(dump.keys.is_empty());
    assert_eq!(dump, bpf.dump_tid(gettid()).unwrap());
}

/// The end-to-end check: register by hand, read through both programs,
/// change a value, read again (cached key), deregister.
#[test]
fn hand_registered_thread_end_to_end() {
    let Some(bpf) = load_or_skip("hand_registered_thread_end_to_end") else {
        return;
    };
    let (meta, keys) = Meta::with_keys(&[("test_dyn_int", 4), ("test_dyn_struct", 32)]);
    assert_eq!(keys, [0, 8]);
    let data = Page::new();
    // Block at offset 64 of the page: 8-byte header, data area at 72.
    let start = 64 + 8;
    data.write_i32(start + keys[0], 42);
    data.write(start + keys[1], &struct_bytes(1));

    let reg = register(bpf.data_map_fd(), data.addr(), meta.addr(), start as u16);

    let dump = bpf.dump_current().unwrap();
    assert!(dump.registered && dump.has_data && dump.has_meta);
    assert_eq!((dump.start, dump.cnt, dump.meta_size), (72, 2, 40));
    assert!(!dump.stopped_at_unwritten);
    assert_eq!(dump.keys.len(), 2);
    let (int_key, struct_key) = (&dump.keys[0], &dump.keys[1]);
    assert_eq!((int_key.slot, int_key.name.as_str()), (0, "test_dyn_int"));
    assert_eq!(
        (int_key.size, int_key.offset, int_key.in_page),
        (4, 0, true)
    );
    assert_eq!(int_key.value, 42i32.to_ne_bytes());
    assert_eq!(
        (struct_key.slot, struct_key.name.as_str()),
        (1, "test_dyn_struct")
    );
    assert_eq!(
        (struct_key.size, struct_key.offset, struct_key.in_page),
        (32, 8, true)
    );
    assert_eq!(struct_key.value, struct_bytes(1));

    let view = bpf.read_basic().unwrap();
    assert_eq!(view.init_err, 0);
    assert_eq!(view.dyn_int, Some(42));
    assert_eq!(view.dyn_struct, Some(struct_bytes(1)));
    assert_eq!(view.static_int, None);
    assert!(!view.never_created_found);
    // 8 bytes of a 4-byte key: refused when searched and when cached.
    assert!(!view.too_big_found);

    // A plain store in user space is what BPF reads next (cached keys now).
    data.write_i32(start + keys[0], -7);
    data.write(start + keys[1], &struct_bytes(99));
    let view = bpf.read_basic().unwrap();
    assert_eq!(view.dyn_int, Some(-7));
    assert_eq!(view.dyn_struct, Some(struct_bytes(99)));
    assert_eq!(
        bpf.dump_current().unwrap().keys[0].value,
        (-7i32).to_ne_bytes()
    );

    // A key created later is found by the next call (only new slots compared).
    meta.set_slot(2, b"test_static_int", 4);
    meta.set_cnt(3);
    data.write_i32(start + 40, 1234);
    let view = bpf.read_basic().unwrap();
    assert_eq!(view.static_int, Some(1234));
    assert_eq!(view.dyn_int, Some(-7));
    assert!(!view.never_created_found);

    reg.delete().unwrap();
    let view = bpf.read_basic().unwrap();
    assert_eq!(view.init_err, -libc::ENODATA);
    assert_eq!(view.dyn_int, None);
    assert!(!bpf.dump_current().unwrap().registered);
}

/// Cached keys are offsets within the data area, so a thread that
/// re-registers its block elsewhere is still read correctly.
#[test]
fn cached_keys_follow_a_moved_block() {
    let Some(bpf) = load_or_skip("cached_keys_follow_a_moved_block") else {
        return;
    };
    let (meta, keys) = Meta::with_keys(&[("test_static_int", 4), ("test_dyn_int", 4)]);
    let first = Page::new();
    first.write_i32(8 + keys[0], 1);
    first.write_i32(8 + keys[1], 2);
    let reg = register(bpf.data_map_fd(), first.addr(), meta.addr(), 8);
    let view = bpf.read_basic().unwrap();
    assert_eq!((view.static_int, view.dyn_int), (Some(1), Some(2)));
    reg.delete().unwrap();

    let second = Page::new();
    let start = 1024 + 8;
    second.write_i32(start + keys[0], 10);
    second.write_i32(start + keys[1], 20);
    let _reg = register(bpf.data_map_fd(), second.addr(), meta.addr(), start as u16);
    let view = bpf.read_basic().unwrap();
    assert_eq!((view.static_int, view.dyn_int), (Some(10), Some(20)));
}

/// A slot whose size is still 0 is being created: readers stop there, and
/// see it (and the slots after it) once the size is published.
#[test]
fn unwritten_slot_stops_the_walk() {
    let Some(bpf) = load_or_skip("unwritten_slot_stops_the_walk") else {
        return;
    };
    let (meta, keys) = Meta::with_keys(&[
        ("test_static_int", 4),
        ("test_dyn_int", 4),
        ("test_dyn_struct", 32),
    ]);
    meta.set_slot_size(1, 0);
    let data = Page::new();
    let start = 8;
    data.write_i32(start + keys[0], 5);
    data.write_i32(start + keys[1], 6);
    data.write(start + keys[2], &struct_bytes(3));
    let _reg = register(bpf.data_map_fd(), data.addr(), meta.addr(), start as u16);

    let dump = bpf.dump_current().unwrap();
    assert!(dump.stopped_at_unwritten);
    assert_eq!(dump.cnt, 3);
    assert_eq!(dump.keys.len(), 1);
    let view = bpf.read_basic().unwrap();
    assert_eq!(view.static_int, Some(5));
    assert_eq!((view.dyn_int, view.dyn_struct), (None, None));

    meta.set_slot_size(1, 4);
    let dump = bpf.dump_current().unwrap();
    assert!(!dump.stopped_at_unwritten);
    assert_eq!(dump.keys.len(), 3);
    let view = bpf.read_basic().unwrap();
    assert_eq!(view.static_int, Some(5));
    assert_eq!(view.dyn_int, Some(6));
    assert_eq!(view.dyn_struct, Some(struct_bytes(3)));
}

/// Metadata an untrusted process controls: a huge count, names without a
/// NUL, sizes running past the page, a block at the very end of the page.
/// Both programs must run (the verifier accepted them) and report nothing
/// outside the page.
#[test]
fn garbage_metadata_is_read_safely() {
    let Some(bpf) = load_or_skip("garbage_metadata_is_read_safely") else {
        return;
    };
    let page = page_size();
    let slots = page / 64 - 1;
    let meta = Meta::new();
    meta.set_cnt(u16::MAX);
    meta.set_size(u16::MAX);
    meta.set_slot(0, b"first", 8);
    meta.set_slot(1, b"test_dyn_int", 60000);
    meta.set_slot(2, b"test_static_int", 4);
    for i in 3..slots {
        meta.set_slot(i, &[b'A'; 62], u16::MAX);
    }
    let data = Page::new();
    data.write(page - 8, &[0xab; 8]);
    let start = (page - 8) as u16;
    let _reg = register(bpf.data_map_fd(), data.addr(), meta.addr(), start);

    let dump = bpf.dump_current().unwrap();
    assert!(dump.registered);
    assert_eq!(
        (dump.start, dump.cnt, dump.meta_size),
        (start, u16::MAX, u16::MAX)
    );
    assert_eq!(dump.keys.len(), slots.min(tld_bpf::DUMP_MAX_KEYS));
    assert!(!dump.stopped_at_unwritten);
    // Slot 0 ends exactly at the end of the page: readable.
    assert_eq!((dump.keys[0].offset, dump.keys[0].in_page), (0, true));
    assert_eq!(dump.keys[0].value, [0xab; 8]);
    // Everything after runs past the page: reported, never read.
    for k in &dump.keys[1..] {
        assert!(!k.in_page && k.value.is_empty(), "{k:?}");
        assert!(k.offset <= DUMP_OFFSET_CAP);
    }
    assert_eq!(dump.keys[1].offset, 8);
    assert_eq!(dump.keys[2].offset, 60008);
    assert_eq!(dump.keys[3].name, "A".repeat(62));

    let view = bpf.read_basic().unwrap();
    assert_eq!(view.init_err, 0);
    assert_eq!(
        (view.static_int, view.dyn_int, view.dyn_struct),
        (None, None, None)
    );
    assert!(!view.never_created_found);
    // Cached "not found" results must stay not found.
    assert_eq!(bpf.read_basic().unwrap(), view);
}

/// NULL UPTRs: the entry exists but points nowhere.
#[test]
fn null_uptrs_are_reported_not_followed() {
    let Some(bpf) = load_or_skip("null_uptrs_are_reported_not_followed") else {
        return;
    };
    let (meta, keys) = Meta::with_keys(&[("test_dyn_int", 4)]);

    let reg = register(bpf.data_map_fd(), 0, meta.addr(), 8);
    let dump = bpf.dump_current().unwrap();
    assert!(dump.registered && !dump.has_data && dump.has_meta);
    assert_eq!(dump.keys.len(), 1);
    assert!(!dump.keys[0].in_page && dump.keys[0].value.is_empty());
    let view = bpf.read_basic().unwrap();
    assert_eq!((view.init_err, view.dyn_int), (0, None));
    drop(reg);

    let data = Page::new();
    data.write_i32(8 + keys[0], 3);
    let _reg = register(bpf.data_map_fd(), data.addr(), 0, 8);
    let dump = bpf.dump_current().unwrap();
    assert!(dump.registered && dump.has_data && !dump.has_meta);
    assert!(dump.keys.is_empty());
    assert_eq!(bpf.read_basic().unwrap().dyn_int, None);
}

/// Threads registered concurrently: each sees its own values through
/// dump_current (own result slots), other threads see them through
/// dump_tid, and the task iterator counts them.
#[test]
fn concurrent_threads_dump_and_count() {
    const THREADS: usize = 4;
    let Some(bpf) = load_or_skip("concurrent_threads_dump_and_count") else {
        return;
    };
    let bpf = Arc::new(bpf);
    let (meta, keys) = Meta::with_keys(&[("test_dyn_int", 4), ("test_dyn_struct", 32)]);
    let meta = Arc::new(meta);
    let registered = Arc::new(Barrier::new(THREADS + 1));
    let checked = Arc::new(Barrier::new(THREADS + 1));
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();

    let workers: Vec<_> = (0..THREADS)
        .map(|n| {
            let (bpf, meta, keys) = (bpf.clone(), meta.clone(), keys.clone());
            let (registered, checked, tid_tx) =
                (registered.clone(), checked.clone(), tid_tx.clone());
            std::thread::spawn(move || {
                let data = Page::new();
                let start = 8 + 128 * n;
                data.write_i32(start + keys[0], 1000 + n as i32);
                data.write(start + keys[1], &struct_bytes(n as u8));
                let _reg = register(bpf.data_map_fd(), data.addr(), meta.addr(), start as u16);
                tid_tx.send((gettid(), n)).unwrap();
                registered.wait();
                for _ in 0..50 {
                    let dump = bpf.dump_current().unwrap();
                    assert_eq!(dump.start as usize, start);
                    assert_eq!(
                        key(&dump.keys, "test_dyn_int").value,
                        (1000 + n as i32).to_ne_bytes()
                    );
                    let view = bpf.read_basic().unwrap();
                    assert_eq!(view.dyn_int, Some(1000 + n as i32));
                    assert_eq!(view.dyn_struct, Some(struct_bytes(n as u8)));
                }
                checked.wait();
            })
        })
        .collect();

    registered.wait();
    for _ in 0..THREADS {
        let (tid, n) = tid_rx.recv().unwrap();
        let dump = bpf.dump_tid(tid).unwrap();
        assert!(dump.registered);
        assert_eq!(
            key(&dump.keys, "test_dyn_int").value,
            (1000 + n as i32).to_ne_bytes()
        );
    }
    // SAFETY: getpid has no preconditions.
    let (count, tasks) = bpf.count_registered(unsafe { libc::getpid() }).unwrap();
    assert_eq!(count, THREADS);
    assert!(tasks > THREADS, "{tasks} threads seen");
    checked.wait();
    for worker in workers {
        worker.join().unwrap();
    }

    // Exited threads lose their entries with their task.
    // SAFETY: as above.
    assert_eq!(
        bpf.count_registered(unsafe { libc::getpid() }).unwrap().0,
        0
    );
}

#[test]
fn dump_tid_of_other_processes() {
    let Some(bpf) = load_or_skip("dump_tid_of_other_processes") else {
        return;
    };
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawning sleep");
    let dump = bpf.dump_tid(child.id() as i32);
    let counted = bpf.count_registered(child.id() as i32);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!dump.unwrap().registered);
    assert_eq!(counted.unwrap(), (0, 1));

    // The largest pid the kernel allows is 4194304: this tid cannot exist.
    match bpf.dump_tid(i32::MAX) {
        Err(Error::NoSuchTask(tid)) => assert_eq!(tid, i32::MAX),
        other => panic!("expected NoSuchTask, got {other:?}"),
    }
}

/// A second loader meets the first one's map at a pinned path.
#[test]
fn pinned_map_is_shared() {
    let Some(mut first) = load_or_skip("pinned_map_is_shared") else {
        return;
    };
    // SAFETY: getpid has no preconditions.
    let path = PathBuf::from(format!(
        "/sys/fs/bpf/tld_bpf_test_{}_{}",
        unsafe { libc::getpid() },
        gettid()
    ));
    let _ = std::fs::remove_file(&path);
    first
        .pin_data_map(&path)
        .expect("pinning (is bpffs mounted at /sys/fs/bpf?)");
    let second = TestBpf::load_reusing(&path);
    std::fs::remove_file(&path).unwrap();
    let second = second.expect("loading with the pinned map");

    let (meta, keys) = Meta::with_keys(&[("test_dyn_int", 4)]);
    let data = Page::new();
    data.write_i32(8 + keys[0], 77);
    let _reg = register(first.data_map_fd(), data.addr(), meta.addr(), 8);
    assert_eq!(second.read_basic().unwrap().dyn_int, Some(77));
    assert_eq!(data.bytes(8, 4), 77i32.to_ne_bytes());

    match TestBpf::load_reusing(&path) {
        Err(Error::Bpf { op, .. }) => assert!(op.contains("tld_bpf_test_"), "{op}"),
        other => panic!("expected an error for a missing pin, got {other:?}"),
    }
}

/// Every map of the object can be pinned (the same map at several paths),
/// and so can a program; the pins hold what the object defines.
#[test]
fn pin_maps_and_program() {
    use libbpf_rs::{MapCore, MapHandle, MapType, ProgramHandle};
    use tld_bpf::TestMap;

    let Some(bpf) = load_or_skip("pin_maps_and_program") else {
        return;
    };
    // SAFETY: getpid has no preconditions.
    let base = format!(
        "/sys/fs/bpf/tld_bpf_pin_{}_{}",
        unsafe { libc::getpid() },
        gettid()
    );
    let paths: Vec<PathBuf> = ["data", "data_again", "wrong_value", "plain_hash", "prog"]
        .iter()
        .map(|n| PathBuf::from(format!("{base}_{n}")))
        .collect();
    struct Unpin<'a>(&'a [PathBuf]);
    impl Drop for Unpin<'_> {
        fn drop(&mut self) {
            for p in self.0 {
                let _ = std::fs::remove_file(p);
            }
        }
    }
    let _unpin = Unpin(&paths);

    bpf.pin_map(TestMap::Data, &paths[0]).unwrap();
    bpf.pin_map(TestMap::Data, &paths[1]).unwrap();
    bpf.pin_map(TestMap::WrongValue, &paths[2]).unwrap();
    bpf.pin_map(TestMap::PlainHash, &paths[3]).unwrap();
    bpf.pin_program(&paths[4]).unwrap();

    let expect = [
        (&paths[0], MapType::TaskStorage, 4, 24, "tld_data_map"),
        (&paths[1], MapType::TaskStorage, 4, 24, "tld_data_map"),
        (&paths[2], MapType::TaskStorage, 4, 8, "wrong_value_map"),
        (&paths[3], MapType::Hash, 4, 24, "plain_hash_map"),
    ];
    for (path, ty, key, value, name) in expect {
        let map = MapHandle::from_pinned_path(path).unwrap();
        assert_eq!(map.map_type(), ty, "{}", path.display());
        assert_eq!(
            (map.key_size(), map.value_size()),
            (key, value),
            "{}",
            path.display()
        );
        assert_eq!(map.name().to_str(), Some(name));
    }
    assert_eq!(TestMap::WrongValue.name(), "wrong_value_map");
    let prog = ProgramHandle::from_pinned_path(&paths[4]).unwrap();
    assert_eq!(prog.name().to_str(), Some("dump_task"));

    // An existing file is an error naming the path.
    match bpf.pin_map(TestMap::Data, &paths[0]) {
        Err(Error::Bpf { op, .. }) => assert!(op.contains(&base), "{op}"),
        other => panic!("expected an error pinning over an existing file, got {other:?}"),
    }
}

/// DESIGN.md §5.5: an entry whose metadata page carries another image's
/// exec stamp is no data for tld_object_init() and stale for the walker;
/// this image's stamp, or no stamp at all, reads normally.
#[test]
fn exec_stamp_of_another_image_is_no_data() {
    let Some(bpf) = load_or_skip("exec_stamp_of_another_image_is_no_data") else {
        return;
    };
    let (meta, keys) = Meta::with_keys(&[("test_dyn_int", 4)]);
    let data = Page::new();
    data.write_i32(8 + keys[0], 31);
    let _reg = register(bpf.data_map_fd(), data.addr(), meta.addr(), 8);

    let stamp = tld_bpf::hand::exec_stamp();
    assert_ne!(stamp, 0);
    let cases = [
        (0, 0, false),                     // unstamped (upstream's library)
        (0, stamp ^ 0x1000, false),        // no magic: the stamp is ignored
        (STAMP_MAGIC, stamp, false),       // this image
        (STAMP_MAGIC, stamp ^ 0x1000, true), // another image: stale
        (STAMP_MAGIC, 0, true),
    ];
    for (magic, value, stale) in cases {
        meta.set_stamp(magic, value);
        let view = bpf.read_basic().unwrap();
        let dump = bpf.dump_current().unwrap();
        let what = format!("magic {magic:#x} stamp {value:#x}");
        if stale {
            assert_eq!(view.init_err, -libc::ENODATA, "{what}");
            assert_eq!(view.dyn_int, None, "{what}");
            assert!(dump.registered && dump.stale, "{what}: {dump:?}");
            assert!(dump.keys.is_empty(), "{what}: {dump:?}");
        } else {
            assert_eq!((view.init_err, view.dyn_int), (0, Some(31)), "{what}");
            assert!(!dump.stale && dump.keys.len() == 1, "{what}: {dump:?}");
        }
    }
}

/// The key cache belongs to one registration: a new metadata page (the
/// process re-registered, or a new image did) or a new stamp on the same
/// page empties it, so offsets learnt before are never applied to keys laid
/// out differently.
#[test]
fn key_cache_starts_over_on_a_new_registration() {
    let Some(bpf) = load_or_skip("key_cache_starts_over_on_a_new_registration") else {
        return;
    };
    let data = Page::new();
    let (first, _) = Meta::with_keys(&[("test_dyn_int", 4), ("test_static_int", 4)]);
    data.write_i32(8, 1);
    data.write_i32(16, 2);
    let reg = register(bpf.data_map_fd(), data.addr(), first.addr(), 8);
    let view = bpf.read_basic().unwrap();
    assert_eq!((view.dyn_int, view.static_int), (Some(1), Some(2)));

    // Another metadata page, the keys in the other order.
    let (second, _) = Meta::with_keys(&[("test_static_int", 4), ("test_dyn_int", 4)]);
    reg.update(data.addr(), second.addr(), 8).unwrap();
    let view = bpf.read_basic().unwrap();
    assert_eq!((view.dyn_int, view.static_int), (Some(2), Some(1)));

    // The same page rewritten in place, now stamped: the stamp changed.
    first.set_slot(0, b"test_static_int", 4);
    first.set_slot(1, b"test_dyn_int", 4);
    first.stamp_current();
    reg.update(data.addr(), second.addr(), 8).unwrap();
    bpf.read_basic().unwrap();
    reg.update(data.addr(), first.addr(), 8).unwrap();
    let view = bpf.read_basic().unwrap();
    assert_eq!((view.dyn_int, view.static_int), (Some(2), Some(1)));
    second.stamp_current();
    second.set_slot(0, b"test_dyn_int", 4);
    second.set_slot(1, b"test_static_int", 4);
    reg.update(data.addr(), second.addr(), 8).unwrap();
    let view = bpf.read_basic().unwrap();
    assert_eq!((view.dyn_int, view.static_int), (Some(1), Some(2)));
}

/// A 16-byte registration (upstream's layout: `start` is the u64 at offset
/// 0 of a page block, `cnt` a u8) read three ways: tld.bpf.h built with
/// TLD_MAP_VALUE_16, its walker, and the upstream-style reader; the same
/// block registered in a 24-byte map at once reads the same there.
#[test]
fn sixteen_byte_layout_reads_through_every_reader() {
    let Some(bpf24) = load_or_skip("sixteen_byte_layout_reads_through_every_reader") else {
        return;
    };
    let upstream = UpstreamReader::create().expect("loading the upstream-style reader");
    let bpf16 = TestBpf::load_reusing_fd(upstream.map_fd()).expect("tld.bpf.h, 16-byte build");
    assert_eq!(bpf16.layout(), Layout::Value16);

    let (meta, keys) = Meta::with_keys(&[
        ("test_static_int", 4),
        ("test_dyn_int", 4),
        ("test_dyn_struct", 32),
    ]);
    let block = Page::new();
    block.write_u64(0, 8);
    block.write_i32(8 + keys[0], 7);
    block.write_i32(8 + keys[1], -8);
    block.write(8 + keys[2], &struct_bytes(9));
    let _r16 = register16(upstream.map_fd(), block.addr(), meta.addr());
    let _r24 = register(bpf24.data_map_fd(), block.addr(), meta.addr(), 8);

    for bpf in [&bpf16, &bpf24] {
        let view = bpf.read_basic().unwrap();
        assert_eq!(view.init_err, 0, "{:?}", bpf.layout());
        assert_eq!(
            (view.static_int, view.dyn_int, view.dyn_struct),
            (Some(7), Some(-8), Some(struct_bytes(9))),
            "{:?}",
            bpf.layout()
        );
        assert!(!view.too_big_found);
        let dump = bpf.dump_current().unwrap();
        assert_eq!((dump.start, dump.cnt, dump.keys.len()), (8, 3, 3), "{dump:?}");
        assert_eq!(dump.keys[2].value, struct_bytes(9));
    }
    let up = upstream
        .read(0, &[("test_dyn_int", 4), ("test_dyn_struct", 32), ("nope", 4)])
        .unwrap();
    assert!(up.registered);
    assert_eq!((up.cnt, up.start), (3, 8));
    let int = up.values[0].as_ref().expect("test_dyn_int");
    assert_eq!((int.slot, int.slot_size, int.page_offset), (1, 4, 16));
    assert_eq!(int.bytes, (-8i32).to_ne_bytes());
    assert_eq!(up.values[1].as_ref().unwrap().bytes, struct_bytes(9));
    assert_eq!(up.values[2], None);

    // A 16-byte map's readers take cnt as a u8: a high byte is not theirs.
    meta.set_cnt(0x0203);
    assert_eq!(bpf16.dump_current().unwrap().cnt, 3);
    assert_eq!(upstream.read(0, &[("test_dyn_int", 4)]).unwrap().cnt, 3);
    assert_eq!(bpf16.read_basic().unwrap().dyn_int, Some(-8));
    meta.set_cnt(3);

    // A start past the page reads nothing, and the walker reports it so.
    block.write_u64(0, 1 << 40);
    let view = bpf16.read_basic().unwrap();
    assert_eq!((view.init_err, view.static_int, view.dyn_int), (0, None, None));
    let dump = bpf16.dump_current().unwrap();
    assert_eq!(dump.start as usize, page_size());
    assert!(dump.keys.iter().all(|k| !k.in_page && k.value.is_empty()));
    assert!(upstream.read(0, &[("test_dyn_int", 4)]).unwrap().values[0].is_none());
}

/// What the lead's runtime tests will do with the loader, by hand: eight
/// threads with keys of several sizes, each registered in a 16-byte map
/// (created by the upstream-style reader, then pinned and reused) and a
/// 24-byte map at once, read through both, from the thread itself and from
/// another thread.
#[test]
fn threads_registered_with_both_layouts_read_correctly() {
    const THREADS: usize = 8;
    let Some(bpf24) = load_or_skip("threads_registered_with_both_layouts_read_correctly") else {
        return;
    };
    let created = UpstreamReader::create().unwrap();
    // SAFETY: getpid/gettid have no preconditions.
    let pin = PathBuf::from(format!(
        "/sys/fs/bpf/tld_bpf_test_{}_{}_up16",
        unsafe { libc::getpid() },
        gettid()
    ));
    let _ = std::fs::remove_file(&pin);
    created.pin(&pin).unwrap();
    let reused = UpstreamReader::reuse_pinned(&pin);
    std::fs::remove_file(&pin).unwrap();
    let upstream = Arc::new(reused.expect("reusing the pinned 16-byte map"));
    assert!(UpstreamReader::reuse_fd(bpf24.data_map_fd()).is_err(), "a 24-byte map");
    let bpf24 = Arc::new(bpf24);

    const SIZES: [(&str, u16); 6] = [
        ("k_u8", 1),
        ("k_u16", 2),
        ("k_u32", 4),
        ("k_u64", 8),
        ("k_blob16", 16),
        ("k_blob40", 40),
    ];
    let sizes = SIZES;
    let (meta, offsets) = Meta::with_keys(&sizes);
    let meta = Arc::new(meta);
    fn value(n: usize, k: usize) -> Vec<u8> {
        (0..usize::from(SIZES[k].1)).map(|b| (n * 16 + k * 3 + b) as u8).collect()
    }
    let ready = Arc::new(Barrier::new(THREADS + 1));
    let done = Arc::new(Barrier::new(THREADS + 1));
    let (tx, rx) = std::sync::mpsc::channel();
    let workers: Vec<_> = (0..THREADS)
        .map(|n| {
            let (upstream, bpf24, meta, offsets) =
                (upstream.clone(), bpf24.clone(), meta.clone(), offsets.clone());
            let (ready, done, tx) = (ready.clone(), done.clone(), tx.clone());
            std::thread::spawn(move || {
                let block = Page::new();
                block.write_u64(0, 8);
                for (k, off) in offsets.iter().enumerate() {
                    block.write(8 + off, &value(n, k));
                }
                let _r16 = register16(upstream.map_fd(), block.addr(), meta.addr());
                let _r24 = register(bpf24.data_map_fd(), block.addr(), meta.addr(), 8);
                let asked: Vec<(&str, usize)> =
                    sizes.iter().map(|(name, size)| (*name, usize::from(*size))).collect();
                let up = upstream.read(0, &asked).unwrap();
                let dump = bpf24.dump_current().unwrap();
                for k in 0..sizes.len() {
                    assert_eq!(up.values[k].as_ref().unwrap().bytes, value(n, k), "16: {n} {k}");
                    assert_eq!(dump.keys[k].value, value(n, k), "24: {n} {k}");
                }
                tx.send((gettid(), n)).unwrap();
                ready.wait();
                done.wait();
            })
        })
        .collect();
    ready.wait();
    let asked: Vec<(&str, usize)> =
        sizes.iter().map(|(name, size)| (*name, usize::from(*size))).collect();
    for _ in 0..THREADS {
        let (tid, n) = rx.recv().unwrap();
        let up = upstream.read(tid, &asked).unwrap();
        let dump = bpf24.dump_tid(tid).unwrap();
        for k in 0..sizes.len() {
            assert_eq!(up.values[k].as_ref().unwrap().bytes, value(n, k), "16: tid {tid}");
            assert_eq!(dump.keys[k].value, value(n, k), "24: tid {tid}");
        }
    }
    done.wait();
    for w in workers {
        w.join().unwrap();
    }
}

/// tld.bpf.h as clang >= 15 compiles it (the build's CLANG_UPSTREAM) reads
/// what clang 14's build reads: the header is not tied to one compiler's BTF.
#[test]
fn newer_clang_build_reads_the_same() {
    let Some(old) = load_or_skip("newer_clang_build_reads_the_same") else {
        return;
    };
    let new = TestBpf::load_built_by_newer_clang().expect("loading the clang >= 15 build");
    let (meta, keys) = Meta::with_keys(&[("test_dyn_int", 4), ("test_dyn_struct", 32)]);
    meta.stamp_current();
    let data = Page::new();
    data.write_i32(8 + keys[0], 606);
    data.write(8 + keys[1], &struct_bytes(6));
    let _a = register(old.data_map_fd(), data.addr(), meta.addr(), 8);
    let _b = register(new.data_map_fd(), data.addr(), meta.addr(), 8);
    for bpf in [&old, &new] {
        let view = bpf.read_basic().unwrap();
        assert_eq!((view.init_err, view.dyn_int), (0, Some(606)));
        assert_eq!(view.dyn_struct, Some(struct_bytes(6)));
        assert!(!view.too_big_found);
    }
    assert_eq!(old.dump_current().unwrap(), new.dump_current().unwrap());
}

/// The key cache is per CPU and shared by a process's threads: threads of
/// one process registered with two metadata pages whose keys are in
/// opposite orders (so a key's offset under one page is the other key's
/// under the other) share every CPU's cache entry and evict each other's
/// keys all the time, preempting each other mid-update. Every read must
/// still be the thread's own value.
#[test]
fn key_cache_shared_by_contending_registrations() {
    const THREADS: usize = 8;
    const READS: usize = 400;
    let Some(bpf) = load_or_skip("key_cache_shared_by_contending_registrations") else {
        return;
    };
    let bpf = Arc::new(bpf);
    let (a, _) = Meta::with_keys(&[("test_dyn_int", 4), ("test_static_int", 4)]);
    let (b, _) = Meta::with_keys(&[("test_static_int", 4), ("test_dyn_int", 4)]);
    let metas = Arc::new([a, b]);
    let start = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS)
        .map(|n| {
            let (bpf, metas, start) = (bpf.clone(), metas.clone(), start.clone());
            std::thread::spawn(move || {
                let which = n % 2;
                let data = Page::new();
                // dyn_int = 100 + n, static_int = 200 + n, wherever they are.
                let (dyn_at, static_at) = if which == 0 { (8, 16) } else { (16, 8) };
                data.write_i32(dyn_at, 100 + n as i32);
                data.write_i32(static_at, 200 + n as i32);
                let _reg = register(bpf.data_map_fd(), data.addr(), metas[which].addr(), 8);
                start.wait();
                for i in 0..READS {
                    let view = bpf.read_basic().unwrap();
                    assert_eq!(
                        (view.dyn_int, view.static_int),
                        (Some(100 + n as i32), Some(200 + n as i32)),
                        "thread {n} (page {which}), read {i}"
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}
