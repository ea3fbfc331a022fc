// Gives the shared library its SONAME, `libtld.so.<major>`: programs linked
// with `-ltld` then record `libtld.so.0` (not the unversioned development
// link), so an incompatible libtld.so.1 installed later never replaces what
// they load. `make install` installs libtld.so.<version> with the links
// libtld.so.<major> and libtld.so. The major is the crate's.
//
// It also exports `otel_thread_ctx_v1` (OTEP 4947) from libtld.so: rustc's
// own version script hides every symbol that is not a Rust export, and
// readers look the TLS symbol up in .dynsym. The tld_otel build writes the
// script.
fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets CARGO_PKG_VERSION_MAJOR");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os == "linux" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libtld.so.{major}");
    }
    let script = std::env::var("DEP_TLD_OTEL_TLS_VERSION_SCRIPT")
        .expect("task-local-data-otel's build script sets its version_script");
    println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={script}");
    println!("cargo:rerun-if-changed=build.rs");
}
