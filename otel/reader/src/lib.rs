//! Readers of tld's OpenTelemetry context as tools outside the process see
//! it, for the tests and benchmarks of `tld_otel` (DESIGN §10.7):
//!
//! - [`bpf::RecordReader`]: a BPF program reading a thread's record through
//!   `tld_data_map` and the key `otel.thread_ctx_v1` (tld.bpf.h);
//! - [`context::read_process_context`]: OTEP 4719's reading protocol;
//! - [`tls`]: OTEP 4947's TLS discovery, from `.dynsym` to each thread's record.
//!
//! The publisher programs they read are `src/bin/otel_publisher.rs` (Rust)
//! and `c/otel_publisher.c` (C, against libtld).

pub mod bpf;
pub mod context;
pub mod tls;

/// One line of /proc/PID/maps.
#[derive(Clone, Debug)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub file_offset: u64,
    pub name: String,
}

/// The mappings of `pid`.
pub fn maps(pid: i32) -> Result<Vec<Mapping>, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|e| format!("/proc/{pid}/maps: {e}"))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (range, _perms, offset) = (f.next()?, f.next()?, f.next()?);
            let (_dev, _inode) = (f.next()?, f.next()?);
            let name = f.collect::<Vec<_>>().join(" ");
            let (s, e) = range.split_once('-')?;
            Some(Mapping {
                start: u64::from_str_radix(s, 16).ok()?,
                end: u64::from_str_radix(e, 16).ok()?,
                file_offset: u64::from_str_radix(offset, 16).ok()?,
                name,
            })
        })
        .collect())
}

/// Reads `buf.len()` bytes at `addr` of process `pid` with
/// `process_vm_readv`, which fails cleanly on unmapped memory.
pub fn read_memory(pid: i32, addr: u64, buf: &mut [u8]) -> Result<(), String> {
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: buf.len() };
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n != buf.len() as isize {
        return Err(format!(
            "reading {} bytes at {addr:#x} of process {pid}: {}",
            buf.len(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Whether kernel tests can run; without privileges they are skipped with
/// a message, except under `CI=true`, where that is a failure.
pub fn kernel_tests_enabled() -> bool {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if tld_bpf::has_bpf_privileges() {
        return true;
    }
    assert!(!in_ci, "the otel kernel tests need root or CAP_BPF+CAP_PERFMON+CAP_SYS_PTRACE, and CI=true forbids skipping");
    eprintln!("skipping: the otel kernel tests need root (BPF and ptrace)");
    false
}

/// OTEP 4947's pointer swap in plain C (c/tls_baseline.c): the baseline of
/// the cost measurement (benches/otel.rs).
pub mod baseline {
    extern "C" {
        /// Points the C `__thread` pointer at `record`.
        pub fn tls_baseline_activate(record: *mut u8);
        /// Sets it to NULL.
        pub fn tls_baseline_deactivate();
    }
}
