// Gives the shared library its SONAME, `libtld.so.<major>`: programs linked
// with `-ltld` then record `libtld.so.0` (not the unversioned development
// link), so an incompatible libtld.so.1 installed later never replaces what
// they load. `make install` installs libtld.so.<version> with the links
// libtld.so.<major> and libtld.so. The major is the crate's.
fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets CARGO_PKG_VERSION_MAJOR");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os == "linux" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libtld.so.{major}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
