//! `create_key` with 1 and 62 keys present: each sample needs a fresh
//! runtime, so each runs in a forked child and reports its time through a
//! pipe; prints the median of 200 samples. `cargo bench -p tld-tests --bench create_key`.

use std::time::Instant;

fn sample(present: usize) -> u64 {
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    match unsafe { libc::fork() } {
        0 => {
            tld::set_dynamic_reserve(1024).unwrap();
            for i in 0..present {
                tld::RawKey::create(format!("present_{i}"), 8).unwrap();
            }
            // After the fork every first write to a page faults: touch the
            // clock's vDSO data, some stack and the lookup path first, so the
            // sample measures key creation, not copy-on-write.
            let _ = Instant::now().elapsed();
            let mut stack = [0u8; 32 * 1024];
            unsafe { std::ptr::write_volatile(stack.as_mut_ptr(), 1) };
            std::hint::black_box(&mut stack);
            let _ = tld::RawKey::find("warm_up_lookup");
            let t = Instant::now();
            tld::RawKey::create("the_new_key_with_a_name_of_a_typical_length", 8).unwrap();
            let ns = t.elapsed().as_nanos() as u64;
            unsafe { libc::write(fds[1], ns.to_ne_bytes().as_ptr().cast(), 8) };
            unsafe { libc::_exit(0) };
        }
        pid => {
            let mut buf = [0u8; 8];
            assert_eq!(unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), 8) }, 8);
            unsafe {
                libc::waitpid(pid, std::ptr::null_mut(), 0);
                libc::close(fds[0]);
                libc::close(fds[1]);
            }
            u64::from_ne_bytes(buf)
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return; // test runners ask benches to list themselves
    }
    // `cargo bench` passes --bench; under `cargo test` one quick round checks it works.
    let samples = if args.iter().any(|a| a == "--bench") { 200 } else { 5 };
    for present in [1, 62] {
        let mut ns: Vec<u64> = (0..samples).map(|_| sample(present)).collect();
        ns.sort_unstable();
        let at = |q: usize| ns[(ns.len() - 1) * q / 100];
        println!("create_key with {present:>2} keys present: median {} ns (p10 {}, p90 {})", at(50), at(10), at(90));
    }
}
