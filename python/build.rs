// Exports `otel_thread_ctx_v1` (OTEP 4947) from the extension module, as
// capi/build.rs does from libtld.so: rustc's version script hides every
// symbol of a cdylib that is not a Rust export, and OTEP 4947 readers look
// the TLS symbol up in .dynsym. task-local-data-otel's build script writes
// the second version script (DESIGN §10.5).
fn main() {
    let script = std::env::var("DEP_TLD_OTEL_TLS_VERSION_SCRIPT")
        .expect("task-local-data-otel's build script sets its version_script");
    println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={script}");
    println!("cargo:rerun-if-changed=build.rs");
}
