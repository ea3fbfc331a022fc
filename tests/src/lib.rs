//! Shared harness for the kernel tests: loading the test BPF programs,
//! skipping (outside CI only) without privileges, finding the C library,
//! running scenarios in fresh child processes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use tld_bpf::{KeyDump, TaskDump, TestBpf};

/// Loads the test BPF programs, or explains why the test cannot run.
///
/// Without privileges the test is skipped with a message, except under
/// `CI=true`, where it fails: kernel tests never skip silently in CI.
pub fn kernel() -> Option<TestBpf> {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if !tld_bpf::has_bpf_privileges() {
        assert!(!in_ci, "kernel tests need root or CAP_BPF+CAP_PERFMON, and CI=true forbids skipping");
        eprintln!("skipping: kernel test needs root or CAP_BPF+CAP_PERFMON (run as root to test against BPF)");
        return None;
    }
    Some(TestBpf::load().unwrap_or_else(|e| panic!("loading the test BPF programs: {e}")))
}

/// Attaches the test programs' `tld_data_map` to the tld runtime.
pub fn attach(bpf: &TestBpf) {
    tld::attach_fd(bpf.data_map_fd()).expect("attach the test map");
}

/// `gettid()`.
pub fn gettid() -> i32 {
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// The keys of a dump by name: `(offset, size, value bytes)`.
pub fn by_name(dump: &TaskDump) -> BTreeMap<String, (i32, u16, Vec<u8>)> {
    dump.keys.iter().map(|k| (k.name.clone(), (k.offset, k.size, k.value.clone()))).collect()
}

/// The value of `name` in a dump, as a little-endian integer of its size.
pub fn int_value(dump: &TaskDump, name: &str) -> Option<i64> {
    let k = dump.keys.iter().find(|k| k.name == name)?;
    let mut buf = [0u8; 8];
    let n = k.value.len().min(8);
    buf[..n].copy_from_slice(&k.value[..n]);
    let v = i64::from_le_bytes(buf);
    Some(match n {
        1 => v as i8 as i64,
        2 => v as i16 as i64,
        4 => v as i32 as i64,
        _ => v,
    })
}

/// The build directory holding `libtld.so`/`libtld.a` (`cargo build -p tld-capi`).
pub fn capi_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>
    let dir = exe.parent().and_then(Path::parent).expect("target dir").to_path_buf();
    assert!(
        dir.join("libtld.so").exists() && dir.join("libtld.a").exists(),
        "{} lacks libtld.so/libtld.a: run `cargo build -p tld-capi` first (the README test command does)",
        dir.display()
    );
    dir
}

/// The C header directory.
pub fn capi_include() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../capi/include")
}

/// Number of open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// Runs `scenario` in a forked child (a fresh tld runtime) and returns
/// whether it passed. Call only from a single-threaded parent.
pub fn in_child(name: &str, scenario: impl FnOnce()) -> bool {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    match unsafe { libc::fork() } {
        -1 => panic!("fork: {}", std::io::Error::last_os_error()),
        0 => {
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(scenario)).is_ok();
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        pid => {
            let mut status = 0;
            unsafe { libc::waitpid(pid, &mut status, 0) };
            let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
            println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
            ok
        }
    }
}

/// Prints the closing line test runners read and exits non-zero on failure.
pub fn finish(results: &[bool]) -> ! {
    let passed = results.iter().filter(|&&ok| ok).count();
    let failed = results.len() - passed;
    println!("\n{passed} passed, {failed} failed");
    std::process::exit(if failed == 0 { 0 } else { 1 })
}
