//! The basic scenario: 32 threads write distinct values to a static int key,
//! a dynamic int key and a dynamic 32-byte struct key; a BPF program run on
//! each thread reads the same values through `tld.bpf.h`, twice, with user
//! space changing them in between.

use std::sync::{Arc, Barrier};

use tld::Key;
use tld_tests::{attach, gettid, int_value, kernel};

tld::static_key!(static STATIC_INT: i32 = "test_static_int");

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Hint {
    bytes: [u8; 32],
}
unsafe impl tld::Pod for Hint {}

fn hint(seed: u8) -> Hint {
    Hint { bytes: std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8)) }
}

#[test]
fn thirty_two_threads_bpf_reads_what_each_wrote() {
    let Some(bpf) = kernel() else { return };
    attach(&bpf);
    let dyn_int: Key<i32> = Key::create("test_dyn_int").unwrap();
    let dyn_struct: Key<Hint> = Key::create("test_dyn_struct").unwrap();
    let bpf = Arc::new(bpf);
    let barrier = Arc::new(Barrier::new(32));

    let threads: Vec<_> = (0..32)
        .map(|i| {
            let (bpf, barrier) = (bpf.clone(), barrier.clone());
            std::thread::spawn(move || {
                for round in 0..2 {
                    let (s, d, h) = (1000 * i + round, -(1000 * i + round) - 1, hint((i * 2 + round) as u8));
                    STATIC_INT.set(s).unwrap();
                    dyn_int.set(d).unwrap();
                    dyn_struct.set(h).unwrap();
                    // Everybody has written before anybody reads: values must not bleed across threads.
                    barrier.wait();
                    let seen = bpf.read_basic().unwrap();
                    assert_eq!(seen.init_err, 0, "thread {i} round {round}");
                    assert_eq!(seen.static_int, Some(s), "thread {i} round {round}");
                    assert_eq!(seen.dyn_int, Some(d), "thread {i} round {round}");
                    assert_eq!(seen.dyn_struct, Some(h.bytes), "thread {i} round {round}");
                    assert!(!seen.never_created_found, "a name never created reads as absent");

                    // The generic walker agrees, by name, offset and value.
                    let dump = bpf.dump_tid(gettid()).unwrap();
                    assert!(dump.registered);
                    assert_eq!(int_value(&dump, "test_static_int"), Some(s as i64));
                    assert_eq!(int_value(&dump, "test_dyn_int"), Some(d as i64));
                    let k = dump.keys.iter().find(|k| k.name == "test_dyn_struct").unwrap();
                    assert_eq!(k.offset as usize, dyn_struct.raw().offset());
                    assert_eq!(k.value, h.bytes);
                    barrier.wait();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
