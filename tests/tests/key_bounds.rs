//! Name-length edge and the C ABI's bounds on forged keys: a key that does
//! not fit a thread's block never yields a pointer outside it.

use tld::RawKey;
use tld_tests::{CKey, CLibrary, TempDir};

#[test]
fn a_name_of_61_bytes_is_fine() {
    let name = "x".repeat(61);
    let k = RawKey::create(&name, 2).unwrap();
    assert_eq!(RawKey::find(&name).unwrap(), k);
}

#[test]
fn c_abi_refuses_keys_outside_the_block() {
    let dir = TempDir::new("errors-capi");
    let c = CLibrary::load_copy(&dir.0, "libtld_errors.so");
    let k = c.key("err_c_key", 8);
    assert!(k.off >= 0);
    assert!(!c.data(k).is_null());
    let size = tld::runtime_stats().unwrap().data_size as i16;
    assert!(c.data(CKey { off: size }).is_null(), "an offset past the data area yields no pointer");
    assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EINVAL), "NULL comes with errno");
    assert!(c.data(CKey { off: i16::MAX }).is_null());
    assert!(c.data(CKey { off: -libc::E2BIG as i16 }).is_null(), "an error key yields no pointer");
    let block_end = tld::thread_data().unwrap().as_ptr() as usize + size as usize;
    assert!((c.data(CKey { off: size - 1 }) as usize) < block_end);
    assert_eq!(c.create_key("", 4).off, -libc::EINVAL as i16);
    assert!(c.last_error().contains("empty"), "{}", c.last_error());
}
