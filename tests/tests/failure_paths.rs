//! Failure paths (DESIGN §5, §6, §8): no hang, no abort, and BPF never reads
//! a value that is not the task's own. Each scenario runs in a fresh child
//! process (a fresh runtime); several fork again or exhaust the fd table.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tld::{Key, RawKey};
use tld_tests::{finish, gettid, in_child, int_value, kernel, CLibrary, TempDir, TestBpf};

/// What BPF reads of `name` for thread `tid` in `bpf`'s map; None when the
/// thread has no entry there.
fn seen(bpf: &TestBpf, tid: i32, name: &str) -> Option<i64> {
    let d = bpf.dump_tid(tid).unwrap_or_else(|e| panic!("dump of {tid}: {e}"));
    if d.registered {
        int_value(&d, name)
    } else {
        None
    }
}

/// The fd table filled up to a lowered `RLIMIT_NOFILE`: every open fails
/// with `EMFILE` until dropped.
struct FdsExhausted {
    files: Vec<std::fs::File>,
    old: libc::rlimit,
}

impl FdsExhausted {
    fn new() -> FdsExhausted {
        let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) }, 0);
        let highest = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .max()
            .unwrap();
        let low = libc::rlimit { rlim_cur: highest + 8, rlim_max: old.rlim_max };
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
        let mut files = Vec::new();
        loop {
            match std::fs::File::open("/dev/null") {
                Ok(f) => files.push(f),
                Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
                Err(e) => panic!("filling the fd table: {e}"),
            }
        }
        FdsExhausted { files, old }
    }
}

impl Drop for FdsExhausted {
    fn drop(&mut self) {
        self.files.clear();
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.old) };
    }
}

/// Forks; runs `child` in the child (its `Err` or panic is a failure) and
/// returns whether it succeeded. `_exit` either way.
fn in_fork(child: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    match unsafe { libc::fork() } {
        -1 => panic!("fork: {}", std::io::Error::last_os_error()),
        0 => {
            let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)) {
                Ok(Ok(())) => 0,
                Ok(Err(why)) => {
                    eprintln!("fork child: {why}");
                    1
                }
                Err(_) => 2,
            };
            unsafe { libc::_exit(code) }
        }
        pid => {
            let mut status = 0;
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                Ok(())
            } else if libc::WIFSIGNALED(status) {
                Err(format!("the child was killed by signal {}", libc::WTERMSIG(status)))
            } else {
                Err(format!("the child failed: status {status:#x}"))
            }
        }
    }
}

/// DESIGN §5.2: a block whose map entry cannot be deleted (no pidfd at the fd
/// limit) is quarantined, never handed to another thread; the next
/// allocation with fds to spare deletes the entry and frees it.
fn quarantine_keeps_a_block_from_reuse(bpf: &TestBpf) {
    tld::attach_fd(bpf.data_map_fd()).unwrap();
    let k: Key<u64> = Key::get_or_create("quarantine_value").unwrap();
    let (to_a, a_waits) = mpsc::channel::<()>();
    let (to_b, b_waits) = mpsc::channel::<()>();
    let (tell, heard) = mpsc::channel::<i32>();
    std::thread::scope(|s| {
        let tell_a = tell.clone();
        s.spawn(move || {
            k.set(111).unwrap();
            tell_a.send(gettid()).unwrap();
            a_waits.recv().unwrap(); // the fd table is full now
            tld::free_thread_block();
            tell_a.send(0).unwrap();
            a_waits.recv().unwrap(); // alive until the end: its entry must only ever show its own value
        });
        let a = heard.recv().unwrap();
        assert_eq!(seen(bpf, a, "quarantine_value"), Some(111));

        let full = FdsExhausted::new();
        to_a.send(()).unwrap();
        heard.recv().unwrap();
        assert_eq!(tld::runtime_stats().unwrap().quarantined_blocks, 1, "A's entry could not be deleted");

        let tell_b = tell.clone();
        s.spawn(move || {
            // A block now, but no pidfd to register it with.
            let e = k.set(222).unwrap_err();
            assert_eq!(e.errno(), libc::EMFILE, "{e}");
            tell_b.send(0).unwrap();
            b_waits.recv().unwrap();
            k.set(222).unwrap();
            tell_b.send(gettid()).unwrap();
            b_waits.recv().unwrap();
        });
        heard.recv().unwrap();
        drop(full);
        to_b.send(()).unwrap();
        let b = heard.recv().unwrap();
        assert_eq!(seen(bpf, b, "quarantine_value"), Some(222));
        assert_eq!(seen(bpf, a, "quarantine_value"), Some(111), "A's entry shows another thread's value");

        // The next allocation, with fds to spare, deletes A's entry and frees the block.
        s.spawn(move || k.set(333).unwrap()).join().unwrap();
        assert_eq!(tld::runtime_stats().unwrap().quarantined_blocks, 0);
        assert_eq!(seen(bpf, a, "quarantine_value"), None, "A's entry was deleted");
        to_a.send(()).unwrap();
        to_b.send(()).unwrap();
    });
}

/// DESIGN §5.3: a fork child whose handler cannot get a pidfd is not
/// silently unregistered: its next access reports the error, and registers
/// once it can.
fn fork_child_without_a_pidfd_reports_it(bpf: &TestBpf) {
    tld::attach_fd(bpf.data_map_fd()).unwrap();
    let k: Key<u64> = Key::get_or_create("fork_pidfd").unwrap();
    k.set(5).unwrap();
    let full = FdsExhausted::new();
    let result = in_fork(|| {
        let e = k.get().expect_err("the child's first access must report the failed registration");
        if e.errno() != libc::EMFILE {
            return Err(format!("unexpected error {e}"));
        }
        drop(full);
        let v = k.get().map_err(|e| e.to_string())?;
        let d = bpf.dump_current().map_err(|e| e.to_string())?;
        match (v, d.registered, int_value(&d, "fork_pidfd")) {
            (5, true, Some(5)) => Ok(()),
            other => Err(format!("after the retry: {other:?}")),
        }
    });
    result.unwrap();
}

fn obj_get_read_only(path: &std::path::Path) -> std::os::fd::OwnedFd {
    #[repr(C)]
    struct ObjAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        pad: u32,
    }
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_F_RDONLY: u32 = 1 << 3;
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let mut attr = ObjAttr { pathname: c.as_ptr() as u64, bpf_fd: 0, file_flags: BPF_F_RDONLY, path_fd: 0, pad: 0 };
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, &mut attr, std::mem::size_of::<ObjAttr>()) };
    assert!(fd >= 0, "BPF_OBJ_GET read-only: {}", std::io::Error::last_os_error());
    unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as i32) }
}

/// A private directory of pins on bpffs, removed on drop.
struct Pins(PathBuf);

impl Pins {
    fn new(tag: &str) -> Pins {
        let dir = PathBuf::from(format!("/sys/fs/bpf/tld-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Pins(dir)
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// DESIGN §6: a read-only map fd is refused with EACCES and never
/// half-attaches; a writable fd of the same map then works.
fn read_only_fds_are_refused(bpf: &TestBpf) {
    let pins = Pins::new("read-only");
    let path = pins.0.join("map");
    bpf.pin_map(tld_bpf::TestMap::Data, &path).unwrap();
    let ro = obj_get_read_only(&path);
    let e = tld::attach_fd(std::os::fd::AsFd::as_fd(&ro)).unwrap_err();
    assert_eq!(e.errno(), libc::EACCES, "{e}");
    assert!(e.to_string().contains("read-only"), "{e}");
    assert_eq!(tld::runtime_stats().unwrap().attached_maps, 0, "nothing half-attached");
    tld::attach_fd(bpf.data_map_fd()).unwrap();
    let k: Key<u32> = Key::get_or_create("after_read_only").unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            k.set(9).unwrap();
            assert_eq!(seen(bpf, gettid(), "after_read_only"), Some(9));
        });
    });
}

/// DESIGN §5.3: forks landing while another thread creates keys leave the
/// child no slot that stays unwritten: lookups and creations there finish.
fn fork_during_key_creation_never_hangs() {
    tld::set_dynamic_reserve(3000).unwrap();
    let names: Vec<String> = (0..60).map(|i| format!("forking_{i}")).collect();
    let start = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        s.spawn(|| {
            start.wait();
            for n in &names {
                RawKey::create(n, 8).unwrap();
            }
        });
        start.wait();
        for _ in 0..60 {
            let r = in_fork(|| {
                unsafe { libc::alarm(10) }; // a hang is a SIGALRM death
                let all = tld::keys().map_err(|e| e.to_string())?;
                let _ = RawKey::find("nothing_of_that_name");
                match RawKey::get_or_create("made_in_the_child", 8) {
                    Ok(_) => {}
                    Err(e) if e.errno() == libc::E2BIG || e.errno() == libc::ENOSPC => {}
                    Err(e) => return Err(e.to_string()),
                }
                if all.iter().any(|(n, _)| !n.starts_with("forking_")) {
                    return Err(format!("unexpected keys {all:?}"));
                }
                Ok(())
            });
            r.unwrap();
        }
    });
}

/// DESIGN §5.3: runtime initialisation holds no lock a fork could leave
/// held: a fork while other threads start the runtime leaves a child that
/// can use it.
fn fork_during_runtime_initialisation_never_hangs() {
    for _ in 0..30 {
        // Each round in a process of its own, whose runtime does not exist yet.
        in_fork(|| {
            let go = std::sync::Barrier::new(3);
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        go.wait();
                        tld::runtime_stats().unwrap();
                    });
                }
                go.wait();
                in_fork(|| {
                    unsafe { libc::alarm(10) };
                    RawKey::get_or_create("made_after_the_fork", 8).map(drop).map_err(|e| e.to_string())
                })
            })
        })
        .unwrap();
    }
}

static HANDLER_OK: AtomicUsize = AtomicUsize::new(0);
static HANDLER_DEADLK: AtomicUsize = AtomicUsize::new(0);
static HANDLER_OTHER: AtomicUsize = AtomicUsize::new(0);

/// A signal handler that uses tld. On success and on EDEADLK nothing here
/// allocates (so the interrupted thread may be anywhere, even in malloc).
extern "C" fn use_tld_in_handler(_: libc::c_int) {
    let count = |r: Result<(), tld::Error>| match r {
        Ok(()) => HANDLER_OK.fetch_add(1, Ordering::Relaxed),
        Err(e) if e.errno() == libc::EDEADLK => HANDLER_DEADLK.fetch_add(1, Ordering::Relaxed),
        Err(_) => HANDLER_OTHER.fetch_add(1, Ordering::Relaxed),
    };
    count(RawKey::find("signal_target").map(drop));
    count(tld::thread_data().map(drop));
}

/// DESIGN §5.6: tld calls from a signal handler that interrupted tld on the
/// same thread (key creation, a first access allocating a block) fail with
/// EDEADLK or succeed; they never hang and never corrupt the pool.
fn signal_handlers_never_wait_on_their_own_thread(bpf: &TestBpf) {
    tld::attach_fd(bpf.data_map_fd()).unwrap();
    tld::set_dynamic_reserve(3000).unwrap();
    let target: Key<u64> = Key::get_or_create("signal_target").unwrap();
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = use_tld_in_handler as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
        libc::alarm(60);
    }
    let names: Vec<String> = (0..50).map(|i| format!("signalled_{i}")).collect();
    for (round, name) in names.iter().enumerate() {
        let (tell, heard) = mpsc::channel::<libc::pthread_t>();
        std::thread::scope(|s| {
            let h = s.spawn(move || {
                tell.send(unsafe { libc::pthread_self() }).unwrap();
                for _ in 0..20 {
                    // Creations (the same name: one wins, the rest look it up)...
                    let _ = RawKey::get_or_create(name, 8);
                    // ...and first accesses, allocating a block, again and again.
                    target.set(round as u64).unwrap();
                    tld::free_thread_block();
                }
                target.set(round as u64).unwrap();
                assert_eq!(seen(bpf, gettid(), "signal_target"), Some(round as i64));
            });
            let t = heard.recv().unwrap();
            while !h.is_finished() {
                unsafe { libc::pthread_kill(t, libc::SIGUSR1) };
                std::thread::yield_now();
            }
            h.join().unwrap();
        });
    }
    unsafe { libc::alarm(0) };
    println!(
        "  handlers: {} calls succeeded, {} returned EDEADLK",
        HANDLER_OK.load(Ordering::Relaxed),
        HANDLER_DEADLK.load(Ordering::Relaxed)
    );
    assert_eq!(HANDLER_OTHER.load(Ordering::Relaxed), 0, "a handler's tld call failed with another error");
    assert!(HANDLER_OK.load(Ordering::Relaxed) > 0, "no handler ran");
    let stats = tld::runtime_stats().unwrap();
    assert_eq!(stats.live_blocks, 0, "{stats:?}");
}

/// DESIGN §4: a copy of the core looks for the runtime at every candidate
/// before claiming one, so a runtime created while a foreign mapping sat at
/// the first candidate is found after that mapping went away.
fn the_runtime_is_found_behind_a_freed_candidate() {
    let first = tld::runtime_candidates()[0];
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let foreign = unsafe {
        libc::mmap(
            first as *mut libc::c_void,
            page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    assert_eq!(foreign as usize, first, "mapping the first candidate");
    unsafe { std::ptr::copy_nonoverlapping(b"FOREIGN!".as_ptr(), foreign as *mut u8, 8) };
    let k = RawKey::create("found_behind", 8).unwrap();
    let meta = tld::runtime_stats().unwrap().meta_page;
    unsafe { libc::munmap(foreign, page) };
    let dir = TempDir::new("rendezvous-scan");
    let other = CLibrary::load_copy(&dir.0, "libtld_rendezvous.so");
    assert_eq!(other.find_key("found_behind").off as usize, k.offset(), "{}", other.last_error());
    assert_eq!(other.metadata_page(), meta, "one runtime");
}

/// DESIGN §2.1, §5.5: the metadata page carries the image's stamp.
fn the_metadata_page_carries_the_exec_stamp() {
    let meta = tld::runtime_stats().unwrap().meta_page;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let (magic, stamp) = unsafe {
        (((meta + page - 16) as *const u64).read(), ((meta + page - 8) as *const u64).read())
    };
    assert_eq!(magic, tld::abi::STAMP_MAGIC);
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    assert_eq!(stamp, fields[48 - 3].parse::<u64>().unwrap(), "mm->arg_start");
}

/// DESIGN §8.2: `tld_get_data(map_fd, ..)` names a map by what the fd is
/// when the thread gets its block: a new map that took a closed map's fd
/// number is attached, and the old one, attached only that way, detached.
fn get_data_follows_the_fd_number_to_a_new_map(a: &TestBpf) {
    let b = TestBpf::load().unwrap();
    let x = unsafe { libc::dup(a.data_map_fd().as_raw_fd()) };
    let k: Key<u64> = Key::get_or_create("follow_value").unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            let write = |v: u64| {
                let p = tld::thread_data_for_map_fd(x).unwrap();
                unsafe { (p.as_ptr().add(k.raw().offset()) as *mut u64).write_volatile(v) };
            };
            write(41);
            assert_eq!(seen(a, gettid(), "follow_value"), Some(41));
            tld::free_thread_block();
            // The caller closes map A's fd and the number now names map B.
            assert_eq!(unsafe { libc::dup2(b.data_map_fd().as_raw_fd(), x) }, x);
            write(42);
            assert_eq!(seen(&b, gettid(), "follow_value"), Some(42), "registered with the new map");
            assert_eq!(seen(a, gettid(), "follow_value"), None, "the old map was detached");
            assert_eq!(tld::attached_map_ids().unwrap().len(), 1);
        });
    });
    unsafe { libc::close(x) };
}

/// A thread publishes through a map attached by path; the consumer then pins
/// a new map at that path; `follow` waits for (or makes) the runtime follow,
/// given a check of the outcome; then the thread must be in the new map
/// only, with no call of its own.
fn pin_replacement(a: &TestBpf, follow: impl FnOnce(&dyn Fn() -> bool)) {
    let b = TestBpf::load().unwrap();
    let pins = Pins::new("follow");
    let path = pins.0.join("tld_data_map");
    a.pin_map(tld_bpf::TestMap::Data, &path).unwrap();
    tld::attach_path(&path).unwrap();
    let k: Key<u64> = Key::get_or_create("pin_follow").unwrap();
    let (tell, heard) = mpsc::channel();
    let (stop, stopped) = mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        k.set(7).unwrap();
        tell.send(gettid()).unwrap();
        stopped.recv().unwrap(); // no tld call from here on
    });
    let t = heard.recv().unwrap();
    assert_eq!(seen(a, t, "pin_follow"), Some(7));
    // The consumer restarts with a new map at the same path.
    std::fs::remove_file(&path).unwrap();
    b.pin_map(tld_bpf::TestMap::Data, &path).unwrap();
    let moved = || {
        tld::attached_map_ids().unwrap().len() == 1
            && seen(&b, t, "pin_follow") == Some(7)
            && seen(a, t, "pin_follow").is_none()
    };
    follow(&moved);
    assert_eq!(seen(&b, t, "pin_follow"), Some(7), "the thread was moved to the new map");
    assert_eq!(seen(a, t, "pin_follow"), None, "and deleted from the old one");
    assert_eq!(tld::attached_map_ids().unwrap().len(), 1, "the old map was detached");
    stop.send(()).unwrap();
    worker.join().unwrap();
}

/// DESIGN §8.4: a replaced pin is followed by the watcher, with no call by
/// the application (about a second; the test allows ten).
fn a_replaced_pin_is_followed(a: &TestBpf) {
    pin_replacement(a, |moved| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !moved() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

/// DESIGN §8.4: with `TLD_PIN_WATCH=0` there is no watcher thread, and
/// `tld::refresh()` follows the pin at once.
fn refresh_follows_a_replaced_pin_without_the_watcher(a: &TestBpf) {
    std::env::set_var(tld::PIN_WATCH_ENV, "0");
    pin_replacement(a, |_| tld::refresh().unwrap());
    let watchers = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter(|t| {
            let comm = t.as_ref().unwrap().path().join("comm");
            std::fs::read_to_string(comm).is_ok_and(|c| c.trim() == "tld-pin-watch")
        })
        .count();
    assert_eq!(watchers, 0);
}

/// As upstream: a size that can never fit is E2BIG, size 0 EINVAL; nothing
/// published changes.
fn keys_that_never_fit_are_e2big() {
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let kept = RawKey::create("kept", 8).unwrap();
    for size in [page + 1, 70000, 1 << 20, usize::MAX] {
        let e = RawKey::create("never_fits", size).unwrap_err();
        assert_eq!(e.errno(), libc::E2BIG, "size {size}: {e}");
        assert!(e.to_string().contains("can never fit"), "{e}");
    }
    assert_eq!(RawKey::create("zero", 0).unwrap_err().errno(), libc::EINVAL);
    let dir = TempDir::new("e2big");
    let c = CLibrary::load_copy(&dir.0, "libtld_e2big.so");
    assert_eq!(c.create_key("never_fits_c", page + 1).off, -libc::E2BIG as i16);
    assert_eq!(c.create_key("never_fits_c", 70000).off, -libc::E2BIG as i16);
    assert_eq!(c.create_key("zero_c", 0).off, -libc::EINVAL as i16);
    assert_eq!(tld::keys().unwrap(), vec![("kept".to_string(), kept)]);
}

fn main() {
    let Some(bpf) = kernel() else { finish(&[]) };
    let results = [
        in_child("a size that can never fit is E2BIG", keys_that_never_fit_are_e2big),
        in_child("a quarantined block is never reused while its entry may exist", || {
            quarantine_keeps_a_block_from_reuse(&bpf)
        }),
        in_child("a fork child without a pidfd reports it and retries", || {
            fork_child_without_a_pidfd_reports_it(&bpf)
        }),
        in_child("read-only map fds are refused", || read_only_fds_are_refused(&bpf)),
        in_child("fork during key creation never hangs the child", fork_during_key_creation_never_hangs),
        in_child("fork during runtime initialisation never hangs the child", fork_during_runtime_initialisation_never_hangs),
        in_child("signal handlers never wait on their own thread", || {
            signal_handlers_never_wait_on_their_own_thread(&bpf)
        }),
        in_child("the runtime is found behind a freed candidate", the_runtime_is_found_behind_a_freed_candidate),
        in_child("the metadata page carries the exec stamp", the_metadata_page_carries_the_exec_stamp),
        in_child("tld_get_data follows its fd number to a new map", || {
            get_data_follows_the_fd_number_to_a_new_map(&bpf)
        }),
        in_child("a replaced pin is followed by the watcher", || a_replaced_pin_is_followed(&bpf)),
        in_child("refresh follows a replaced pin without the watcher", || {
            refresh_follows_a_replaced_pin_without_the_watcher(&bpf)
        }),
    ];
    finish(&results)
}
