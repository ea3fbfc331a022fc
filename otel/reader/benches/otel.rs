//! Cost of publishing the thread context on span activation (set + clear),
//! against OTEP 4947's TLS pointer swap in plain C (c/tls_baseline.c, called
//! through FFI as a binding would; c/bench.c has the same swap inlined in C).
//!
//! `cargo bench -p tld-otel-reader --bench otel` prints the median of 11 runs
//! per row in ns; the C rows need the release libtld.a
//! (`cargo build -p task-local-data-capi --release`; `make otel-bench` does
//! both). Under `cargo test` it runs each row briefly, as a smoke test.

use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use tld_otel::{AttributeKey, SpanContext};

tld_otel::static_record_key!();

use tld_otel_reader::baseline::{tls_baseline_activate, tls_baseline_deactivate};

const RUNS: usize = 11;

fn measure(name: &str, iters: u64, mut f: impl FnMut()) {
    let mut runs: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    println!("{name:<40} {:>7.1} ns", runs[RUNS / 2]);
}

fn c_rows(iters: u64) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = root.join("../../target/release/libtld.a");
    if !lib.exists() {
        println!("(C rows skipped: build {} with `cargo build -p task-local-data-capi --release`)", lib.display());
        return;
    }
    let exe = std::env::temp_dir().join(format!("otel_c_bench_{}", std::process::id()));
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-O2", "-std=c11", "-pthread", "-I"])
        .arg(root.join("../../capi/include"))
        .arg(root.join("c/bench.c"))
        .arg(&lib)
        .args(["-Wl,--export-dynamic-symbol=otel_thread_ctx_v1", "-ldl", "-lm", "-o"])
        .arg(&exe)
        .status()
        .expect("cc");
    assert!(status.success(), "compiling c/bench.c");
    let out = Command::new(&exe).arg(iters.to_string()).output().expect("running the C bench");
    let _ = std::fs::remove_file(&exe);
    assert!(out.status.success(), "the C bench failed");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let (name, ns) = line.split_once(' ').unwrap();
        println!("{name:<40} {ns:>7} ns");
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let iters = if full { 2_000_000 } else { 1_000 };
    let span = SpanContext::new([0x4b; 16], [0x51; 8], 1);
    let route = AttributeKey::register("http.route").unwrap();
    tld_otel::set(&span, &[]).unwrap(); // the thread's first access, outside the loops
    let mut record = [0u8; 128];

    measure("rust_c_tls_pointer_swap (FFI baseline)", iters, || unsafe {
        tls_baseline_activate(black_box(record.as_mut_ptr()));
        tls_baseline_deactivate();
    });
    measure("rust_set_no_attrs+clear", iters, || {
        tld_otel::set_with_keys(black_box(&span), &[]).unwrap();
        tld_otel::clear().unwrap();
    });
    measure("rust_set_with_keys+clear", iters, || {
        tld_otel::set_with_keys(black_box(&span), &[(route, "/users/:id")]).unwrap();
        tld_otel::clear().unwrap();
    });
    measure("rust_set_by_name+clear", iters, || {
        tld_otel::set(black_box(&span), &[("http.route", "/users/:id")]).unwrap();
        tld_otel::clear().unwrap();
    });
    measure("rust_scope_by_name (set+restore)", iters, || {
        drop(tld_otel::scope(black_box(&span), &[("http.route", "/users/:id")]).unwrap());
    });
    c_rows(iters);
    if !full {
        println!("\n1 passed, 0 failed");
    }
}
