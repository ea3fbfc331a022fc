//! The default pinned path and its `TLD_MAP_PATH` override, from Rust and C.

use tld_tests::{int_value, kernel, CLibrary, TempDir};

#[test]
fn tld_map_path_overrides_the_default() {
    let Some(mut bpf) = kernel() else { return };
    assert_eq!(tld::DEFAULT_MAP_PATH, "/sys/fs/bpf/tld/tld_data_map");
    let pin = std::path::PathBuf::from(format!("/sys/fs/bpf/tld-test-default-path-{}", std::process::id()));
    let _ = std::fs::remove_file(&pin);
    bpf.pin_data_map(&pin).unwrap();
    struct Unpin(std::path::PathBuf);
    impl Drop for Unpin {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _unpin = Unpin(pin.clone());

    std::env::set_var(tld::MAP_PATH_ENV, &pin);
    assert_eq!(tld::default_map_path(), pin);
    tld::attach_default().unwrap();
    // The C ABI's NULL path means the same; the same map attached twice is one map.
    let dir = TempDir::new("default-path");
    let c = CLibrary::load_copy(&dir.0, "libtld_default_path.so");
    let attach: extern "C" fn(*const libc::c_char) -> i32 = c.sym("tld_attach_path");
    assert_eq!(attach(std::ptr::null()), 0, "{}", c.last_error());
    assert_eq!(tld::runtime_stats().unwrap().attached_maps, 1);

    let k: tld::Key<u32> = tld::Key::create("default_path_value").unwrap();
    k.set(77).unwrap();
    assert_eq!(int_value(&bpf.dump_current().unwrap(), "default_path_value"), Some(77));

    std::env::remove_var(tld::MAP_PATH_ENV);
    assert_eq!(tld::default_map_path(), std::path::PathBuf::from(tld::DEFAULT_MAP_PATH));
}
