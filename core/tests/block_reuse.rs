//! Thread exit and `free_thread_block` return blocks to the pool. One test in
//! its own binary: it counts the process's live blocks, which other tests'
//! threads would change.

use std::sync::{Arc, Barrier};

use tld::Key;

tld::static_key!(static STATIC_U64: u64 = "threads_static_u64");

#[test]
fn every_thread_has_its_own_values_and_blocks_are_reused() {
    let a: Key<u32> = Key::get_or_create("threads_a").unwrap();
    let b: Key<[u8; 24]> = Key::get_or_create("threads_b").unwrap();
    let base = tld::runtime_stats().unwrap().live_blocks;
    for wave in 0..5u32 {
        let barrier = Arc::new(Barrier::new(17));
        let handles: Vec<_> = (0..16u32)
            .map(|i| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let v = wave * 100 + i;
                    a.set(v).unwrap();
                    b.set([v as u8; 24]).unwrap();
                    STATIC_U64.set(v as u64 * 7).unwrap();
                    barrier.wait(); // all 16 blocks live at once...
                    barrier.wait(); // ...until the main thread has counted them
                    assert_eq!(a.get().unwrap(), v);
                    assert_eq!(b.get().unwrap(), [v as u8; 24]);
                    assert_eq!(STATIC_U64.get().unwrap(), v as u64 * 7);
                })
            })
            .collect();
        barrier.wait();
        let live = tld::runtime_stats().unwrap().live_blocks;
        assert_eq!(live, base + 16, "wave {wave}");
        barrier.wait();
        for h in handles {
            h.join().unwrap();
        }
        // Thread exit released every block.
        assert_eq!(tld::runtime_stats().unwrap().live_blocks, base);
    }

    // An explicit release gives the block back at once; the next access gets a new, zeroed one.
    let k: Key<u32> = Key::get_or_create("threads_free").unwrap();
    std::thread::spawn(move || {
        k.set(5).unwrap();
        let before = tld::runtime_stats().unwrap().live_blocks;
        tld::free_thread_block();
        assert_eq!(tld::runtime_stats().unwrap().live_blocks, before - 1);
        assert_eq!(k.get().unwrap(), 0, "a new block starts zeroed");
    })
    .join()
    .unwrap();
}
