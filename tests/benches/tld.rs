//! Benchmarks (criterion): `cargo bench -p tld-tests --bench tld` as root.
//!
//! - hot path: `Key::set` on an initialized thread vs a plain `thread_local!` write;
//! - the C ABI `tld_get_data(map_fd, key)` call (through a dlopen'd libtld.so, as a C caller);
//! - the usual alternative: the same hint written with `BPF_MAP_UPDATE_ELEM` into a hash map keyed by tid;
//! - first access on a new thread vs the bare system calls it needs.
//!
//! `create_key` with 1 and 62 keys present is in the `create_key` bench (it needs a fresh process per sample).

use std::cell::Cell;
use std::ffi::{c_int, c_void};
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tld::Key;
use tld_tests::{capi_dir, gettid, TestBpf};

thread_local! {
    static PLAIN: Cell<u64> = const { Cell::new(0) };
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CKey {
    off: i16,
}

/// A hash map keyed by tid, the usual way to pass a per-thread hint without tld.
fn hash_map_fd() -> c_int {
    #[repr(C)]
    struct CreateAttr {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }
    let mut attr = CreateAttr { map_type: 1 /* BPF_MAP_TYPE_HASH */, key_size: 4, value_size: 8, max_entries: 4096, map_flags: 0 };
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 0 /* BPF_MAP_CREATE */, &mut attr, std::mem::size_of::<CreateAttr>()) };
    assert!(fd >= 0, "BPF_MAP_CREATE: {}", std::io::Error::last_os_error());
    fd as c_int
}

/// `BPF_MAP_UPDATE_ELEM`, as a program without tld would call it.
fn map_update<K, V>(fd: c_int, key: &K, value: &V) -> i64 {
    #[repr(C)]
    struct ElemAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let mut attr = ElemAttr { map_fd: fd as u32, _pad: 0, key: key as *const K as u64, value: value as *const V as u64, flags: 0 };
    unsafe { libc::syscall(libc::SYS_bpf, 2 /* BPF_MAP_UPDATE_ELEM */, &mut attr, std::mem::size_of::<ElemAttr>()) }
}

fn benches(c: &mut Criterion) {
    let bpf = TestBpf::load().expect("benchmarks need root: loading the test BPF programs");
    tld::attach_fd(bpf.data_map_fd()).unwrap();
    let key: Key<u64> = Key::create("bench_hint").unwrap();
    key.set(1).unwrap(); // this thread is now initialized

    let mut g = c.benchmark_group("hot_path");
    let mut v = 0u64;
    g.bench_function("tld Key::set", |b| {
        b.iter(|| {
            v = v.wrapping_add(1);
            key.set(black_box(v)).unwrap();
        })
    });
    g.bench_function("thread_local! Cell::set", |b| {
        b.iter(|| {
            v = v.wrapping_add(1);
            PLAIN.with(|p| p.set(black_box(v)));
        })
    });

    // The C ABI, called through function pointers like any C caller of libtld.so.
    let lib = capi_dir().join("libtld.so");
    let lib_c = std::ffi::CString::new(lib.to_str().unwrap()).unwrap();
    let handle = unsafe { libc::dlopen(lib_c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!handle.is_null(), "dlopen {}", lib.display());
    let get_data: extern "C" fn(c_int, CKey) -> *mut c_void =
        unsafe { std::mem::transmute(libc::dlsym(handle, c"tld_get_data".as_ptr())) };
    let map_fd = {
        use std::os::fd::AsRawFd;
        bpf.data_map_fd().as_raw_fd()
    };
    let ckey = CKey { off: key.raw().offset() as i16 };
    assert!(!get_data(map_fd, ckey).is_null());
    g.bench_function("C tld_get_data + store", |b| {
        b.iter(|| {
            v = v.wrapping_add(1);
            let p = get_data(black_box(map_fd), black_box(ckey)) as *mut u64;
            unsafe { p.write_volatile(v) };
        })
    });

    let hash = hash_map_fd();
    let tid = gettid();
    g.bench_function("BPF_MAP_UPDATE_ELEM hash[tid]", |b| {
        b.iter(|| {
            v = v.wrapping_add(1);
            assert_eq!(map_update(hash, &tid, &black_box(v)), 0);
        })
    });
    g.finish();

    // First access on a new thread: allocate + register (pidfd_open, one map
    // update, close), against those bare system calls on a new thread.
    let mut g = c.benchmark_group("first_access");
    g.sample_size(20);
    g.bench_function("tld first Key::set on a new thread", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += std::thread::spawn(move || {
                    let t = Instant::now();
                    key.set(7).unwrap();
                    t.elapsed()
                })
                .join()
                .unwrap();
            }
            total
        })
    });
    let data_fd = map_fd;
    g.bench_function("bare pidfd_open + map update + close on a new thread", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += std::thread::spawn(move || {
                    let page = unsafe {
                        libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
                    } as u64;
                    // Fault the page in first: tld's block pages are already resident.
                    unsafe { (page as *mut u8).write_volatile(1) };
                    let value: [u64; 3] = [page, page, 8];
                    let t = Instant::now();
                    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, gettid(), libc::O_EXCL) } as i32;
                    let r = map_update(data_fd, &pidfd, &value);
                    unsafe { libc::close(pidfd) };
                    let e = t.elapsed();
                    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
                    e
                })
                .join()
                .unwrap();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(tld_benches, benches);
criterion_main!(tld_benches);
