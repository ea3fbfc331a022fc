//! Copies of the core built with other runtime ABI versions (DESIGN §4): a
//! newer minor version joins an older runtime; another major version refuses
//! with a clear error, whichever copy came first. Never two metadata pages.
//! The copies are built by `make build` into target/abi-2.1 and target/abi-3.0.

use std::path::{Path, PathBuf};

use tld_tests::{capi_dir, finish, in_child, CLibrary, TempDir};

fn copy_of(version: &str) -> PathBuf {
    let profile = capi_dir();
    let profile = profile.file_name().unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target").join(format!("abi-{version}")).join(profile);
    assert!(
        dir.join("libtld.so").exists(),
        "{} is missing: `make build` builds the runtime ABI {version} copy",
        dir.display()
    );
    dir.join("libtld.so")
}

fn load(path: &Path, dir: &TempDir, name: &str) -> CLibrary {
    let target = dir.0.join(name);
    std::fs::copy(path, &target).unwrap();
    CLibrary::load_path(&target)
}

fn version(lib: &CLibrary) -> u32 {
    let f: extern "C" fn() -> u32 = lib.sym("tld_runtime_abi_version");
    f()
}

fn newer_minor_joins() {
    let dir = TempDir::new("abi-minor");
    let k = tld::RawKey::create("abi_from_2_0", 4).unwrap();
    let newer = load(&copy_of("2.1"), &dir, "libtld_2_1.so");
    assert_eq!(version(&newer), 2 << 16 | 1);
    assert_eq!(newer.find_key("abi_from_2_0").off as usize, k.offset(), "2.1 joined the 2.0 runtime");
    assert_eq!(newer.metadata_page(), tld::runtime_stats().unwrap().meta_page);
}

fn older_joins_newer_minor() {
    let dir = TempDir::new("abi-minor-rev");
    let newer = load(&copy_of("2.1"), &dir, "libtld_2_1.so");
    let k = newer.create_key("abi_from_2_1", 4);
    assert!(k.off >= 0);
    assert_eq!(tld::RawKey::find("abi_from_2_1").unwrap().offset(), k.off as usize);
    assert_eq!(newer.metadata_page(), tld::runtime_stats().unwrap().meta_page);
}

fn other_major_refuses() {
    let dir = TempDir::new("abi-major");
    tld::RawKey::create("abi_major_2", 4).unwrap();
    let v3 = load(&copy_of("3.0"), &dir, "libtld_3_0.so");
    assert_eq!(version(&v3), 3 << 16);
    let k = v3.create_key("abi_major_3", 4);
    assert_eq!(k.off, -libc::EPROTO as i16);
    let msg = v3.last_error();
    assert!(msg.contains("runtime ABI 2.0") && msg.contains("3.0"), "{msg}");
    assert!(v3.metadata_page() == 0, "no second metadata page");
    assert!(tld::RawKey::find("abi_major_3").is_err());
}

fn older_major_refuses_newer_runtime() {
    let dir = TempDir::new("abi-major-rev");
    let v3 = load(&copy_of("3.0"), &dir, "libtld_3_0.so");
    assert!(v3.create_key("abi_major_3", 4).off >= 0);
    let e = tld::RawKey::create("abi_major_2", 4).unwrap_err();
    assert_eq!(e.errno(), libc::EPROTO);
    assert_eq!(e, tld::Error::IncompatibleRuntime { found: 3 << 16, ours: 2 << 16 });
    assert!(tld::runtime_stats().is_err(), "no second runtime");
}

fn main() {
    let results = [
        in_child("runtime ABI 2.1 joins a 2.0 runtime", newer_minor_joins),
        in_child("runtime ABI 2.0 joins a 2.1 runtime", older_joins_newer_minor),
        in_child("runtime ABI 3.0 refuses a 2.0 runtime", other_major_refuses),
        in_child("runtime ABI 2.0 refuses a 3.0 runtime", older_major_refuses_newer_runtime),
    ];
    finish(&results)
}
