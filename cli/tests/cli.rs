//! End-to-end tests of the `tld` tool against the kernel and a real
//! workload: a forked child of this (single-threaded) test process that
//! attaches to a test-unique pin by path and publishes known values from
//! several threads, driven over pipes.
//!
//! No libtest: scenarios fork, which is only safe from a single-threaded
//! parent. Kernel tests follow the workspace rule: skipped with a message
//! without privileges, failed instead under CI=true.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tld_bpf::hand::{Meta, Page, Registration, STAMP_MAGIC};
use tld_bpf::{TestBpf, TestMap};

const TLD: &str = env!("CARGO_BIN_EXE_tld");
const NOBODY: u32 = 65534;
const THREADS: usize = 3;

// ---------------------------------------------------------------------------
// Pins: a unique directory under /sys/fs/bpf per scenario, removed on drop.

struct PinDir(PathBuf);

impl PinDir {
    fn new(tag: &str) -> PinDir {
        let dir = PathBuf::from(format!(
            "/sys/fs/bpf/tld-cli-test-{}-{tag}",
            std::process::id()
        ));
        remove_dir(&dir);
        PinDir(dir)
    }
    fn map(&self) -> PathBuf {
        self.0.join("tld_data_map")
    }
}

fn remove_dir(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl Drop for PinDir {
    fn drop(&mut self) {
        remove_dir(&self.0);
    }
}

// ---------------------------------------------------------------------------
// Running the tool.

fn tld(args: &[&str]) -> Output {
    Command::new(TLD)
        .args(args)
        .env_remove("TLD_MAP_PATH")
        .output()
        .expect("run tld")
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn expect_ok(out: &Output) {
    assert_eq!(
        code(out),
        0,
        "tld failed: stdout {:?} stderr {:?}",
        stdout(out),
        stderr(out)
    );
}

fn expect_code(out: &Output, want: i32, needle: &str) {
    let err = stderr(out);
    assert_eq!(
        code(out),
        want,
        "wrong exit code: stdout {:?} stderr {err:?}",
        stdout(out)
    );
    assert!(
        err.contains(needle),
        "stderr {err:?} does not mention {needle:?}"
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "not a one-line message: {err:?}"
    );
}

fn pin(dir: &PinDir, extra: &[&str]) -> PathBuf {
    let map = dir.map();
    let mut args = vec!["pin", "--path", map.to_str().unwrap()];
    args.extend_from_slice(extra);
    expect_ok(&tld(&args));
    map
}

fn json_of(out: &Output) -> Value {
    expect_ok(out);
    serde_json::from_str(stdout(out).trim())
        .unwrap_or_else(|e| panic!("bad JSON {:?}: {e}", stdout(out)))
}

// ---------------------------------------------------------------------------
// The workload.

/// Per-thread values: priority 10+i (i32), in_cs i%2 (u8), request_id
/// 1000+i (+100 per bump, u64), level -i (i16), tag 16 bytes of i+1, blob
/// 80 bytes of 0xa0+i (longer than what the tool shows).
fn expected(i: usize, bumps: u64) -> Vec<(&'static str, usize, Option<i64>, Vec<u8>)> {
    let b = i as u8;
    vec![
        (
            "priority",
            4,
            Some(10 + i as i64),
            (10 + i as i32).to_le_bytes().to_vec(),
        ),
        ("in_cs", 1, Some((i % 2) as i64), vec![b % 2]),
        (
            "request_id",
            8,
            Some((1000 + i as u64 + 100 * bumps) as i64),
            (1000 + i as u64 + 100 * bumps).to_le_bytes().to_vec(),
        ),
        (
            "level",
            2,
            Some(-(i as i64)),
            (-(i as i16)).to_le_bytes().to_vec(),
        ),
        ("tag", 16, None, vec![b + 1; 16]),
        ("blob", 80, None, vec![0xa0 + b; 64]),
    ]
}

const KEYS: &[(&str, u64, u64)] = &[
    // name, size, offset
    ("priority", 4, 0),
    ("in_cs", 1, 8),
    ("request_id", 8, 16),
    ("level", 2, 24),
    ("tag", 16, 32),
    ("blob", 80, 48),
];

enum Cmd {
    Bump,
    Exit,
}

/// Runs in the forked child: never returns.
fn workload_main(map: &Path, cmd_fd: OwnedFd, ack_fd: OwnedFd, uid: Option<u32>) -> ! {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if let Some(uid) = uid {
            // SAFETY: plain system calls in a single-threaded child.
            unsafe {
                assert_eq!(libc::setgroups(0, std::ptr::null()), 0, "setgroups");
                assert_eq!(libc::setgid(uid), 0, "setgid");
                assert_eq!(libc::setuid(uid), 0, "setuid");
            }
        }
        let mut ack = File::from(ack_fd);
        let cmds = BufReader::new(File::from(cmd_fd));
        tld::set_dynamic_reserve(256).expect("reserve");
        tld::attach_path(map).expect("attach the pinned map by path");
        let keys = (
            tld::Key::<i32>::get_or_create("priority").unwrap(),
            tld::Key::<u8>::get_or_create("in_cs").unwrap(),
            tld::Key::<u64>::get_or_create("request_id").unwrap(),
            tld::Key::<i16>::get_or_create("level").unwrap(),
            tld::Key::<[u8; 16]>::get_or_create("tag").unwrap(),
            tld::RawKey::get_or_create("blob", 80).unwrap(),
        );
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut workers: Vec<Option<(mpsc::Sender<Cmd>, std::thread::JoinHandle<()>)>> = Vec::new();
        for i in 0..THREADS {
            let (tx, rx) = mpsc::channel::<Cmd>();
            let ready = ready_tx.clone();
            let (prio, in_cs, req, level, tag, blob) = keys;
            let h = std::thread::Builder::new()
                .name(format!("wl-{i}"))
                .spawn(move || {
                    let mut request = 1000 + i as u64;
                    prio.set(10 + i as i32).unwrap();
                    in_cs.set((i % 2) as u8).unwrap();
                    req.set(request).unwrap();
                    level.set(-(i as i16)).unwrap();
                    tag.set([i as u8 + 1; 16]).unwrap();
                    blob.write(&[0xa0 + i as u8; 80]).unwrap();
                    ready
                        .send((i, unsafe { libc::syscall(libc::SYS_gettid) } as i32))
                        .unwrap();
                    for cmd in rx {
                        match cmd {
                            Cmd::Bump => {
                                request += 100;
                                req.set(request).unwrap();
                                ready.send((i, 0)).unwrap();
                            }
                            Cmd::Exit => return,
                        }
                    }
                })
                .unwrap();
            workers.push(Some((tx, h)));
        }
        let mut tids = [0; THREADS];
        for _ in 0..THREADS {
            let (i, tid) = ready_rx.recv().unwrap();
            tids[i] = tid;
        }
        let line: Vec<String> = tids.iter().map(|t| t.to_string()).collect();
        writeln!(ack, "ready {}", line.join(" ")).unwrap();
        for line in cmds.lines() {
            let line = line.unwrap();
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["bump"] => {
                    let live: Vec<_> = workers.iter().flatten().collect();
                    for (tx, _) in &live {
                        tx.send(Cmd::Bump).unwrap();
                    }
                    for _ in 0..live.len() {
                        ready_rx.recv().unwrap();
                    }
                }
                ["exit", n] => {
                    let (tx, h) = workers[n.parse::<usize>().unwrap()].take().unwrap();
                    tx.send(Cmd::Exit).unwrap();
                    h.join().unwrap();
                }
                ["quit"] => break,
                other => panic!("unknown command {other:?}"),
            }
            writeln!(ack, "ok").unwrap();
        }
    }));
    // SAFETY: leaving the forked child without running the parent's atexit.
    unsafe { libc::_exit(if result.is_ok() { 0 } else { 1 }) }
}

struct Workload {
    pid: i32,
    tids: Vec<i32>,
    cmd: Option<File>,
    ack: BufReader<File>,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid out array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: two new fds we own.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Workload {
    /// Forks a child running `child(commands, acks)`, the two pipe ends it
    /// reads commands from and writes acknowledgements to; `child` never
    /// returns (it ends with `_exit`).
    fn fork(child: impl FnOnce(OwnedFd, OwnedFd)) -> Workload {
        let (cmd_r, cmd_w) = pipe();
        let (ack_r, ack_w) = pipe();
        let _ = std::io::stdout().flush();
        // SAFETY: the test process is single-threaded here (no libtest, and
        // every helper thread was joined), so the child may run Rust code.
        match unsafe { libc::fork() } {
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            0 => {
                drop(cmd_w);
                drop(ack_r);
                child(cmd_r, ack_w);
                // SAFETY: leaving the forked child (not reached).
                unsafe { libc::_exit(1) }
            }
            pid => Workload {
                pid,
                tids: Vec::new(),
                cmd: Some(File::from(cmd_w)),
                ack: BufReader::new(File::from(ack_r)),
            },
        }
    }

    fn start(map: &Path, uid: Option<u32>) -> Workload {
        let mut w = Workload::fork(|cmd, ack| workload_main(map, cmd, ack, uid));
        let line = w.read_ack();
        let tids = line
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("workload said {line:?}"));
        w.tids = tids
            .split_whitespace()
            .map(|t| t.parse().unwrap())
            .collect();
        assert_eq!(w.tids.len(), THREADS);
        w
    }

    fn read_ack(&mut self) -> String {
        let mut line = String::new();
        self.ack
            .read_line(&mut line)
            .expect("read from the workload");
        assert!(!line.is_empty(), "the workload died");
        line.trim_end().to_string()
    }

    fn send(&mut self, cmd: &str) {
        writeln!(self.cmd.as_mut().unwrap(), "{cmd}").unwrap();
        assert_eq!(self.read_ack(), "ok", "workload command {cmd}");
    }

    /// Asks the workload to exit and reaps it.
    fn quit(&mut self) {
        if let Some(mut cmd) = self.cmd.take() {
            let _ = writeln!(cmd, "quit");
        }
        self.reap();
    }

    fn reap(&mut self) {
        if self.pid > 0 {
            let mut status = 0;
            // SAFETY: our own child.
            unsafe { libc::waitpid(self.pid, &mut status, 0) };
            self.pid = 0;
        }
    }

    fn pid_str(&self) -> String {
        self.pid.to_string()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        if self.pid > 0 {
            // SAFETY: our own child, not yet reaped.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            self.reap();
        }
    }
}

// ---------------------------------------------------------------------------
// Checks of the JSON documents.

fn check_keys(keys: &Value) {
    let keys = keys.as_array().expect("keys array");
    assert_eq!(keys.len(), KEYS.len(), "keys: {keys:?}");
    for (slot, (k, (name, size, offset))) in keys.iter().zip(KEYS).enumerate() {
        assert_eq!(k["slot"], slot as u64, "{k}");
        assert_eq!(k["name"], *name, "{k}");
        assert_eq!(k["size"], *size, "{k}");
        assert_eq!(k["offset"], *offset, "{k}");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks one thread's values: exactly the published keys.
fn check_thread(t: &Value, tid: i32, i: usize, bumps: u64) {
    assert_eq!(t["tid"], tid, "{t}");
    assert_eq!(t["name"], format!("wl-{i}"), "{t}");
    let values = t["values"].as_object().expect("values object");
    let want = expected(i, bumps);
    assert_eq!(values.len(), want.len(), "{t}");
    for (name, size, int, bytes) in want {
        let v = &values[name];
        match int {
            Some(n) => assert_eq!(v["int"], n, "{name} of thread {i}: {v}"),
            None => assert!(v.get("int").is_none(), "{name} has no int: {v}"),
        }
        assert_eq!(v["hex"], hex(&bytes), "{name} of thread {i}: {v}");
        assert_eq!(v["truncated"], size > 64, "{name}: {v}");
    }
}

fn threads_by_tid(doc: &Value) -> Vec<i32> {
    doc["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tid"].as_i64().unwrap() as i32)
        .collect()
}

// ---------------------------------------------------------------------------
// Scenarios.

fn pin_is_idempotent_and_refuses_wrong_objects() {
    let dir = PinDir::new("pin");
    let map = pin(&dir, &["--mode", "0600"]);
    let path = map.to_str().unwrap();
    let again = tld(&["pin", "--path", path]);
    expect_ok(&again);
    assert!(
        stdout(&again).contains("already pinned"),
        "{}",
        stdout(&again)
    );
    // TLD_MAP_PATH is honoured.
    let out = Command::new(TLD)
        .args(["pin"])
        .env("TLD_MAP_PATH", &map)
        .output()
        .unwrap();
    expect_ok(&out);
    assert!(stdout(&out).contains("already pinned"));
    let status = tld(&["status", "--path", path]);
    expect_ok(&status);
    let text = stdout(&status);
    assert!(
        text.contains("mounted") && text.contains("pinned at") && text.contains("mode 0600"),
        "{text}"
    );
    assert!(text.contains("uptr:        supported"), "{text}");

    expect_ok(&tld(&["unpin", "--path", path]));
    assert!(!map.exists());
    expect_code(&tld(&["unpin", "--path", path]), 5, "no map pinned");

    // Wrong objects at the path: refused with the reason, left in place.
    let bpf = TestBpf::load().expect("load the test BPF programs");
    let cases = [
        (TestMap::WrongValue, "value size 8"),
        (TestMap::PlainHash, "not task storage"),
    ];
    for (which, reason) in cases {
        bpf.pin_map(which, &map).unwrap();
        expect_code(&tld(&["pin", "--path", path]), 8, reason);
        expect_code(&tld(&["dump", "1", "--path", path]), 8, reason);
        expect_code(&tld(&["unpin", "--path", path]), 8, "not a tld_data_map");
        assert!(map.exists());
        std::fs::remove_file(&map).unwrap();
    }
    bpf.pin_program(&map).unwrap();
    expect_code(&tld(&["pin", "--path", path]), 8, "not a BPF map");
}

fn keys_and_dump_show_exactly_what_was_published() {
    let dir = PinDir::new("dump");
    let map = pin(&dir, &[]);
    let path = map.to_str().unwrap();
    let w = Workload::start(&map, None);
    let pid = w.pid_str();

    let keys = json_of(&tld(&["keys", &pid, "--path", path, "--json"]));
    assert_eq!(keys["schema"], "tld-keys/1");
    assert_eq!(keys["pid"], w.pid);
    check_keys(&keys["keys"]);
    assert_eq!(keys["warnings"].as_array().unwrap().len(), 0, "{keys}");

    let text = tld(&["keys", &pid, "--path", path]);
    expect_ok(&text);
    let lines: Vec<String> = stdout(&text)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(lines[0], "SLOT NAME SIZE OFFSET");
    assert_eq!(lines[3], "2 request_id 8 16");

    let doc = json_of(&tld(&["dump", &pid, "--path", path, "--json"]));
    assert_eq!(doc["schema"], "tld-dump/1");
    assert_eq!(doc["map"], path);
    check_keys(&doc["keys"]);
    let threads = doc["threads"].as_array().unwrap();
    assert_eq!(
        threads_by_tid(&doc),
        {
            let mut t = w.tids.clone();
            t.sort();
            t
        },
        "{doc}"
    );
    for t in threads {
        let tid = t["tid"].as_i64().unwrap() as i32;
        let i = w.tids.iter().position(|&x| x == tid).unwrap();
        check_thread(t, tid, i, 0);
    }

    // --tid: one row.
    let tid1 = w.tids[1].to_string();
    let one = json_of(&tld(&[
        "dump", &pid, "--tid", &tid1, "--path", path, "--json",
    ]));
    assert_eq!(threads_by_tid(&one), vec![w.tids[1]]);
    check_thread(&one["threads"][0], w.tids[1], 1, 0);
    expect_code(
        &tld(&["dump", &pid, "--tid", "999999", "--path", path]),
        3,
        "no thread 999999",
    );

    // The table: integers for 1/2/4/8 bytes, hex otherwise.
    let table = tld(&["dump", &pid, "--tid", &tid1, "--path", path]);
    expect_ok(&table);
    let rows: Vec<Vec<String>> = stdout(&table)
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "TID",
            "THREAD",
            "priority",
            "in_cs",
            "request_id",
            "level",
            "tag",
            "blob"
        ]
    );
    assert_eq!(
        rows[1][..6],
        [tid1.as_str(), "wl-1", "11", "1", "1001", "-1"]
    );
    assert_eq!(rows[1][6], format!("0x{}", "02".repeat(16)));
    assert_eq!(rows[1][7], format!("0x{}...", "a1".repeat(64)));
}

fn watch_follows_changes_exits_and_the_process() {
    let dir = PinDir::new("watch");
    let map = pin(&dir, &[]);
    let path = map.to_str().unwrap();
    let mut w = Workload::start(&map, None);
    let pid = w.pid_str();

    let mut watcher = Command::new(TLD)
        .args(["dump", &pid, "--path", path, "--json", "--watch", "0.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = watcher.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<Value>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx
                .send(serde_json::from_str(&line).expect("JSON line"))
                .is_err()
            {
                break;
            }
        }
    });
    let wait_for = |what: &str, pred: &dyn Fn(&Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(doc) if pred(&doc) => return doc,
                Ok(_) => {}
                Err(e) => panic!("waiting for {what}: {e}"),
            }
        }
    };

    let first = wait_for("the first document", &|_| true);
    assert_eq!(
        first["threads"].as_array().unwrap().len(),
        THREADS,
        "{first}"
    );

    w.send("bump");
    let bumped = wait_for("bumped request ids", &|d| {
        d["threads"][0]["values"]["request_id"]["int"]
            != first["threads"][0]["values"]["request_id"]["int"]
    });
    for t in bumped["threads"].as_array().unwrap() {
        let tid = t["tid"].as_i64().unwrap() as i32;
        let i = w.tids.iter().position(|&x| x == tid).unwrap();
        check_thread(t, tid, i, 1);
    }

    w.send("exit 1");
    let gone = w.tids[1];
    let after = wait_for("thread 1 to disappear", &|d| {
        !threads_by_tid(d).contains(&gone)
    });
    assert_eq!(
        after["threads"].as_array().unwrap().len(),
        THREADS - 1,
        "{after}"
    );

    // The process exits: the watch ends with the documented error.
    w.quit();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = watcher.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = watcher.kill();
            panic!("the watch did not end when the process exited");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    reader.join().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut watcher.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(3), "stderr {err:?}");
    assert!(err.contains(&format!("process {pid} exited")), "{err:?}");

    // And so does a new dump or keys.
    expect_code(&tld(&["dump", &pid, "--path", path]), 3, "no process");
    expect_code(&tld(&["keys", &pid, "--path", path]), 3, "no process");
}

fn errors_name_the_cause() {
    let dir = PinDir::new("errors");
    let me = std::process::id().to_string();
    let missing = dir.map();
    let missing = missing.to_str().unwrap();
    expect_code(&tld(&["dump", &me, "--path", missing]), 5, "no map pinned");
    expect_code(
        &tld(&["dump", &me, "--path", "/tmp/tld-not-bpffs/map"]),
        6,
        "bpffs is not mounted",
    );
    expect_code(
        &tld(&["pin", "--path", "/tmp/tld-not-bpffs/map"]),
        6,
        "bpffs is not mounted",
    );
    expect_code(
        &tld(&["dump", "999999999", "--path", missing]),
        3,
        "no process with pid 999999999",
    );
    let map = pin(&dir, &[]);
    // This process uses no tld.
    expect_code(
        &tld(&["dump", &me, "--path", map.to_str().unwrap()]),
        4,
        "does not use tld",
    );
    expect_code(
        &tld(&["keys", &me, "--path", map.to_str().unwrap()]),
        4,
        "does not use tld",
    );
    // A bad command line is 2.
    assert_eq!(code(&tld(&["dump"])), 2);
    let help = tld(&["--help"]);
    assert!(stdout(&help).contains("EXIT CODES"), "{}", stdout(&help));
    let help = tld(&["dump", "--help"]);
    assert!(stdout(&help).contains("tld-dump/1"));
}

fn a_0666_pin_serves_an_unprivileged_workload() {
    let dir = PinDir::new("nobody");
    // Under a strict umask too: tld makes the directories it creates 0755.
    // SAFETY: umask has no preconditions.
    let umask = unsafe { libc::umask(0o077) };
    let map = pin(&dir, &["--mode", "0666"]);
    unsafe { libc::umask(umask) };
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!((mode(&dir.0), mode(&map)), (0o755, 0o666));
    let path = map.to_str().unwrap();
    let w = Workload::start(&map, Some(NOBODY));
    let status = std::fs::read_to_string(format!("/proc/{}/status", w.pid)).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("65534")),
        "{status}"
    );
    let doc = json_of(&tld(&["dump", &w.pid_str(), "--path", path, "--json"]));
    check_keys(&doc["keys"]);
    assert_eq!(doc["threads"].as_array().unwrap().len(), THREADS);
    for t in doc["threads"].as_array().unwrap() {
        let tid = t["tid"].as_i64().unwrap() as i32;
        let i = w.tids.iter().position(|&x| x == tid).unwrap();
        check_thread(t, tid, i, 0);
    }
    // The unprivileged user may write the map but not read it through BPF.
    // A copy of the tool nobody can run whatever the checkout's modes.
    let bin_dir = std::env::temp_dir().join(format!("tld-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&bin_dir).unwrap();
    let _cleanup = RemoveOnDrop(bin_dir.clone());
    std::fs::set_permissions(&bin_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = bin_dir.join("tld");
    std::fs::copy(TLD, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(&bin)
        .args(["dump", &w.pid_str(), "--path", path])
        .env_remove("TLD_MAP_PATH")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    expect_code(&out, 7, "needs root");
}

/// Metadata the process controls is untrusted: registered by hand (the
/// test's own main thread, DESIGN.md §2 layout), garbage is reported and
/// never read out of bounds.
fn garbage_metadata_is_skipped_and_reported() {
    let dir = PinDir::new("garbage");
    let map = pin(&dir, &[]);
    let path = map.to_str().unwrap();
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let slots = page / 64 - 1;
    let c = std::ffi::CString::new(path).unwrap();
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libbpf_rs::libbpf_sys::bpf_obj_get(c.as_ptr()) };
    assert!(fd >= 0, "bpf_obj_get: {fd}");
    // SAFETY: a new fd we own.
    let map_fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let meta = Meta::new();
    let data = Page::new();
    // cnt beyond the slot count; slot 0 fits exactly at the end of the data
    // page; slot 1 runs past it; the rest are nameless-NUL garbage.
    meta.set_cnt(u16::MAX);
    meta.set_size(u16::MAX);
    meta.set_slot(0, b"first", 8);
    meta.set_slot(1, b"past", 60000);
    for i in 2..slots {
        meta.set_slot(i, &[b'A'; 62], u16::MAX);
    }
    data.write(page - 8, &[0xab; 8]);
    let me = std::process::id().to_string();
    let tid = unsafe { libc::gettid() };
    let reg = Registration::new(map_fd.as_fd(), tid).expect("pidfd_open");
    reg.update(data.addr(), meta.addr(), (page - 8) as u16)
        .expect("registering by hand");

    let doc = json_of(&tld(&["dump", &me, "--path", path, "--json"]));
    assert_eq!(threads_by_tid(&doc), vec![tid], "{doc}");
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), slots, "{doc}");
    assert_eq!(
        (&keys[0]["name"], &keys[0]["offset"]),
        (&Value::from("first"), &Value::from(0))
    );
    assert_eq!(
        (&keys[1]["name"], &keys[1]["offset"]),
        (&Value::from("past"), &Value::from(8))
    );
    let values = &doc["threads"][0]["values"];
    assert_eq!(values["first"]["hex"], "ab".repeat(8));
    assert_eq!(values["first"]["int"], i64::from_le_bytes([0xab; 8]));
    assert_eq!(values["past"], Value::Null);
    let warnings: Vec<&str> = doc["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains(&format!("cnt 65535 exceeds the {slots} slots"))),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("\"past\"") && w.contains("runs past the thread's data page")),
        "{warnings:?}"
    );
    // The table marks the skipped value and warns on stderr.
    let table = tld(&["dump", &me, "--path", path]);
    expect_ok(&table);
    assert!(
        stderr(&table).contains("warning: tid"),
        "{}",
        stderr(&table)
    );

    // A slot still being written (size 0) ends the walk, reported.
    meta.set_cnt(3);
    meta.set_slot(1, b"past", 0);
    let doc = json_of(&tld(&["dump", &me, "--path", path, "--json"]));
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{doc}");
    let warnings = doc["warnings"].to_string();
    assert!(
        warnings.contains("slot 1 is still being written"),
        "{warnings}"
    );
    let keys_out = tld(&["keys", &me, "--path", path]);
    expect_ok(&keys_out);
    assert!(stderr(&keys_out).contains("slot 1 is still being written"));

    // NULL UPTRs: registered, nothing followed.
    reg.update(0, 0, 8).expect("registering by hand");
    let doc = json_of(&tld(&["dump", &me, "--path", path, "--json"]));
    assert_eq!(doc["keys"].as_array().unwrap().len(), 0);
    assert!(
        doc["warnings"]
            .to_string()
            .contains("without a metadata page"),
        "{doc}"
    );
}

/// CPU time the calling thread has used.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Spends `ms` milliseconds of this thread's CPU time, in 1 ms bursts with a
/// short sleep between them, so the thread is switched out (and charged by
/// `tld top`'s sched_switch program) many times.
fn spin_cpu(ms: u64) {
    let end = thread_cpu() + Duration::from_millis(ms);
    while thread_cpu() < end {
        let tick = thread_cpu() + Duration::from_millis(1);
        while thread_cpu() < tick {
            std::hint::spin_loop();
        }
        std::thread::sleep(Duration::from_micros(20));
    }
}

/// The phases every thread of the `tld top` workload goes through, twice:
/// (value of "phase", CPU milliseconds spent in it). Shares: 60/30/10 %.
const PHASES: [(u32, u64); 3] = [(1, 240), (2, 120), (3, 40)];
const PHASE_THREADS: usize = 2;

/// The PHASE_THREADS threads (`phase-I`) of a `tld top` workload.
struct PhaseThreads {
    go: std::sync::Arc<std::sync::Barrier>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl PhaseThreads {
    /// Starts the threads: thread I runs `prepare(I)`, waits for [`run`],
    /// then runs `work(I)`. Returns once every thread has prepared.
    ///
    /// [`run`]: PhaseThreads::run
    fn start(
        prepare: impl Fn(usize) + Send + Sync + 'static,
        work: impl Fn(usize) + Send + Sync + 'static,
    ) -> PhaseThreads {
        let go = std::sync::Arc::new(std::sync::Barrier::new(PHASE_THREADS + 1));
        let (prepare, work) = (std::sync::Arc::new(prepare), std::sync::Arc::new(work));
        let (ready_tx, ready_rx) = mpsc::channel();
        let threads = (0..PHASE_THREADS)
            .map(|i| {
                let (go, ready, prepare, work) = (go.clone(), ready_tx.clone(), prepare.clone(), work.clone());
                std::thread::Builder::new()
                    .name(format!("phase-{i}"))
                    .spawn(move || {
                        prepare(i);
                        ready.send(()).unwrap();
                        go.wait();
                        work(i);
                    })
                    .unwrap()
            })
            .collect();
        for _ in 0..PHASE_THREADS {
            ready_rx.recv().unwrap();
        }
        PhaseThreads { go, threads }
    }

    /// Lets the threads work and waits for them to finish.
    fn run(self) {
        self.go.wait();
        for t in self.threads {
            t.join().unwrap();
        }
    }
}

/// Runs in the forked child: threads that publish "phase" and burn known
/// amounts of CPU time in each phase (measured on their own CPU clock, so
/// other load on the machine does not change the shares), sleeping briefly
/// every millisecond as request handlers do. Never returns.
fn phases_main(map: &Path, cmd_fd: OwnedFd, ack_fd: OwnedFd) -> ! {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut ack = File::from(ack_fd);
        let mut cmds = BufReader::new(File::from(cmd_fd));
        tld::attach_path(map).expect("attach the pinned map by path");
        let phase = tld::Key::<u32>::get_or_create("phase").unwrap();
        let workers = PhaseThreads::start(
            move |_| phase.set(0).unwrap(),
            move |_| {
                for _ in 0..2 {
                    for (value, ms) in PHASES {
                        phase.set(value).unwrap();
                        spin_cpu(ms);
                    }
                }
                phase.set(0).unwrap();
            },
        );
        writeln!(ack, "ready").unwrap();
        let mut line = String::new();
        cmds.read_line(&mut line).unwrap();
        workers.run();
    }));
    // SAFETY: leaving the forked child without running the parent's atexit.
    unsafe { libc::_exit(if result.is_ok() { 0 } else { 1 }) }
}

/// `tld top --by phase` against the phases workload: each phase value got
/// its share of the CPU time (within generous bounds: this checks the
/// attribution, not the timing), and the command ends with the process.
fn top_charges_cpu_time_to_each_phase() {
    let dir = PinDir::new("top");
    let map = pin(&dir, &[]);
    let path = map.to_str().unwrap().to_string();
    let mut w = Workload::fork(|cmd, ack| phases_main(&map, cmd, ack));
    let pid = w.pid;
    assert_eq!(w.read_ack(), "ready");

    // Unknown keys are refused with the keys there are.
    expect_code(
        &tld(&["top", &pid.to_string(), "--by", "nope", "--path", &path]),
        1,
        "has no key \"nope\" (its keys: phase)",
    );

    let mut top = Command::new(TLD)
        .args(["top", &pid.to_string(), "--by", "phase", "--json", "--interval", "0.2", "--path", &path])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The same per thread, beside it.
    let per_thread = Command::new(TLD)
        .args(["top", &pid.to_string(), "--by", "phase", "--json", "--per-thread", "--interval", "0.5", "--path", &path])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(top.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().expect("a first document").unwrap()).unwrap();
    assert_eq!(first["schema"], "tld-top/1");
    assert_eq!(first["key"]["size"], 4);
    // The program is attached: start the phases.
    writeln!(w.cmd.as_mut().unwrap(), "go").unwrap();
    let mut last = first;
    for line in lines {
        last = serde_json::from_str(&line.unwrap()).expect("JSON line");
    }
    let status = top.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut top.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "tld top: {status} {err}");
    assert_eq!(last["exited"], true, "{last}");
    w.reap();

    let mut by_value = std::collections::BTreeMap::new();
    for row in last["rows"].as_array().unwrap() {
        if row["status"] == "value" {
            let v = row["value"]["int"].as_i64().unwrap();
            *by_value.entry(v).or_insert(0u64) += row["total_cpu_ns"].as_u64().unwrap();
        }
    }
    let phases: u64 = [1, 2, 3].iter().map(|v| by_value.get(v).copied().unwrap_or(0)).sum();
    // Every thread spent 2 * 400 ms of CPU in the phases.
    let want_total = PHASE_THREADS as f64 * 0.8e9;
    assert!(
        (phases as f64) > 0.7 * want_total && (phases as f64) < 1.5 * want_total,
        "{phases} ns charged to phases 1-3, expected about {want_total}: {last}"
    );
    for (value, share, slack) in [(1, 0.6, 0.12), (2, 0.3, 0.1), (3, 0.1, 0.07)] {
        let got = by_value.get(&value).copied().unwrap_or(0) as f64 / phases as f64;
        assert!(
            (got - share).abs() < slack,
            "phase {value}: {got:.3} of the CPU time, expected {share} +- {slack}: {last}"
        );
    }

    // Per thread: only the workload's threads, each charged about its
    // 800 ms in the phases, split 60/30/10 as well.
    let out = per_thread.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().expect("documents")).unwrap();
    let mut per_tid: std::collections::BTreeMap<i64, [u64; 4]> = Default::default();
    for row in last["rows"].as_array().unwrap() {
        if row["status"] == "value" {
            let v = row["value"]["int"].as_i64().unwrap() as usize;
            let tid = row["tid"].as_i64().expect("a tid per row");
            per_tid.entry(tid).or_default()[v.min(3)] += row["total_cpu_ns"].as_u64().unwrap();
        }
    }
    assert_eq!(per_tid.len(), PHASE_THREADS, "{last}");
    for (tid, ns) in &per_tid {
        let phases = (ns[1] + ns[2] + ns[3]) as f64;
        assert!(phases > 0.7 * 0.8e9 && phases < 1.5 * 0.8e9, "tid {tid}: {ns:?}");
        assert!((ns[1] as f64 / phases - 0.6).abs() < 0.15, "tid {tid}: {ns:?}");
    }

    // A process that is gone.
    expect_code(&tld(&["top", &pid.to_string(), "--by", "phase", "--path", &path]), 3, "no process");
}

// ---------------------------------------------------------------------------
// OpenTelemetry thread context (tld_otel): `tld dump` decodes records,
// `tld top --by otel.*` charges to their fields.

const TRACE: [u8; 16] = [0x4b; 16];

fn span(id: u8) -> tld_otel::SpanContext {
    tld_otel::SpanContext::new(TRACE, [id; 8], 1)
}

/// Runs in a forked child for the OpenTelemetry scenarios: creates the
/// record key first (before any thread touches tld data, as
/// `static_record_key!` would; not used here, or every workload of this
/// binary would carry the key), attaches, publishes a process context, then
/// runs `body` with the ack pipe and the commands. Never returns.
fn otel_child(map: &Path, cmd_fd: OwnedFd, ack_fd: OwnedFd, body: fn(&mut File, &mut BufReader<File>)) -> ! {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut ack = File::from(ack_fd);
        let mut cmds = BufReader::new(File::from(cmd_fd));
        tld_otel::record_key().expect("create otel.thread_ctx_v1 before any thread touches tld data");
        tld::attach_path(map).expect("attach the pinned map by path");
        tld_otel::publish_process_context(&[("service.name", tld_otel::ResourceValue::String("tld-cli-test"))])
            .expect("publish the process context");
        body(&mut ack, &mut cmds);
    }));
    // SAFETY: leaving the forked child without running the parent's atexit.
    unsafe { libc::_exit(if result.is_ok() { 0 } else { 1 }) }
}

fn gettid() -> i32 {
    // SAFETY: no preconditions.
    unsafe { libc::gettid() }
}

/// Three threads: 0 publishes span 0x11 with two attributes, 1 published
/// span 0x22 and cleared it, 2 only read its record (never published).
fn otel_dump_body(ack: &mut File, cmds: &mut BufReader<File>) {
    // Indexes in a known order (threads would register them in any).
    tld_otel::AttributeKey::register("http.route").unwrap();
    tld_otel::AttributeKey::register("worker").unwrap();
    let (tx, rx) = mpsc::channel();
    let stop = std::sync::Arc::new(std::sync::Barrier::new(4));
    let threads: Vec<_> = (0..3)
        .map(|i| {
            let (tx, stop) = (tx.clone(), stop.clone());
            std::thread::spawn(move || {
                match i {
                    0 => tld_otel::set(&span(0x11), &[("http.route", "/users/:id"), ("worker", "w0")]).unwrap(),
                    1 => {
                        tld_otel::set(&span(0x22), &[("worker", "w1")]).unwrap();
                        tld_otel::clear().unwrap();
                    }
                    _ => assert!(!tld_otel::current().unwrap().valid),
                }
                tx.send((i, gettid())).unwrap();
                stop.wait();
            })
        })
        .collect();
    let mut tids = [0; 3];
    for _ in 0..3 {
        let (i, tid) = rx.recv().unwrap();
        tids[i] = tid;
    }
    writeln!(ack, "ready {} {} {}", tids[0], tids[1], tids[2]).unwrap();
    let mut line = String::new();
    cmds.read_line(&mut line).unwrap();
    stop.wait();
    for t in threads {
        t.join().unwrap();
    }
}

/// `tld dump` decodes `otel.thread_ctx_v1`: ids, flags, valid, attributes
/// named through the process context, in the table and in JSON.
fn dump_decodes_otel_records() {
    let dir = PinDir::new("otel-dump");
    let map = pin(&dir, &[]);
    let path = map.to_str().unwrap().to_string();
    let mut w = Workload::fork(|cmd, ack| otel_child(&map, cmd, ack, otel_dump_body));
    let line = w.read_ack();
    let tids: Vec<i32> =
        line.strip_prefix("ready ").expect("ready").split_whitespace().map(|t| t.parse().unwrap()).collect();
    let pid = w.pid_str();

    let doc = json_of(&tld(&["dump", &pid, "--json", "--path", &path]));
    let key_map: Vec<&str> =
        doc["otel_attribute_key_map"].as_array().expect("the key map").iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(key_map, ["http.route", "worker"], "{doc}");
    let key = doc["keys"].as_array().unwrap().iter().find(|k| k["name"] == "otel.thread_ctx_v1").expect("the key");
    assert_eq!(key["size"], 128);
    let thread = |tid: i32| {
        doc["threads"].as_array().unwrap().iter().find(|t| t["tid"] == tid).unwrap_or_else(|| panic!("tid {tid}: {doc}"))
            ["values"]["otel.thread_ctx_v1"]
            .clone()
    };
    let t0 = thread(tids[0]);
    let o = &t0["otel"];
    assert_eq!(o["valid"], 1, "{t0}");
    assert_eq!(o["trace_id"], hex(&TRACE));
    assert_eq!(o["span_id"], hex(&[0x11; 8]));
    assert_eq!(o["trace_flags"], 1);
    assert_eq!(o["attrs_cut"], false);
    let attrs = o["attributes"].as_array().unwrap();
    assert_eq!(attrs.len(), 2, "{t0}");
    assert_eq!((&attrs[0]["name"], &attrs[0]["index"], &attrs[0]["value"]), (&"http.route".into(), &0.into(), &"/users/:id".into()));
    assert_eq!((&attrs[1]["name"], &attrs[1]["value"]), (&"worker".into(), &"w0".into()));
    // The raw value is still shown as any long value: its first 64 bytes.
    assert_eq!(t0["hex"].as_str().unwrap().len(), 128);
    assert_eq!(t0["truncated"], true);
    for tid in [tids[1], tids[2]] {
        let t = thread(tid);
        // Nothing but `valid` of a record that is not: its bytes mean nothing.
        assert_eq!(t["otel"], serde_json::json!({"valid": 0}), "tid {tid}: {t}");
    }

    let text = stdout(&tld(&["dump", &pid, "--path", &path]));
    let row = |tid: i32| {
        text.lines().find(|l| l.trim_start().starts_with(&tid.to_string())).unwrap_or_else(|| panic!("{text}")).to_string()
    };
    let r0 = row(tids[0]);
    let want = format!("trace={} span={} flags=01 valid=1 http.route=\"/users/:id\" worker=\"w0\"", hex(&TRACE), hex(&[0x11; 8]));
    assert!(r0.contains(&want), "{r0:?} lacks {want:?}");
    assert!(row(tids[1]).ends_with("valid=0"), "{text}");
    assert!(row(tids[2]).ends_with("valid=0"), "{text}");
    w.quit();
}

/// The `tld top --by otel.*` workload: two threads that, after `register`
/// (the attribute names enter the key map) and `go`, twice run span 0x11
/// (route /a) for 240 ms of CPU, span 0x22 (route /b) for 120 ms, then no
/// span for 40 ms; both spans in trace TRACE.
fn otel_top_body(ack: &mut File, cmds: &mut BufReader<File>) {
    let workers = PhaseThreads::start(
        |_| assert!(!tld_otel::current().unwrap().valid),
        |i| {
            let worker = format!("w{i}");
            for _ in 0..2 {
                for (id, route, ms) in [(0x11, Some("/a"), 240), (0x22, Some("/b"), 120), (0, None, 40)] {
                    match route {
                        Some(r) => tld_otel::set(&span(id), &[("worker", &worker), ("route", r)]).unwrap(),
                        None => tld_otel::clear().unwrap(),
                    }
                    spin_cpu(ms);
                }
            }
        },
    );
    writeln!(ack, "ready").unwrap();
    let mut line = String::new();
    cmds.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "register");
    tld_otel::AttributeKey::register("worker").unwrap();
    tld_otel::AttributeKey::register("route").unwrap();
    writeln!(ack, "ok").unwrap();
    line.clear();
    cmds.read_line(&mut line).unwrap();
    workers.run();
}

fn spawn_top(pid: i32, by: &str, interval: &str, path: &str) -> std::process::Child {
    Command::new(TLD)
        .args(["top", &pid.to_string(), "--by", by, "--json", "--interval", interval, "--path", path])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The last document of a finished `tld top --json`, checked for success.
fn last_doc(child: std::process::Child) -> Value {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "tld top: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().expect("documents")).unwrap();
    assert_eq!(last["exited"], true, "{last}");
    last
}

/// Total CPU ns per row label: a value's text (attribute) or hex, or the
/// status in parentheses.
fn by_label(doc: &Value) -> std::collections::BTreeMap<String, u64> {
    let mut m = std::collections::BTreeMap::new();
    for row in doc["rows"].as_array().unwrap() {
        let label = match row["status"].as_str().unwrap() {
            "value" => row["value"].get("text").unwrap_or(&row["value"]["hex"]).as_str().unwrap().to_string(),
            other => format!("({other})"),
        };
        *m.entry(label).or_insert(0u64) += row["total_cpu_ns"].as_u64().unwrap();
    }
    m
}

/// Checks the share of each label in the time charged to all of them
/// (within generous bounds: the attribution, not the timing).
fn check_shares(what: &str, doc: &Value, shares: &[(&str, f64)]) {
    let m = by_label(doc);
    let total: u64 = shares.iter().map(|(l, _)| m.get(*l).copied().unwrap_or(0)).sum();
    let want_total = PHASE_THREADS as f64 * 0.8e9;
    assert!(
        (total as f64) > 0.7 * want_total && (total as f64) < 1.5 * want_total,
        "{what}: {total} ns charged, expected about {want_total}: {m:?}"
    );
    for (label, share) in shares {
        let got = m.get(*label).copied().unwrap_or(0) as f64 / total as f64;
        assert!((got - share).abs() < 0.12, "{what}: {label}: {got:.3} of the time, expected {share}: {m:?}");
    }
}

/// `tld top --by otel.attr.route / otel.span_id / otel.trace_id` against
/// the workload above: each span, trace and route value gets its share,
/// time without a span is "(none)", and an attribute name not registered
/// yet is looked up until it is.
fn top_charges_cpu_time_to_otel_fields() {
    let dir = PinDir::new("otel-top");
    let map = pin(&dir, &[]);
    let path = map.to_str().unwrap().to_string();
    let mut w = Workload::fork(|cmd, ack| otel_child(&map, cmd, ack, otel_top_body));
    let pid = w.pid;
    assert_eq!(w.read_ack(), "ready");

    // Not registered yet: said in the header, and in JSON.
    let text = stdout(&tld(&["top", &pid.to_string(), "--by", "otel.attr.route", "--count", "1", "--interval", "0.1", "--path", &path]));
    assert!(text.contains("not in the process's attribute key map yet"), "{text}");
    let bad = tld(&["top", &pid.to_string(), "--by", "otel.attr.", "--path", &path]);
    assert_eq!(code(&bad), 2, "{}", stderr(&bad));
    assert!(stderr(&bad).contains("needs an attribute name"), "{}", stderr(&bad));

    let mut route = spawn_top(pid, "otel.attr.route", "0.1", &path);
    let spans = spawn_top(pid, "otel.span_id", "0.5", &path);
    let traces = spawn_top(pid, "otel.trace_id", "0.5", &path);
    let mut lines = BufReader::new(route.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().expect("a first document").unwrap()).unwrap();
    assert_eq!(first["by"], "otel.attr.route");
    assert_eq!(first["key"]["name"], "otel.thread_ctx_v1");
    assert_eq!(first["attribute"], serde_json::json!({"name": "route", "index": null}), "{first}");
    w.send("register");
    // The next documents find it: "worker" is index 0, "route" 1.
    loop {
        let doc: Value = serde_json::from_str(&lines.next().expect("documents").unwrap()).unwrap();
        if doc["attribute"]["index"] == 1 {
            break;
        }
        assert!(doc["attribute"]["index"].is_null(), "{doc}");
    }
    writeln!(w.cmd.as_mut().unwrap(), "go").unwrap();
    let mut last = Value::Null;
    for line in lines {
        last = serde_json::from_str(&line.unwrap()).expect("JSON line");
    }
    assert!(route.wait().unwrap().success());
    assert_eq!(last["exited"], true, "{last}");
    w.reap();
    check_shares("by route", &last, &[("/a", 0.6), ("/b", 0.3), ("(none)", 0.1)]);
    let (x, y) = (hex(&[0x11; 8]), hex(&[0x22; 8]));
    check_shares("by span", &last_doc(spans), &[(&x, 0.6), (&y, 0.3), ("(none)", 0.1)]);
    check_shares("by trace", &last_doc(traces), &[(&hex(&TRACE), 0.9), ("(none)", 0.1)]);
}

/// A 16-byte pin (`tld pin --layout 16`) is read by status, keys and dump
/// like a 24-byte one; a registration stamped by another image is reported
/// stale, without its values. Registered by hand (DESIGN.md §2 layouts).
fn layout16_and_stale_registrations() {
    let dir = PinDir::new("layout16");
    let map = pin(&dir, &["--layout", "16"]);
    let path = map.to_str().unwrap();
    let status = tld(&["status", "--path", path]);
    expect_ok(&status);
    assert!(stdout(&status).contains("16-byte value"), "{}", stdout(&status));
    // Asking for the other layout is refused; no --layout keeps it.
    expect_code(&tld(&["pin", "--path", path, "--layout", "24"]), 8, "16-byte value, not the 24-byte");
    expect_ok(&tld(&["pin", "--path", path]));
    assert_eq!(code(&tld(&["pin", "--path", path, "--layout", "20"])), 2);

    let c = std::ffi::CString::new(path).unwrap();
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libbpf_rs::libbpf_sys::bpf_obj_get(c.as_ptr()) };
    assert!(fd >= 0, "bpf_obj_get: {fd}");
    // SAFETY: a new fd we own.
    let map_fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let (meta, offsets) = Meta::with_keys(&[("prio", 4), ("req", 8)]);
    let block = Page::new();
    block.write_u64(0, 8);
    block.write_i32(8 + offsets[0], -5);
    block.write(8 + offsets[1], &77u64.to_le_bytes());
    let me = std::process::id().to_string();
    let tid = unsafe { libc::gettid() };
    let reg = Registration::new(map_fd.as_fd(), tid).expect("pidfd_open");
    reg.update16(block.addr(), meta.addr()).expect("registering by hand");

    let doc = json_of(&tld(&["dump", &me, "--path", path, "--json"]));
    assert_eq!(threads_by_tid(&doc), vec![tid], "{doc}");
    let values = &doc["threads"][0]["values"];
    assert_eq!((values["prio"]["int"].as_i64(), values["req"]["int"].as_i64()), (Some(-5), Some(77)), "{doc}");
    assert_eq!(doc["threads"][0]["stale"], false);
    let keys = json_of(&tld(&["keys", &me, "--path", path, "--json"]));
    assert_eq!(keys["keys"][1]["name"], "req");
    assert_eq!(keys["keys"][1]["offset"], 8);

    // Stamped by this image: read; by another: stale.
    meta.stamp_current();
    let doc = json_of(&tld(&["dump", &me, "--path", path, "--json"]));
    assert_eq!(doc["threads"][0]["values"]["prio"]["int"], -5, "{doc}");
    meta.set_stamp(STAMP_MAGIC, tld_bpf::hand::exec_stamp() + 4096);
    let doc = json_of(&tld(&["dump", &me, "--path", path, "--json"]));
    assert_eq!(doc["threads"][0]["stale"], true, "{doc}");
    assert_eq!(doc["threads"][0]["values"], serde_json::json!({}), "{doc}");
    assert!(doc["warnings"].to_string().contains("stale"), "{doc}");
    let table = tld(&["dump", &me, "--path", path]);
    expect_ok(&table);
    assert!(stdout(&table).lines().nth(1).is_some_and(|l| l.contains("stale")), "{}", stdout(&table));

    // tld top loads its 16-byte build against this map.
    meta.stamp_current();
    let doc = json_of(&tld(&[
        "top", &me, "--by", "req", "--interval", "0.1", "--count", "1", "--json", "--path", path,
    ]));
    assert_eq!((doc["layout"].as_u64(), doc["key"]["size"].as_u64()), (Some(16), Some(8)), "{doc}");
    let table = tld(&["top", &me, "--by", "req", "--interval", "0.1", "--count", "1", "--path", path]);
    expect_ok(&table);
    let header = stdout(&table).lines().nth(1).unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(header, "req CPU s SHARE TOTAL CPU s TOTAL SHARE SLICES", "{}", stdout(&table));
    drop(reg);
}

/// The runtime registered with a 16-byte pin (page blocks, DESIGN.md
/// §2.2, §2.4): `keys` and `dump` read every thread's values through the
/// 16-byte build of the iterator, and `top` loads its 16-byte build.
fn runtime_with_a_16_byte_pin() {
    let dir = PinDir::new("rt16");
    let map = pin(&dir, &["--layout", "16"]);
    let path = map.to_str().unwrap();
    let w = Workload::start(&map, None);
    let pid = w.pid_str();
    let keys = json_of(&tld(&["keys", &pid, "--path", path, "--json"]));
    check_keys(&keys["keys"]);
    let doc = json_of(&tld(&["dump", &pid, "--path", path, "--json"]));
    check_keys(&doc["keys"]);
    assert_eq!(doc["threads"].as_array().unwrap().len(), THREADS, "{doc}");
    for t in doc["threads"].as_array().unwrap() {
        let tid = t["tid"].as_i64().unwrap() as i32;
        let i = w.tids.iter().position(|&x| x == tid).unwrap();
        check_thread(t, tid, i, 0);
    }
    let top = json_of(&tld(&[
        "top", &pid, "--by", "priority", "--interval", "0.1", "--count", "1", "--json", "--path", path,
    ]));
    assert_eq!(top["layout"], 16, "{top}");
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn main() {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if !tld_bpf::has_bpf_privileges() {
        assert!(
            !in_ci,
            "the tld CLI tests need root or CAP_BPF+CAP_PERFMON, and CI=true forbids skipping"
        );
        println!("skipping: the tld CLI tests need root or CAP_BPF+CAP_PERFMON (run as root)");
        return;
    }
    let scenarios: &[(&str, fn())] = &[
        (
            "pin_is_idempotent_and_refuses_wrong_objects",
            pin_is_idempotent_and_refuses_wrong_objects,
        ),
        (
            "keys_and_dump_show_exactly_what_was_published",
            keys_and_dump_show_exactly_what_was_published,
        ),
        (
            "watch_follows_changes_exits_and_the_process",
            watch_follows_changes_exits_and_the_process,
        ),
        ("errors_name_the_cause", errors_name_the_cause),
        (
            "garbage_metadata_is_skipped_and_reported",
            garbage_metadata_is_skipped_and_reported,
        ),
        (
            "a_0666_pin_serves_an_unprivileged_workload",
            a_0666_pin_serves_an_unprivileged_workload,
        ),
        (
            "top_charges_cpu_time_to_each_phase",
            top_charges_cpu_time_to_each_phase,
        ),
        (
            "layout16_and_stale_registrations",
            layout16_and_stale_registrations,
        ),
        ("runtime_with_a_16_byte_pin", runtime_with_a_16_byte_pin),
        ("dump_decodes_otel_records", dump_decodes_otel_records),
        (
            "top_charges_cpu_time_to_otel_fields",
            top_charges_cpu_time_to_otel_fields,
        ),
    ];
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut failed = 0;
    let mut ran = 0;
    for (name, f) in scenarios {
        if !filter.is_empty() && !filter.iter().any(|p| name.contains(p.as_str())) {
            continue;
        }
        ran += 1;
        let ok = std::panic::catch_unwind(f).is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        failed += usize::from(!ok);
    }
    println!("\n{} passed, {failed} failed", ran - failed);
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
