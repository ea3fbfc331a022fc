//! Memory per registered, idle thread: `cargo bench -p tld-tests --bench memory`
//! (as root) starts 100,000 threads twice, once without tld and once with
//! each thread's block registered with a map, and reports the difference of
//! the process's resident memory and of the kernel's slab memory per thread.
//! It raises `kernel.pid_max` and `vm.max_map_count` for the run if
//! needed, and restores them.
//! Under `cargo test`, 2,000 threads check that it works.

use std::sync::{Arc, Barrier};

use tld::Key;

/// A field of `/proc/<file>` in kB, such as `VmRSS` or `Slab`.
fn kb(file: &str, field: &str) -> u64 {
    let text = std::fs::read_to_string(file).unwrap();
    let line = text.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("{field} in {file}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Starts `n` threads that run `work` and then wait; measures while all
/// wait: (resident kB of this process, slab kB of the machine).
fn measure(n: usize, work: impl Fn() + Send + Sync + 'static) -> (u64, u64) {
    let work = Arc::new(work);
    let ready = Arc::new(Barrier::new(n + 1));
    let release = Arc::new(Barrier::new(n + 1));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (work, ready, release) = (work.clone(), ready.clone(), release.clone());
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    work();
                    ready.wait();
                    release.wait();
                })
                .expect("spawning a thread (raise ulimit -u / kernel.threads-max?)")
        })
        .collect();
    ready.wait();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let m = (kb("/proc/self/status", "VmRSS:"), kb("/proc/meminfo", "Slab:"));
    release.wait();
    for t in threads {
        t.join().unwrap();
    }
    m
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let n = if args.iter().any(|a| a == "--bench") { 100_000 } else { 2_000 };
    let Some(bpf) = tld_tests::kernel() else { return };
    // Each thread needs a pid and a few mappings (stack, guard, signal stack).
    let limits = [("/proc/sys/kernel/pid_max", 4 * n + 10_000), ("/proc/sys/vm/max_map_count", 8 * n + 65_536)];
    let saved: Vec<(&str, usize)> = limits
        .iter()
        .filter_map(|&(path, want)| {
            let now: usize = std::fs::read_to_string(path).unwrap().trim().parse().unwrap();
            (now < want).then(|| {
                std::fs::write(path, want.to_string()).unwrap_or_else(|e| panic!("raising {path}: {e}"));
                (path, now)
            })
        })
        .collect();

    tld::attach_fd(bpf.data_map_fd()).unwrap();
    let key: Key<u64> = Key::get_or_create("memory_bench").unwrap(); // 8 bytes + the 64-byte reserve
    // The reference threads call malloc once, as any real thread does: glibc
    // gives a thread its malloc cache (tcache, about 600 bytes) on its first
    // malloc, which is not tld's cost.
    let (rss0, slab0) = measure(n, || drop(std::hint::black_box(Box::new(0u64))));
    let (rss1, slab1) = measure(n, move || key.set(1).unwrap());
    let stats = tld::runtime_stats().unwrap();
    for (path, value) in saved {
        std::fs::write(path, value.to_string()).unwrap();
    }

    let per = |a: u64, b: u64| (b.saturating_sub(a) as f64) * 1024.0 / n as f64;
    let data = stats.data_size;
    let block = tld::abi::block_size(data);
    println!("{n} threads, data area {data} bytes per thread");
    println!("  tld blocks: {block} bytes each ({} per page) + a 48-byte descriptor", stats.page_size / block);
    println!("  measured: resident memory +{:.0} B per thread, kernel slab +{:.0} B per thread", per(rss0, rss1), per(slab0, slab1));
    // Upstream's header allocates malloc(2 * size), or a page once 2 * size
    // reaches one, for the same size: (size + header) rounded by malloc.
    let upstream = if 2 * data >= stats.page_size { stats.page_size } else { (2 * data + 8 + 15) & !15 };
    println!("  upstream's page-or-twice-the-size allocation for the same size: {upstream} bytes per thread");
}
