// Generates the C++ side of the bridge (`tld/src/bridge.rs.h` and its .cc)
// and compiles it into this crate's static archive. CMake adds
// `<target dir>/cxxbridge` to the include path: `rust/cxx.h` and
// `tld/src/bridge.rs.h` live there.
fn main() {
    cxx_build::CFG.include_prefix = "tld";
    cxx_build::bridge("src/bridge.rs")
        .std("c++17")
        .compile("tld_cxx_bridge");
    println!("cargo:rerun-if-changed=src/bridge.rs");
}
