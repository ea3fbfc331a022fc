//! Exports `otel_thread_ctx_v1` (OTEP 4947) from libtld.so: rustc's own
//! version script hides every symbol that is not a Rust export, and readers
//! look the TLS symbol up in .dynsym. The tld_otel build writes the script.

fn main() {
    let script = std::env::var("DEP_TLD_OTEL_TLS_VERSION_SCRIPT")
        .expect("task-local-data-otel's build script sets its version_script");
    println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={script}");
}
