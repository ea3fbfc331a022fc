//! Thread and process life cycle against the kernel: 1,000 threads in waves
//! leave no blocks, pidfds or map entries behind; a forked child's writes
//! (through pointers taken before the fork) are read by BPF in the child.

use std::sync::{Arc, Barrier};

use tld::Key;
use tld_tests::{finish, in_child, int_value, kernel, open_fds, TestBpf};

const WAVES: usize = 20;
const PER_WAVE: usize = 50;

fn waves(bpf: &TestBpf) {
    tld::attach_fd(bpf.data_map_fd()).unwrap();
    let k: Key<u64> = Key::create("life_value").unwrap();
    let pid = std::process::id() as i32;
    let (registered0, _) = bpf.count_registered(pid).unwrap();
    assert_eq!(registered0, 0);
    // Counted after the first iterator run, which opens what it keeps.
    let fds = open_fds();
    for wave in 0..WAVES {
        let barrier = Arc::new(Barrier::new(PER_WAVE + 1));
        let threads: Vec<_> = (0..PER_WAVE)
            .map(|i| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let v = (wave * PER_WAVE + i) as u64;
                    k.set(v).unwrap();
                    barrier.wait(); // registered...
                    barrier.wait(); // ...until counted
                    assert_eq!(k.get().unwrap(), v);
                })
            })
            .collect();
        barrier.wait();
        let (registered, tasks) = bpf.count_registered(pid).unwrap();
        assert_eq!(registered, PER_WAVE, "wave {wave}: every live thread is registered");
        assert!(tasks > PER_WAVE);
        assert_eq!(tld::runtime_stats().unwrap().live_blocks, PER_WAVE);
        barrier.wait();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(tld::runtime_stats().unwrap().live_blocks, 0, "wave {wave}: blocks released");
        assert_eq!(bpf.count_registered(pid).unwrap().0, 0, "wave {wave}: map entries gone");
        assert_eq!(open_fds(), fds, "wave {wave}: no pidfd left open");
    }
}

fn fork_child_reregisters(bpf: &TestBpf) {
    tld::attach_fd(bpf.data_map_fd()).unwrap();
    let k: Key<i64> = Key::create("fork_value").unwrap();
    k.set(11).unwrap();
    let before_fork = k.as_ptr().unwrap().as_ptr();
    assert_eq!(int_value(&bpf.dump_current().unwrap(), "fork_value"), Some(11));

    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (rd, wr) = (fds[0], fds[1]);
    // Three other threads hold blocks at the fork; they do not exist in the child.
    let hold = Arc::new(Barrier::new(4));
    let others: Vec<_> = (0..3)
        .map(|i| {
            let hold = hold.clone();
            std::thread::spawn(move || {
                k.set(100 + i).unwrap();
                hold.wait();
                hold.wait();
            })
        })
        .collect();
    hold.wait();
    assert_eq!(tld::runtime_stats().unwrap().live_blocks, 4);
    match unsafe { libc::fork() } {
        0 => {
            // The child: no new call into tld; write through the old pointer, let BPF read it.
            unsafe { before_fork.write_volatile(22) };
            let dump = bpf.dump_current().unwrap();
            let ok = dump.registered
                && int_value(&dump, "fork_value") == Some(22)
                // Only the surviving thread's block is still in use.
                && tld::runtime_stats().unwrap().live_blocks == 1;
            let byte = [ok as u8];
            unsafe { libc::write(wr, byte.as_ptr().cast(), 1) };
            unsafe { libc::_exit(0) };
        }
        child => {
            let mut byte = [0u8];
            assert_eq!(unsafe { libc::read(rd, byte.as_mut_ptr().cast(), 1) }, 1);
            unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
            assert_eq!(byte[0], 1, "BPF in the child reads the child's write; other threads' blocks are reclaimed");
            hold.wait();
            for t in others {
                t.join().unwrap();
            }
            // The parent's value is its own.
            assert_eq!(int_value(&bpf.dump_current().unwrap(), "fork_value"), Some(11));
            assert_eq!(k.get().unwrap(), 11);
        }
    }
}

fn main() {
    let Some(bpf) = kernel() else { finish(&[]) };
    let results = [
        in_child("1000 threads in waves leave nothing behind", || waves(&bpf)),
        in_child("fork: the child is re-registered", || fork_child_reregisters(&bpf)),
    ];
    finish(&results)
}
