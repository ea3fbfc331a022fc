//! Building and driving the C test programs (`tests/c/*.c`): compile them
//! against libtld, run them with a line protocol on stdin/stdout, unpin
//! their maps on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{capi_dir, capi_include};

/// How long a program may take to print a line or to exit.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// `tests/c/<name>`.
pub fn source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("c").join(name)
}

pub fn tool(var: &str, default: &str) -> String {
    std::env::var(var).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
}

/// Runs a compiler; panics with its command line and stderr if it fails.
pub fn compile(compiler: &str, args: &[&str]) {
    let out = Command::new(compiler)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {compiler}: {e} (set CC/CXX to pick another compiler)"));
    assert!(
        out.status.success(),
        "compile failed ({}): {compiler} {}\n--- stderr ---\n{}",
        out.status,
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}


/// How a program links libtld.
#[derive(Clone, Copy, Debug)]
pub enum Link {
    Static,
    Shared,
}

/// Builds `tests/c/<name>.c` into `dir/<name>_<link>` with `-Wall -Wextra
/// -Werror`, against libtld.a or libtld.so.
pub fn build(dir: &Path, name: &str, link: Link) -> PathBuf {
    let lib_dir = capi_dir();
    let include = capi_include();
    let src = source(&format!("{name}.c"));
    let exe = dir.join(match link {
        Link::Static => format!("{name}_static"),
        Link::Shared => format!("{name}_shared"),
    });
    let (inc, src, exe_s, lib_dir_s) =
        (include.to_str().unwrap(), src.to_str().unwrap(), exe.to_str().unwrap(), lib_dir.to_str().unwrap());
    let mut args = vec!["-std=c11", "-Wall", "-Wextra", "-Werror", "-pthread", "-I", inc, src, "-o", exe_s];
    let archive = lib_dir.join("libtld.a");
    let rpath = format!("-Wl,-rpath,{lib_dir_s}");
    match link {
        Link::Static => args.extend([archive.to_str().unwrap(), "-ldl", "-lm", "-lpthread"]),
        Link::Shared => args.extend(["-L", lib_dir_s, "-ltld", rpath.as_str()]),
    }
    compile(&tool("CC", "cc"), &args);
    exe
}

/// A pinned map, unpinned on drop (also when the test fails).
pub struct Pin(pub PathBuf);

impl Drop for Pin {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A directory of pins on bpffs, created now and removed on drop (also when
/// the test fails). Declare it before its `Pin`s: they are dropped first.
pub struct PinDir(pub PathBuf);

impl PinDir {
    pub fn new(path: PathBuf) -> PinDir {
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        PinDir(path)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The C program, running; killed on drop if still alive.
pub struct Program {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: Option<JoinHandle<String>>,
    what: String,
}

impl Program {
    pub fn start(exe: &Path, map: &Path) -> Program {
        Program::start_with(exe, &[("TLD_TEST_MAP", map)])
    }

    /// Starts `exe` with the environment `env`.
    pub fn start_with(exe: &Path, env: &[(&str, &Path)]) -> Program {
        let mut child = Command::new(exe)
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", exe.display()));
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Program { stdin: child.stdin.take(), child, lines, stderr: Some(stderr), what: exe.display().to_string() }
    }

    /// Kills the program and fails with why, its exit status and its stderr.
    pub fn die(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default();
        panic!("{}: {why} (program {status})\n--- its stderr ---\n{stderr}", self.what);
    }

    pub fn line(&mut self) -> String {
        match self.lines.recv_timeout(TIMEOUT) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => self.die("no output line within the timeout"),
            Err(mpsc::RecvTimeoutError::Disconnected) => self.die("the program closed its stdout early"),
        }
    }

    /// Whether the program prints nothing more (waits up to [`TIMEOUT`]).
    pub fn no_more_lines(&mut self) -> bool {
        self.lines.recv_timeout(TIMEOUT).is_err()
    }

    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        if let Err(e) = writeln!(stdin, "{line}").and_then(|_| stdin.flush()) {
            self.die(&format!("writing to its stdin: {e}"));
        }
    }

    /// Closes stdin and waits for the exit status.
    pub fn finish(&mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                Ok(None) => self.die("did not exit after its stdin was closed"),
                Err(e) => self.die(&format!("waiting for it: {e}")),
            }
        }
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

