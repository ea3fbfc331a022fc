//! Creation race: 60 threads race to create keys (shared names, some too
//! large), repeated 100 times, each time in a fresh process. One winner per
//! name, no overlapping offsets, and BPF sees exactly the created keys.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier, Mutex};

use tld::{Error, RawKey};
use tld_tests::{finish, in_child, kernel, TestBpf};

const THREADS: usize = 60;
const NAMES: usize = 24;
const RESERVE: usize = 1024;

/// Name `i`'s size: small keys, with every sixth one 400 bytes so that not all fit.
fn size_of_name(i: usize) -> usize {
    if i % 6 == 5 {
        400
    } else {
        1 + (i * 7) % 40
    }
}

fn race_once(bpf: &TestBpf, rep: usize) {
    tld::set_dynamic_reserve(RESERVE).unwrap();
    tld::attach_fd(bpf.data_map_fd()).unwrap();
    let barrier = Arc::new(Barrier::new(THREADS));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (barrier, outcomes) = (barrier.clone(), outcomes.clone());
            s.spawn(move || {
                // Each thread tries every name, starting at a different one.
                let order: Vec<usize> = (0..NAMES).map(|j| (j + t * 5 + rep) % NAMES).collect();
                barrier.wait();
                let mine: Vec<_> = order
                    .into_iter()
                    .map(|i| (i, RawKey::create(format!("race_{i}"), size_of_name(i))))
                    .collect();
                // Every thread's block now holds the winners; BPF must see exactly them.
                barrier.wait();
                tld::thread_data().unwrap();
                let dump = bpf.dump_current().unwrap();
                assert!(dump.registered);
                outcomes.lock().unwrap().push((mine, dump));
            });
        }
    });

    let outcomes = Arc::try_unwrap(outcomes).unwrap().into_inner().unwrap();
    let mut winners: BTreeMap<usize, RawKey> = BTreeMap::new();
    let mut too_big: BTreeMap<usize, usize> = BTreeMap::new();
    for (mine, _) in &outcomes {
        for (i, r) in mine {
            match r {
                Ok(k) => assert!(winners.insert(*i, *k).is_none(), "race_{i} won twice"),
                Err(Error::Exists { .. }) => {}
                Err(Error::TooBig { .. }) => *too_big.entry(*i).or_default() += 1,
                Err(e) => panic!("race_{i}: unexpected {e}"),
            }
        }
    }
    // A name either has one winner (everyone else saw it exist) or did not fit for anyone.
    for i in 0..NAMES {
        match (winners.get(&i), too_big.get(&i)) {
            (Some(_), None) => {}
            (None, Some(&n)) => assert_eq!(n, THREADS, "race_{i}: some but not all threads got E2BIG"),
            other => panic!("race_{i}: {other:?}"),
        }
    }
    // No overlap, and everything inside the data area.
    let mut ranges: Vec<(usize, usize)> =
        winners.values().map(|k| (k.offset(), k.offset() + tld::abi::round_up8(k.size()))).collect();
    ranges.sort();
    for w in ranges.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlapping keys {w:?}");
    }
    assert!(ranges.last().unwrap().1 <= RESERVE);
    // The published table is exactly the winners, and every thread's BPF view agrees.
    let published: BTreeMap<String, (usize, usize)> =
        tld::keys().unwrap().into_iter().map(|(n, k)| (n, (k.offset(), k.size()))).collect();
    let expected: BTreeMap<String, (usize, usize)> =
        winners.iter().map(|(i, k)| (format!("race_{i}"), (k.offset(), k.size()))).collect();
    assert_eq!(published, expected);
    for (_, dump) in &outcomes {
        let seen: BTreeMap<String, (usize, usize)> =
            dump.keys.iter().map(|k| (k.name.clone(), (k.offset as usize, k.size as usize))).collect();
        assert_eq!(seen, expected, "BPF sees exactly the created keys");
    }
}

fn main() {
    let Some(bpf) = kernel() else { finish(&[]) };
    let results: Vec<bool> = (0..100).map(|rep| in_child(&format!("race repetition {rep}"), || race_once(&bpf, rep))).collect();
    finish(&results)
}
