//! The example consumer against a live application, across its own restart
//! (issue 13 item 3a): pin a map, start an application (this test binary,
//! re-executed) that attaches to the pin by path and publishes "priority"
//! and "request_id" from two threads; run the consumer (load, read, unload),
//! let the application change its values as it goes, run the consumer again
//! (reload, read): it sees the new values with no action of the application
//! (no re-attach, no refresh), because it reuses the same pinned map.
//!
//! Root (or CAP_BPF + CAP_PERFMON) needed: skipped with a message without
//! it, failed instead under CI=true.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

const CONSUMER: &str = env!("CARGO_BIN_EXE_tld-consumer");
const THREADS: usize = 2;

/// The application: attach by path, publish from THREADS threads, print
/// "ready TID..." (thread 0's first) and, per stdin line "next", add 1 to every priority and
/// 100 to every request id, then print "ok". Exits at EOF.
fn application(pin: &Path) {
    tld::attach_path(pin).expect("attaching the pinned map by path");
    let prio = tld::Key::<i32>::get_or_create("priority").unwrap();
    let req = tld::Key::<u64>::get_or_create("request_id").unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    let workers: Vec<mpsc::Sender<()>> = (0..THREADS)
        .map(|i| {
            let (tx, rx) = mpsc::channel::<()>();
            let done = done_tx.clone();
            std::thread::spawn(move || {
                let (mut p, mut r) = (10 + i as i32, 1000 + i as u64);
                prio.set(p).unwrap();
                req.set(r).unwrap();
                // SAFETY: gettid has no preconditions.
                done.send((i, unsafe { libc::gettid() })).unwrap();
                for () in rx {
                    p += 1;
                    r += 100;
                    prio.set(p).unwrap();
                    req.set(r).unwrap();
                    done.send((i, 0)).unwrap();
                }
            });
            tx
        })
        .collect();
    // In thread order: thread i publishes 10 + i and 1000 + i.
    let mut tids = vec![String::new(); THREADS];
    for _ in 0..THREADS {
        let (i, tid) = done_rx.recv().unwrap();
        tids[i] = tid.to_string();
    }
    println!("ready {}", tids.join(" "));
    std::io::stdout().flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        if line.unwrap() == "next" {
            for w in &workers {
                w.send(()).unwrap();
            }
            for _ in 0..THREADS {
                done_rx.recv().unwrap();
            }
            println!("ok");
            std::io::stdout().flush().unwrap();
        }
    }
}

/// Runs the consumer: the sorted `tid priority request_id` lines.
fn consume(pid: u32, pin: &Path) -> Vec<String> {
    let out = Command::new(CONSUMER)
        .arg(pid.to_string())
        .arg(pin)
        .output()
        .expect("running tld-consumer");
    assert!(
        out.status.success(),
        "tld-consumer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    lines
}

fn expected(tids: &[i32], round: u64) -> Vec<String> {
    let mut want: Vec<String> = tids
        .iter()
        .enumerate()
        .map(|(i, tid)| format!("{tid} {} {}", 10 + i as u64 + round, 1000 + i as u64 + 100 * round))
        .collect();
    want.sort();
    want
}

fn consumer_restart_reads_the_pinned_map() {
    let dir = PathBuf::from(format!("/sys/fs/bpf/tld-example-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating a pin directory on bpffs");
    let pin = dir.join("tld_data_map");
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0.join("tld_data_map"));
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    tld_bpf::inspect::create_pinned_map(&pin, tld_bpf::Layout::Value24).expect("pinning a map");

    let mut app = Command::new(std::env::current_exe().unwrap())
        .env("TLD_EXAMPLE_APPLICATION", &pin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the application");
    let mut stdin = app.stdin.take().unwrap();
    let mut stdout = BufReader::new(app.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let tids: Vec<i32> = line
        .trim()
        .strip_prefix("ready ")
        .unwrap_or_else(|| panic!("application said {line:?}"))
        .split(' ')
        .map(|t| t.parse().unwrap())
        .collect();

    // Load, read, unload.
    assert_eq!(consume(app.id(), &pin), expected(&tids, 0));
    // The application goes on publishing; nothing else happens to it.
    writeln!(stdin, "next").unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ok");
    // Reload, read: the same pinned map, the new values.
    assert_eq!(consume(app.id(), &pin), expected(&tids, 1));

    drop(stdin);
    assert!(app.wait().unwrap().success());
}

fn main() {
    if let Some(pin) = std::env::var_os("TLD_EXAMPLE_APPLICATION") {
        application(Path::new(&pin));
        return;
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if !tld_bpf::has_bpf_privileges() {
        assert!(!in_ci, "the example's test needs root or CAP_BPF+CAP_PERFMON, and CI=true forbids skipping");
        println!("skipping: the example's test needs root or CAP_BPF+CAP_PERFMON");
        return;
    }
    let ok = std::panic::catch_unwind(consumer_restart_reads_the_pinned_map).is_ok();
    println!("test consumer_restart_reads_the_pinned_map ... {}", if ok { "ok" } else { "FAILED" });
    println!("\n{} passed, {} failed", usize::from(ok), usize::from(!ok));
    std::process::exit(if ok { 0 } else { 1 });
}
