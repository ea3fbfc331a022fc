//! Dynamic budget: with reserves of 64 and 0 bytes, as many 4-byte keys as
//! fit are created, the next is E2BIG, and values stay distinct in BPF.

use tld::{Error, Key};
use tld_tests::{finish, in_child, int_value, kernel, TestBpf};

fn fill(bpf: &TestBpf, reserve: usize, static_keys: usize) {
    tld::set_dynamic_reserve(reserve).unwrap();
    tld::attach_fd(bpf.data_map_fd()).unwrap();
    let statics: Vec<Key<u32>> =
        (0..static_keys).map(|i| Key::try_from_raw(tld::RawKey::create_static(format!("static_{i}"), 4).unwrap()).unwrap()).collect();
    // The first access freezes the size: statics plus the reserve.
    tld::thread_data().unwrap();
    for (i, k) in statics.iter().enumerate() {
        k.set(0xA000 + i as u32).unwrap();
    }
    let stats = tld::runtime_stats().unwrap();
    assert!(stats.frozen);
    assert_eq!(stats.data_size, 8 * static_keys + reserve);

    let mut keys = Vec::new();
    loop {
        match Key::<u32>::create(format!("dyn_{}", keys.len())) {
            Ok(k) => keys.push(k),
            Err(Error::TooBig { available, .. }) => {
                assert!(available < 8, "E2BIG with {available} bytes left");
                break;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    // Each 4-byte key takes 8 bytes of the reserve.
    assert_eq!(keys.len(), reserve / 8);
    for (i, k) in keys.iter().enumerate() {
        k.set(0xB000 + i as u32).unwrap();
    }
    let dump = bpf.dump_current().unwrap();
    assert_eq!(dump.keys.len(), static_keys + keys.len());
    for i in 0..static_keys {
        assert_eq!(int_value(&dump, &format!("static_{i}")), Some(0xA000 + i as i64));
    }
    for i in 0..keys.len() {
        assert_eq!(int_value(&dump, &format!("dyn_{i}")), Some(0xB000 + i as i64));
    }
}

fn main() {
    let Some(bpf) = kernel() else { finish(&[]) };
    let results = [
        in_child("reserve 64: eight 4-byte keys", || fill(&bpf, 64, 0)),
        in_child("reserve 0: no dynamic key", || fill(&bpf, 0, 0)),
        in_child("reserve 0 after two static keys", || fill(&bpf, 0, 2)),
        in_child("reserve 64 after three static keys", || fill(&bpf, 64, 3)),
    ];
    finish(&results)
}
