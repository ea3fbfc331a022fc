//! tld.h's TLD_VERSION_MAJOR/MINOR/PATCH are written by hand; they must be
//! the crate's version, which also names the SONAME (build.rs), the pkg-config
//! file and the CMake package.

use std::path::Path;

/// The value of `#define NAME value` in the header, or a panic naming what is missing.
fn define(header: &str, name: &str) -> u64 {
    let value = header
        .lines()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next(), words.next()) {
                (Some("#define"), Some(n), Some(v), None) if n == name => Some(v.to_owned()),
                _ => None,
            }
        })
        .unwrap_or_else(|| panic!("tld.h has no `#define {name} <number>` line"));
    value.parse().unwrap_or_else(|_| panic!("tld.h: {name} is {value:?}, not a number"))
}

#[test]
fn header_version_is_the_crate_version() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/tld.h");
    let header = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let crate_version: [u64; 3] = [
        env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap(),
        env!("CARGO_PKG_VERSION_MINOR").parse().unwrap(),
        env!("CARGO_PKG_VERSION_PATCH").parse().unwrap(),
    ];
    let header_version = [
        define(&header, "TLD_VERSION_MAJOR"),
        define(&header, "TLD_VERSION_MINOR"),
        define(&header, "TLD_VERSION_PATCH"),
    ];
    assert_eq!(
        header_version, crate_version,
        "TLD_VERSION_MAJOR/MINOR/PATCH in tld.h differ from the crate version {}",
        env!("CARGO_PKG_VERSION")
    );
}
