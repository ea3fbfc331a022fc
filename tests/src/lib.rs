//! Shared harness for the kernel tests: loading the test BPF programs,
//! skipping (outside CI only) without privileges, finding the C library,
//! running scenarios in fresh child processes.

pub mod cprog;

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

/// The build directory holding `libtld.so`/`libtld.a` (`cargo build -p task-local-data-capi`).
pub fn capi_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>
    let dir = exe.parent().and_then(Path::parent).expect("target dir").to_path_buf();
    assert!(
        dir.join("libtld.so").exists() && dir.join("libtld.a").exists(),
        "{} lacks libtld.so/libtld.a: run `cargo build -p task-local-data-capi` first (the README test command does)",
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

/// One copy of the C library loaded with `dlopen(RTLD_LOCAL)`: its own
/// statics, its own code, as a Python extension or a Go archive would carry.
pub struct CLibrary {
    handle: *mut libc::c_void,
    pub path: PathBuf,
}

unsafe impl Send for CLibrary {}
unsafe impl Sync for CLibrary {}

/// `tld_key_t` as C sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CKey {
    pub off: i16,
}

impl CLibrary {
    /// Copies libtld.so to a file of its own under `dir` named `name` and loads
    /// it, so the dynamic loader cannot share it with another copy.
    pub fn load_copy(dir: &Path, name: &str) -> CLibrary {
        let path = dir.join(name);
        std::fs::copy(capi_dir().join("libtld.so"), &path).expect("copy libtld.so");
        CLibrary::load_path(&path)
    }

    /// Loads the shared object at `path` (`RTLD_NOW | RTLD_LOCAL`).
    pub fn load_path(path: &Path) -> CLibrary {
        let path = path.to_path_buf();
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        assert!(!handle.is_null(), "dlopen {}", path.display());
        CLibrary { handle, path }
    }

    /// A function of this copy. `F` must be the `extern "C" fn` type of the symbol.
    pub fn sym<F: Copy>(&self, name: &str) -> F {
        assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut libc::c_void>());
        let c = std::ffi::CString::new(name).unwrap();
        let p = unsafe { libc::dlsym(self.handle, c.as_ptr()) };
        assert!(!p.is_null(), "{name} not found in {}", self.path.display());
        unsafe { std::mem::transmute_copy(&p) }
    }

    pub fn create_key(&self, name: &str, size: usize) -> CKey {
        let f: extern "C" fn(*const libc::c_char, usize) -> CKey = self.sym("tld_create_key");
        let c = std::ffi::CString::new(name).unwrap();
        f(c.as_ptr(), size)
    }

    pub fn key(&self, name: &str, size: usize) -> CKey {
        let f: extern "C" fn(*const libc::c_char, usize) -> CKey = self.sym("tld_key");
        let c = std::ffi::CString::new(name).unwrap();
        f(c.as_ptr(), size)
    }

    pub fn find_key(&self, name: &str) -> CKey {
        let f: extern "C" fn(*const libc::c_char) -> CKey = self.sym("tld_find_key");
        let c = std::ffi::CString::new(name).unwrap();
        f(c.as_ptr())
    }

    pub fn data(&self, key: CKey) -> *mut u8 {
        let f: extern "C" fn(CKey) -> *mut libc::c_void = self.sym("tld_data");
        f(key).cast()
    }

    pub fn attach_fd(&self, fd: i32) -> i32 {
        let f: extern "C" fn(i32) -> i32 = self.sym("tld_attach_fd");
        f(fd)
    }

    pub fn metadata_page(&self) -> usize {
        let f: extern "C" fn() -> *const libc::c_void = self.sym("tld_metadata_page");
        f() as usize
    }

    pub fn live_blocks(&self) -> i32 {
        let f: extern "C" fn() -> i32 = self.sym("tld_live_blocks");
        f()
    }

    pub fn last_error(&self) -> String {
        let f: extern "C" fn(*mut libc::c_char, usize) -> usize = self.sym("tld_last_error");
        let mut buf = vec![0u8; 512];
        let n = f(buf.as_mut_ptr().cast(), buf.len()).min(buf.len() - 1);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("tld-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
