//! Runtime behaviour that needs no BPF map: keys, per-thread values, block
//! reuse at thread exit. (Everything BPF reads is tested in `tests/`.)

use tld::{Error, Key, RawKey};

tld::static_key!(static STATIC_U64: u64 = "threads_static_u64");

#[test]
fn new_threads_start_from_zero() {
    let k: Key<u64> = Key::get_or_create("threads_zero").unwrap();
    for _ in 0..3 {
        std::thread::spawn(move || {
            assert_eq!(k.get().unwrap(), 0);
            k.set(u64::MAX).unwrap();
        })
        .join()
        .unwrap();
    }
}

#[test]
fn static_keys_are_created_before_main() {
    let found = RawKey::find("threads_static_u64").unwrap();
    assert_eq!(found.size(), 8);
    assert_eq!(STATIC_U64.key().unwrap().raw(), found);
}

#[test]
fn typed_lookups_check_the_size() {
    let _k: Key<u16> = Key::get_or_create("threads_u16").unwrap();
    let err = Key::<u32>::find("threads_u16").unwrap_err();
    assert_eq!(err, Error::SizeMismatch { name: "threads_u16".into(), existing: 2, requested: 4 });
    assert_eq!(err.errno(), libc::EEXIST);
    assert_eq!(Key::<u32>::get_or_create("threads_u16").unwrap_err().errno(), libc::EEXIST);
    assert!(matches!(Key::<u16>::find("threads_missing"), Err(Error::NotFound { .. })));
    assert_eq!(Key::<u16>::find("threads_u16").unwrap().raw().size(), 2);
}
