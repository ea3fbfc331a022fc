//! Compiles the OTEP 4947 TLS symbol `otel_thread_ctx_v1` (src/tls.c) and
//! writes the linker version script that exports it from a shared object.
//!
//! rustc hides every symbol of a `cdylib` that is not a Rust export, so a
//! shared object carrying this crate (libtld.so, a Python extension) passes
//! `-Wl,--version-script=$DEP_TLD_OTEL_TLS_VERSION_SCRIPT` from its own build
//! script (`cargo:rustc-cdylib-link-arg`). Executables need
//! `-Wl,--export-dynamic-symbol=otel_thread_ctx_v1` instead (DESIGN §10.5).

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/tls.c");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));

    let mut build = cc::Build::new();
    build.file("src/tls.c").warnings(true).extra_warnings(true);
    // OTEP 4947 asks for the TLSDESC dialect; it is the only dynamic one on aarch64.
    if env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64") {
        build.flag("-mtls-dialect=gnu2");
    }
    build.compile("tld_otel_tls");

    let script = out_dir.join("otel_thread_ctx.map");
    fs::write(&script, "{ global: otel_thread_ctx_v1; };\n").expect("write the version script");
    println!("cargo:version_script={}", script.display());
    // This crate's own test executables export the symbol, as an application must.
    println!("cargo:rustc-link-arg=-Wl,--export-dynamic-symbol=otel_thread_ctx_v1");
}
