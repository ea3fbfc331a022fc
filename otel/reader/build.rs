//! Builds what the readers need: the BPF object `otel_read` (clang, and
//! clang-19 as `otel_read_clang19`, through
//! libbpf-cargo, against a `vmlinux.h` dumped from the running kernel's BTF
//! with bpftool), and the plain C `__thread` store the benchmark compares
//! against. The publisher binaries export `otel_thread_ctx_v1`, as an
//! application linking tld_otel must (DESIGN §10.5).

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    for path in ["src/bpf/otel_read.bpf.c", "src/bpf/otel_read.h", "../../bpf/tld.bpf.h", "c/tls_baseline.c"] {
        println!("cargo:rerun-if-changed={path}");
    }
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-env-changed=CLANG_UPSTREAM");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));

    let btf = "/sys/kernel/btf/vmlinux";
    let dump = Command::new("bpftool")
        .args(["btf", "dump", "file", btf, "format", "c"])
        .output()
        .unwrap_or_else(|e| panic!("running bpftool (scripts/setup.sh installs it): {e}"));
    assert!(dump.status.success(), "bpftool btf dump of {btf} failed: {}", String::from_utf8_lossy(&dump.stderr));
    std::fs::write(out.join("vmlinux.h"), dump.stdout).expect("write vmlinux.h");

    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let clang = env::var_os("CLANG").unwrap_or_else(|| "clang".into());
    libbpf_cargo::SkeletonBuilder::new()
        .source("src/bpf/otel_read.bpf.c")
        .obj(out.join("otel_read.bpf.o"))
        .clang(&clang)
        .clang_args(["-I".into(), out.clone().into_os_string(), format!("-DOTEL_READ_PAGE_SIZE={page}").into(), "-Wall".into()])
        .build()
        .unwrap_or_else(|e| panic!("compiling src/bpf/otel_read.bpf.c: {e:#}"));
    // tld.bpf.h's OpenTelemetry helpers as clang >= 15 compiles them too.
    let clang19 = env::var_os("CLANG_UPSTREAM").unwrap_or_else(|| "clang-19".into());
    libbpf_cargo::SkeletonBuilder::new()
        .source("src/bpf/otel_read.bpf.c")
        .obj(out.join("otel_read_clang19.bpf.o"))
        .clang(&clang19)
        .clang_args(["-I".into(), out.clone().into_os_string(), format!("-DOTEL_READ_PAGE_SIZE={page}").into(), "-Wall".into()])
        .build()
        .unwrap_or_else(|e| panic!("compiling src/bpf/otel_read.bpf.c with {} (CLANG_UPSTREAM): {e:#}", clang19.to_string_lossy()));

    cc::Build::new().file("c/tls_baseline.c").opt_level(2).compile("tls_baseline");
    println!("cargo:rustc-link-arg-bin=otel_publisher=-Wl,--export-dynamic-symbol=otel_thread_ctx_v1");
}
