//! Attaching something that is not a usable `tld_data_map` fails with a
//! distinct `Error::Map { problem, .. }` per cause, whose errno is the
//! documented one and whose message names the path (or fd) and the cause;
//! and a failed attach never disturbs a map attached before it: BPF keeps
//! reading the value written before the failures.
//!
//! Runs without libtest (`harness = false`): the permission case forks a
//! child that drops to uid/gid 65534, and a fork is only safe from a
//! single-threaded parent. Each scenario runs in a forked child with a fresh
//! tld runtime.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tld::{Error, Key, MapProblem, MapSource};
use tld_bpf::TestMap;
use tld_tests::{finish, in_child, int_value, kernel, CLibrary, TempDir, TestBpf};

const NOBODY: u32 = 65534;
const GOOD_VALUE: u64 = 0x7e57_da7a_0bad_cafe;
const BPF_MAP_TYPE_HASH: u32 = 1;

/// A directory of pins on bpffs (mode 0755, so uid 65534 can reach the
/// files in it), removed with everything in it on drop.
struct PinDir(PathBuf);

impl PinDir {
    fn new() -> PinDir {
        let dir = PathBuf::from(format!("/sys/fs/bpf/tld_attach_errors_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating {} (is bpffs mounted?): {e}", dir.display()));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        PinDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the pin directory holds, made by the parent before any fork.
struct Pins {
    /// The real tld_data_map, mode 0600 (root only).
    data_0600: PathBuf,
    /// The real tld_data_map again, mode 0666.
    data_0666: PathBuf,
    /// wrong_value_map: task storage with an 8-byte value.
    wrong_value: PathBuf,
    /// plain_hash_map: a hash map.
    plain_hash: PathBuf,
    /// The dump_task program.
    prog: PathBuf,
}

fn make_pins(bpf: &TestBpf, dir: &PinDir) -> Pins {
    let pins = Pins {
        data_0600: dir.path("data_0600"),
        data_0666: dir.path("data_0666"),
        wrong_value: dir.path("wrong_value"),
        plain_hash: dir.path("plain_hash"),
        prog: dir.path("prog"),
    };
    bpf.pin_map(TestMap::Data, &pins.data_0600).unwrap();
    bpf.pin_map(TestMap::Data, &pins.data_0666).unwrap();
    bpf.pin_map(TestMap::WrongValue, &pins.wrong_value).unwrap();
    bpf.pin_map(TestMap::PlainHash, &pins.plain_hash).unwrap();
    bpf.pin_program(&pins.prog).unwrap();
    std::fs::set_permissions(&pins.data_0600, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&pins.data_0666, std::fs::Permissions::from_mode(0o666)).unwrap();
    pins
}

/// The map error of a failed attach, with its source checked.
fn map_error(r: tld::Result<()>, what: &str, source: MapSource) -> (Error, MapProblem) {
    let e = match r {
        Ok(()) => panic!("{what}: attached, but it should have failed"),
        Err(e) => e,
    };
    match &e {
        Error::Map { source: s, problem } => {
            assert_eq!(*s, source, "{what}: error source");
            let p = problem.clone();
            (e, p)
        }
        other => panic!("{what}: expected Error::Map, got {other:?}"),
    }
}

fn assert_message(e: &Error, what: &str, parts: &[&str]) {
    let msg = e.to_string();
    for part in parts {
        assert!(msg.contains(part), "{what}: message {msg:?} does not mention {part:?}");
    }
}

/// The good map and the value written before the failures are untouched.
struct Survivor<'a> {
    bpf: &'a TestBpf,
    key: Key<u64>,
}

impl Survivor<'_> {
    fn check(&self, after: &str) {
        let dump = self.bpf.dump_current().unwrap();
        assert!(dump.registered, "after {after}: this thread lost its map entry");
        assert_eq!(int_value(&dump, "attach_good"), Some(GOOD_VALUE as i64), "after {after}: BPF reads the value");
        assert_eq!(self.key.get().unwrap(), GOOD_VALUE, "after {after}");
        assert_eq!(tld::runtime_stats().unwrap().attached_maps, 1, "after {after}: still exactly the good map");
    }
}

fn errors_name_their_cause(bpf: &TestBpf, pins: &Pins, tmp: &Path) {
    tld::attach_fd(bpf.data_map_fd()).unwrap();
    let key: Key<u64> = Key::create("attach_good").unwrap();
    key.set(GOOD_VALUE).unwrap();
    let good = Survivor { bpf, key };
    good.check("attaching it");

    // By path: one distinct problem per cause.
    let missing = pins.data_0600.with_file_name("missing");
    let regular = tmp.join("regular_file");
    std::fs::write(&regular, b"not a map\n").unwrap();
    let mut problems = Vec::new();

    let what = "missing path";
    let (e, p) = map_error(tld::attach_path(&missing), what, MapSource::Path(missing.clone()));
    assert_eq!(p, MapProblem::NotFound, "{what}");
    assert_eq!(e.errno(), libc::ENOENT, "{what}");
    assert_message(&e, what, &[missing.to_str().unwrap(), "no such file"]);
    good.check(what);
    problems.push(p);

    let what = "a regular file outside bpffs";
    let (e, p) = map_error(tld::attach_path(&regular), what, MapSource::Path(regular.clone()));
    assert_eq!(p, MapProblem::NotBpffs, "{what}");
    assert_eq!(e.errno(), libc::EINVAL, "{what}");
    assert_message(&e, what, &[regular.to_str().unwrap(), "not on a BPF filesystem"]);
    good.check(what);
    problems.push(p);

    if Path::new("/etc/hostname").exists() {
        let what = "/etc/hostname";
        let hostname = PathBuf::from("/etc/hostname");
        let (e, p) = map_error(tld::attach_path(&hostname), what, MapSource::Path(hostname));
        assert_eq!(p, MapProblem::NotBpffs, "{what}");
        assert_eq!(e.errno(), libc::EINVAL, "{what}");
        assert_message(&e, what, &["/etc/hostname", "not on a BPF filesystem"]);
        good.check(what);
    }

    let what = "a directory on bpffs";
    let bpffs_dir = PathBuf::from("/sys/fs/bpf");
    let (e, p) = map_error(tld::attach_path(&bpffs_dir), what, MapSource::Path(bpffs_dir.clone()));
    assert_eq!(p, MapProblem::NotAMap { kind: "a directory".into() }, "{what}: not a permission problem");
    assert_eq!(e.errno(), libc::EINVAL, "{what}");
    assert_message(&e, what, &["/sys/fs/bpf", "not a BPF map", "directory"]);
    good.check(what);

    let what = "a pinned program";
    let (e, p) = map_error(tld::attach_path(&pins.prog), what, MapSource::Path(pins.prog.clone()));
    match &p {
        MapProblem::NotAMap { kind } => assert!(kind.contains("bpf-prog"), "{what}: kind {kind:?}"),
        other => panic!("{what}: expected NotAMap, got {other:?}"),
    }
    assert_eq!(e.errno(), libc::EINVAL, "{what}");
    assert_message(&e, what, &[pins.prog.to_str().unwrap(), "not a BPF map", "bpf-prog"]);
    good.check(what);
    problems.push(p);

    let what = "a pinned hash map";
    let (e, p) = map_error(tld::attach_path(&pins.plain_hash), what, MapSource::Path(pins.plain_hash.clone()));
    assert_eq!(p, MapProblem::WrongType { found: BPF_MAP_TYPE_HASH }, "{what}");
    assert_eq!(e.errno(), libc::EINVAL, "{what}");
    assert_message(&e, what, &[pins.plain_hash.to_str().unwrap(), "map type 1 ", "BPF_MAP_TYPE_TASK_STORAGE"]);
    good.check(what);
    problems.push(p);

    let what = "a task-storage map with an 8-byte value";
    let (e, p) = map_error(tld::attach_path(&pins.wrong_value), what, MapSource::Path(pins.wrong_value.clone()));
    assert_eq!(p, MapProblem::WrongLayout { key_size: 4, value_size: 8 }, "{what}");
    assert_eq!(e.errno(), libc::EINVAL, "{what}");
    assert_message(&e, what, &[pins.wrong_value.to_str().unwrap(), "value size 8", "tld needs key 4 and value 24 or 16"]);
    good.check(what);
    problems.push(p);

    // Distinct: no two causes share a variant.
    let variants: std::collections::BTreeSet<_> =
        problems.iter().map(std::mem::discriminant).map(|d| format!("{d:?}")).collect();
    assert_eq!(variants.len(), problems.len(), "distinct problems: {problems:?}");

    // By fd.
    let closed = {
        let f = std::fs::File::open("/dev/null").unwrap();
        f.as_raw_fd()
    }; // closed here; nothing else in this single-threaded process opens an fd meanwhile
    let what = "a closed fd";
    let (e, p) = map_error(tld::attach_fd(unsafe { BorrowedFd::borrow_raw(closed) }), what, MapSource::Fd(closed));
    assert!(
        matches!(&p, MapProblem::NotAMap { kind } if kind.contains("not an open file descriptor")),
        "{what}: {p:?}"
    );
    assert_eq!(e.errno(), libc::EINVAL, "{what}");
    assert_message(&e, what, &[&format!("map fd {closed}"), "not a BPF map"]);
    good.check(what);

    // An fd number that held the good map before is validated again, not trusted.
    {
        let dup = unsafe { libc::fcntl(bpf.data_map_fd().as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        assert!(dup >= 0);
        tld::attach_fd(unsafe { BorrowedFd::borrow_raw(dup) }).unwrap();
        unsafe { libc::close(dup) };
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert_eq!(efd, dup, "the eventfd takes the closed number");
        let what = "an eventfd at the number of a closed map fd";
        let r = tld::attach_fd(unsafe { BorrowedFd::borrow_raw(efd) });
        unsafe { libc::close(efd) };
        let (_, p) = map_error(r, what, MapSource::Fd(efd));
        assert!(matches!(&p, MapProblem::NotAMap { kind } if kind.contains("eventfd")), "{what}: {p:?}");
        good.check(what);
    }

    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(efd >= 0, "eventfd: {}", std::io::Error::last_os_error());
    let efd = unsafe { OwnedFd::from_raw_fd(efd) };
    let what = "an eventfd";
    let (e, p) = map_error(tld::attach_fd(efd.as_fd()), what, MapSource::Fd(efd.as_raw_fd()));
    assert!(matches!(&p, MapProblem::NotAMap { kind } if kind.contains("eventfd")), "{what}: {p:?}");
    assert_eq!(e.errno(), libc::EINVAL, "{what}");
    assert_message(&e, what, &[&format!("map fd {}", efd.as_raw_fd()), "not a BPF map", "eventfd"]);
    good.check(what);

    let what = "the fd of a hash map";
    let fd = bpf.map_fd(TestMap::PlainHash);
    let (_, p) = map_error(tld::attach_fd(fd), what, MapSource::Fd(fd.as_raw_fd()));
    assert_eq!(p, MapProblem::WrongType { found: BPF_MAP_TYPE_HASH }, "{what}");
    good.check(what);

    let what = "the fd of a task-storage map with an 8-byte value";
    let fd = bpf.map_fd(TestMap::WrongValue);
    let (_, p) = map_error(tld::attach_fd(fd), what, MapSource::Fd(fd.as_raw_fd()));
    assert_eq!(p, MapProblem::WrongLayout { key_size: 4, value_size: 8 }, "{what}");
    good.check(what);

    // Attaching the good map again, by its pin, is a no-op; a new thread
    // registers with it and BPF reads that thread's value.
    tld::attach_path(&pins.data_0600).unwrap();
    good.check("attaching the same map again by path");
    std::thread::scope(|s| {
        s.spawn(|| {
            key.set(GOOD_VALUE + 1).unwrap();
            assert_eq!(int_value(&bpf.dump_current().unwrap(), "attach_good"), Some(GOOD_VALUE as i64 + 1));
        });
    });
    good.check("a new thread");
}

/// Exit codes of the unprivileged child.
const CHILD_OK: i32 = 0;
const CHILD_SETUID_FAILED: i32 = 10;
const CHILD_ATTACHED: i32 = 11;
const CHILD_WRONG_ERROR: i32 = 12;
const CHILD_CONTROL_FAILED: i32 = 13;

/// In a child dropped to uid/gid 65534: the 0600 pin is refused with
/// Permission; the same map pinned 0666 is accepted (so the mode is the
/// cause), and the child publishes a value through it: it sends its thread
/// id on `report` and waits on `done` while root reads it with BPF.
fn unprivileged_attach(pins: &Pins, report: i32, done: i32) -> i32 {
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(NOBODY) != 0 || libc::setuid(NOBODY) != 0 {
            eprintln!("dropping to uid/gid {NOBODY}: {}", std::io::Error::last_os_error());
            return CHILD_SETUID_FAILED;
        }
        if libc::geteuid() != NOBODY || libc::getegid() != NOBODY {
            return CHILD_SETUID_FAILED;
        }
    }
    let path = &pins.data_0600;
    match tld::attach_path(path) {
        Ok(()) => {
            eprintln!("uid {NOBODY} attached the 0600 pin {}", path.display());
            return CHILD_ATTACHED;
        }
        Err(e) => {
            let ok = match &e {
                Error::Map { source: MapSource::Path(p), problem: MapProblem::Permission { errno } } => {
                    p == path
                        && (*errno == libc::EACCES || *errno == libc::EPERM)
                        && e.errno() == *errno
                        && e.to_string().contains(path.to_str().unwrap())
                        && e.to_string().contains("permission denied")
                }
                _ => false,
            };
            if !ok {
                eprintln!("uid {NOBODY}, 0600 pin: unexpected error {e:?}: {e}");
                return CHILD_WRONG_ERROR;
            }
        }
    }
    if let Err(e) = tld::attach_path(&pins.data_0666) {
        eprintln!("uid {NOBODY}, 0666 pin of the same map: {e}");
        return CHILD_CONTROL_FAILED;
    }
    let published = tld::Key::<u64>::get_or_create("unprivileged_value").and_then(|k| k.set(UNPRIVILEGED_VALUE));
    if let Err(e) = published {
        eprintln!("uid {NOBODY} could not publish through the 0666 pin: {e}");
        return CHILD_CONTROL_FAILED;
    }
    let tid = tld_tests::gettid().to_le_bytes();
    let mut byte = 0u8;
    unsafe {
        libc::write(report, tid.as_ptr().cast(), 4);
        libc::read(done, (&mut byte as *mut u8).cast(), 1);
    }
    CHILD_OK
}

const UNPRIVILEGED_VALUE: u64 = 0x0000_b0d0_0006_5534;

fn permission_denied(bpf: &TestBpf, pins: &Pins) {
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let (mut report, mut done) = ([0i32; 2], [0i32; 2]);
    assert_eq!(unsafe { libc::pipe(report.as_mut_ptr()) }, 0);
    assert_eq!(unsafe { libc::pipe(done.as_mut_ptr()) }, 0);
    match unsafe { libc::fork() } {
        -1 => panic!("fork: {}", std::io::Error::last_os_error()),
        0 => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                unprivileged_attach(pins, report[1], done[0])
            }))
            .unwrap_or(99);
            unsafe { libc::_exit(code) };
        }
        pid => {
            unsafe {
                libc::close(report[1]);
                libc::close(done[0]);
            }
            // Root reads with BPF what the unprivileged process published.
            let mut tid = [0u8; 4];
            let got = unsafe { libc::read(report[0], tid.as_mut_ptr().cast(), 4) };
            let read_back = (got == 4).then(|| {
                let d = bpf.dump_tid(i32::from_le_bytes(tid)).unwrap();
                int_value(&d, "unprivileged_value")
            });
            unsafe {
                libc::write(done[1], b"x".as_ptr().cast(), 1);
                libc::close(done[1]);
                libc::close(report[0]);
            }
            let mut status = 0;
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            assert!(libc::WIFEXITED(status), "the unprivileged child died: status {status:#x}");
            let code = libc::WEXITSTATUS(status);
            let why = match code {
                CHILD_OK => "",
                CHILD_SETUID_FAILED => "could not drop privileges",
                CHILD_ATTACHED => "uid 65534 attached a 0600 root-owned pin",
                CHILD_WRONG_ERROR => "the error was not Map/Permission naming the path (see stderr)",
                CHILD_CONTROL_FAILED => "uid 65534 could not attach the 0666 pin of the same map (see stderr)",
                _ => "the child panicked",
            };
            assert_eq!(code, CHILD_OK, "{why}");
            assert_eq!(read_back, Some(Some(UNPRIVILEGED_VALUE as i64)), "BPF reads the value uid {NOBODY} published");
        }
    }
    // Root may: the pin itself is fine.
    tld::attach_path(&pins.data_0600).unwrap();
}

fn c_abi_attach_errors(pins: &Pins, tmp: &Path) {
    let lib = CLibrary::load_copy(tmp, "libtld_attach_errors.so");
    let attach_path: extern "C" fn(*const libc::c_char) -> i32 = lib.sym("tld_attach_path");
    let call = |path: &Path| {
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        attach_path(c.as_ptr())
    };

    let missing = Path::new("/nonexistent/tld_data_map");
    assert_eq!(call(missing), -libc::ENOENT);
    let msg = lib.last_error();
    assert!(msg.contains("/nonexistent/tld_data_map") && msg.contains("no such file"), "{msg}");

    let regular = tmp.join("regular_file_c");
    std::fs::write(&regular, b"x").unwrap();
    assert_eq!(call(&regular), -libc::EINVAL);
    let msg = lib.last_error();
    assert!(msg.contains(regular.to_str().unwrap()) && msg.contains("not on a BPF filesystem"), "{msg}");

    assert_eq!(call(&pins.prog), -libc::EINVAL);
    let msg = lib.last_error();
    assert!(msg.contains(pins.prog.to_str().unwrap()) && msg.contains("not a BPF map"), "{msg}");

    assert_eq!(call(&pins.wrong_value), -libc::EINVAL);
    assert!(lib.last_error().contains("value size 8"), "{}", lib.last_error());

    assert_eq!(lib.attach_fd(-1), -libc::EINVAL);
    assert!(lib.last_error().contains("map fd -1"), "{}", lib.last_error());

    assert_eq!(call(&pins.data_0600), 0, "{}", lib.last_error());
    assert_eq!(tld::runtime_stats().unwrap().attached_maps, 1);
}

fn main() {
    let Some(bpf) = kernel() else { finish(&[]) };
    let dir = PinDir::new();
    let tmp = TempDir::new("attach-errors");
    let pins = make_pins(&bpf, &dir);
    let results = [
        in_child("each attach error is distinct and names its cause; the good map keeps working", || {
            errors_name_their_cause(&bpf, &pins, &tmp.0)
        }),
        in_child("uid 65534: Permission through a 0600 pin; through a 0666 pin it publishes and BPF reads it", || permission_denied(&bpf, &pins)),
        in_child("C ABI: tld_attach_path/tld_attach_fd return -errno and name the cause", || {
            c_abi_attach_errors(&pins, &tmp.0)
        }),
    ];
    // finish() exits without running destructors: unpin first.
    drop(dir);
    drop(tmp);
    drop(bpf);
    finish(&results)
}
