//! Readers of tld's OpenTelemetry context as tools outside the process see
//! it, for the tests and benchmarks of `tld_otel` (DESIGN §10.7):
//!
//! - [`bpf::RecordReader`]: a BPF program reading a thread's record through
//!   `tld_data_map` and the key `otel.thread_ctx_v1` (tld.bpf.h);
//! - [`context::read_process_context`]: OTEP 4719's reading protocol (from
//!   the `tld-otel-context` crate, which the `tld` command uses too);
//! - [`tls`]: OTEP 4947's TLS discovery, from `.dynsym` to each thread's record.
//!
//! The publisher programs they read are `src/bin/otel_publisher.rs` (Rust)
//! and `c/otel_publisher.c` (C, against libtld).

pub mod bpf;
/// OTEP 4719's reading protocol (the `tld-otel-context` crate, shared with the `tld` command).
pub mod context {
    pub use tld_otel_context::process::*;
}
pub mod tls;

pub use tld_otel_context::{maps, read_memory, Mapping};

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
