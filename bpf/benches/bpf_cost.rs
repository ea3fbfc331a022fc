//! What a BPF program pays to read task local data (BENCHMARKS.md, "BPF
//! side"). `cargo bench -p tld-bpf --bench bpf_cost` as root.
//!
//! 1. In-program loops (`tld_bench.bpf.c`, one `BPF_PROG_TEST_RUN` each):
//!    a hash map lookup by tid, `tld_object_init()`, init + `tld_get_data()`,
//!    a warm `tld_get_data()`, the task-storage lookup init makes, and a
//!    cold `tld_get_data()` (a name search over 1, 16 and
//!    63 keys, the key being the last). Each loop's time minus the empty
//!    loop's, per iteration; the median of `ROUNDS` rounds, interleaved.
//! 2. `tld top`'s sched_switch program under the kernel's run-time
//!    statistics (`BPF_ENABLE_STATS`): average ns per event while threads
//!    of this process sleep and wake, with tld reading on and off (two
//!    loads, alternating), so the difference is what reading tld adds per
//!    event.
//!
//! Threads are registered by hand (tld_bpf::hand): the cost is the BPF
//! side's alone. `--quick` runs a few rounds only (the test suite's smoke
//! run: `cargo test --benches` runs it that way).

use std::time::{Duration, Instant};

use tld_bpf::bench::{BenchBpf, RunStats};
use tld_bpf::hand::{register, Meta, Page};
use tld_bpf::top::{Top, TopConfig};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// A metadata page with `n` keys, "bench_hint" (8 bytes) the last.
fn meta_with(n: usize) -> Meta {
    let names: Vec<String> = (0..n - 1).map(|i| format!("filler_key_{i:02}")).collect();
    let mut keys: Vec<(&str, u16)> = names.iter().map(|s| (s.as_str(), 8)).collect();
    keys.push(("bench_hint", 8));
    Meta::with_keys(&keys).0
}

/// A metadata page with "bench_hint" (8 bytes) and the OpenTelemetry
/// record (128 bytes), and a data page (area at 8) holding 7 and a valid
/// record: span id 0x05..., attributes index 0 = "w0", index 1 = "/route".
fn otel_pages() -> (Meta, Page) {
    let meta = Meta::with_keys(&[("bench_hint", 8), ("otel.thread_ctx_v1", 128)]).0;
    let data = Page::new();
    data.write(8, &7u64.to_ne_bytes());
    let mut rec = vec![0x4bu8; 16];
    rec.extend_from_slice(&[5; 8]);
    let attrs: &[u8] = &[0, 2, b'w', b'0', 1, 6, b'/', b'r', b'o', b'u', b't', b'e'];
    rec.extend_from_slice(&[1, 1]);
    rec.extend_from_slice(&(attrs.len() as u16).to_ne_bytes());
    rec.extend_from_slice(attrs);
    data.write(16, &rec);
    (meta, data)
}

fn in_program(quick: bool) {
    let (rounds, iters) = if quick { (3, 1000) } else { (31, 200_000) };
    let bpf = BenchBpf::load().expect("the benchmarks need root: loading tld_bench");
    bpf.set_hash_hint(gettid(), 5).unwrap();
    let data = Page::new();
    data.write(8 + 8 * 62, &5u64.to_ne_bytes());
    for i in 0..63 {
        data.write(8 + 8 * i, &5u64.to_ne_bytes());
    }
    let metas = [meta_with(1), meta_with(16), meta_with(63)];
    // bench_hint is the last key: its offset is 8 * (n - 1), holding 5.
    let reg = register(bpf.data_map_fd(), data.addr(), metas[0].addr(), 8);

    let progs = [
        ("bench_empty", "empty loop (subtracted from the rows below)"),
        ("bench_hash", "hash map lookup by tid (the usual alternative)"),
        ("bench_init", "tld_object_init()"),
        ("bench_init_get", "tld_object_init() + tld_get_data(): per event"),
        ("bench_warm_get", "tld_get_data(), warm key cache"),
        ("bench_storage1", "one bpf_task_storage_get() (tld_data_map)"),
    ];
    let mut per: Vec<Vec<f64>> = vec![Vec::new(); progs.len() + 3];
    for _ in 0..rounds {
        reg.update(data.addr(), metas[0].addr(), 8).unwrap();
        for (i, (name, _)) in progs.iter().enumerate() {
            let t = bpf.run(name, iters).unwrap();
            assert!(name.starts_with("bench_storage") || name == &"bench_empty" || t.hits == 5 * u64::from(iters) || name == &"bench_init" && t.hits == u64::from(iters), "{name}: {t:?}");
            per[i].push(t.ns as f64 / f64::from(iters));
        }
        for (j, meta) in metas.iter().enumerate() {
            reg.update(data.addr(), meta.addr(), 8).unwrap();
            let t = bpf.run("bench_cold_get", iters).unwrap();
            assert_eq!(t.hits, 5 * u64::from(iters), "cold search over {} keys: {t:?}", [1, 16, 63][j]);
            per[progs.len() + j].push(t.ns as f64 / f64::from(iters));
        }
    }
    // The OpenTelemetry helpers, on a registration holding a valid record.
    let (ometa, odata) = otel_pages();
    let otel_progs = [
        ("bench_otel_record", "tld_object_init() + tld_otel_record(): per event", 5),
        ("bench_otel_attr", "tld_object_init() + tld_otel_attr(), 2nd of 2 attributes", 6),
    ];
    let mut oper: Vec<Vec<f64>> = vec![Vec::new(); otel_progs.len()];
    for _ in 0..rounds {
        reg.update(odata.addr(), ometa.addr(), 8).unwrap();
        for (i, (name, _, per_hit)) in otel_progs.iter().enumerate() {
            let t = bpf.run(name, iters).unwrap();
            assert_eq!(t.hits, per_hit * u64::from(iters), "{name}: {t:?}");
            oper[i].push(t.ns as f64 / f64::from(iters));
        }
    }
    let empty = median(per[0].clone());
    let hash = median(per[1].clone()) - empty;
    println!("in-program loops: {iters} iterations x {rounds} rounds, median ns per iteration minus the empty loop");
    println!("{:<58} {:>8} {:>9}", "operation", "ns", "x hash");
    println!("{:<58} {:>8.2} {:>9}", progs[0].1, empty, "");
    for (i, (_, what)) in progs.iter().enumerate().skip(1) {
        let ns = median(per[i].clone()) - empty;
        println!("{what:<58} {ns:>8.2} {:>9.2}", ns / hash);
    }
    for (j, n) in [1, 16, 63].iter().enumerate() {
        let ns = median(per[progs.len() + j].clone()) - empty;
        println!(
            "{:<58} {ns:>8.2} {:>9.2}",
            format!("tld_get_data(), cold: name search over {n} keys"),
            ns / hash
        );
    }
    for (i, (_, what, _)) in otel_progs.iter().enumerate() {
        let ns = median(oper[i].clone()) - empty;
        println!("{what:<58} {ns:>8.2} {:>9.2}", ns / hash);
    }
}

/// Threads that sleep and wake: context switches of this process. With
/// `otel`, registered with [`otel_pages`]' data.
fn switcher(stop: std::sync::Arc<std::sync::atomic::AtomicBool>, meta_addr: u64, map: i32, otel: bool) {
    use std::os::fd::BorrowedFd;
    let data = if otel { otel_pages().1 } else { Page::new() };
    if !otel {
        data.write(8 + 8 * 62, &7u64.to_ne_bytes());
    }
    // SAFETY: the map fd outlives the threads (joined before it is closed).
    let map = unsafe { BorrowedFd::borrow_raw(map) };
    let _reg = register(map, data.addr(), meta_addr, 8);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// A 24-byte tld_data_map pinned for one bench, unpinned when dropped.
struct BenchPin(std::path::PathBuf);

impl BenchPin {
    fn new(prefix: &str) -> Self {
        let pin = std::path::PathBuf::from(format!("/sys/fs/bpf/{prefix}{}", std::process::id()));
        let _ = std::fs::remove_file(&pin);
        tld_bpf::inspect::create_pinned_map(&pin, tld_bpf::Layout::Value24).expect("pinning a map");
        BenchPin(pin)
    }

    fn map(&self) -> libbpf_rs::MapHandle {
        libbpf_rs::MapHandle::from_pinned_path(&self.0).unwrap()
    }
}

impl Drop for BenchPin {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn sched_switch(quick: bool) {
    use std::os::fd::{AsFd, AsRawFd};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let secs = if quick { 0.2 } else { 2.0 };
    let rounds = if quick { 1 } else { 7 };
    let pinned = BenchPin::new("tld_bench_");
    let (pin, map) = (&pinned.0, pinned.map());
    let meta = meta_with(63);
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (stop, addr, fd) = (stop.clone(), meta.addr(), map.as_fd().as_raw_fd());
            std::thread::spawn(move || switcher(stop, addr, fd, false))
        })
        .collect();
    let _stats = RunStats::enable().expect("BPF_ENABLE_STATS");
    let tgid = std::process::id() as i32;
    let mut on = Vec::new();
    let mut off = Vec::new();
    let mut events = 0;
    for _ in 0..rounds {
        for read_tld in [true, false] {
            let top = Top::open(
                pin,
                TopConfig { tgid, key: "bench_hint", key_size: 8, read_tld, otel: None },
            )
            .expect("loading tld_top");
            let (t0, c0) = top.run_stats().unwrap();
            let start = Instant::now();
            while start.elapsed().as_secs_f64() < secs {
                std::thread::sleep(Duration::from_millis(10));
            }
            let (t1, c1) = top.run_stats().unwrap();
            let per = (t1 - t0) as f64 / (c1 - c0).max(1) as f64;
            events += c1 - c0;
            if read_tld { on.push(per) } else { off.push(per) }
            let buckets = top.buckets().unwrap();
            if read_tld {
                assert!(
                    buckets.iter().any(|b| b.held == tld_bpf::top::Held::Value(7u64.to_ne_bytes().to_vec())),
                    "tld_top charged nothing to the hint: {buckets:?}"
                );
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let (on, off) = (median(on), median(off));
    println!(
        "tld top's sched_switch program ({events} events, {rounds} rounds of {secs} s each way, \
         every CPU's switches, 4 threads of this process switching every ~50 us):"
    );
    println!("  reading tld (tld_object_init + tld_get_data on switch-out): {on:.1} ns per event");
    println!("  not reading tld (same program, read_tld = 0):             {off:.1} ns per event");
    println!("  added by tld:                                              {:.1} ns per event", on - off);
}

/// `tld top --by otel.attr.NAME` (and `otel.span_id`) against `--by` a
/// plain key, per event, on threads registered with [`otel_pages`].
fn sched_switch_otel(quick: bool) {
    use std::os::fd::{AsFd, AsRawFd};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tld_bpf::top::{Held, OtelField};

    let secs = if quick { 0.2 } else { 2.0 };
    let rounds = if quick { 1 } else { 7 };
    let pinned = BenchPin::new("tld_bench_otel_");
    let (pin, map) = (&pinned.0, pinned.map());
    let meta = otel_pages().0;
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (stop, addr, fd) = (stop.clone(), meta.addr(), map.as_fd().as_raw_fd());
            std::thread::spawn(move || switcher(stop, addr, fd, true))
        })
        .collect();
    let _stats = RunStats::enable().expect("BPF_ENABLE_STATS");
    let tgid = std::process::id() as i32;
    let configs: [(&str, Option<OtelField>); 3] =
        [("--by bench_hint (a plain 8-byte key)", None), ("--by otel.span_id", Some(OtelField::SpanId)), ("--by otel.attr.NAME (2nd of 2 attributes)", Some(OtelField::Attr))];
    let mut per: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut events = 0;
    for _ in 0..rounds {
        for (i, (_, otel)) in configs.iter().enumerate() {
            let key = if otel.is_some() { "otel.thread_ctx_v1" } else { "bench_hint" };
            let key_size = if otel.is_some() { 128 } else { 8 };
            let top = Top::open(pin, TopConfig { tgid, key, key_size, read_tld: true, otel: *otel }).expect("loading tld_top");
            if *otel == Some(OtelField::Attr) {
                top.set_attr_index(Some(1)).unwrap();
            }
            let (t0, c0) = top.run_stats().unwrap();
            let start = Instant::now();
            while start.elapsed().as_secs_f64() < secs {
                std::thread::sleep(Duration::from_millis(10));
            }
            let (t1, c1) = top.run_stats().unwrap();
            per[i].push((t1 - t0) as f64 / (c1 - c0).max(1) as f64);
            events += c1 - c0;
            let want = match otel {
                None => Held::Value(7u64.to_ne_bytes().to_vec()),
                Some(OtelField::SpanId) => Held::Value(vec![5; 8]),
                _ => Held::Attr(b"/route".to_vec(), 6),
            };
            let buckets = top.buckets().unwrap();
            assert!(buckets.iter().any(|b| b.held == want), "{}: nothing charged to {want:?}: {buckets:?}", configs[i].0);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    println!("tld top's sched_switch program by OpenTelemetry fields ({events} events, {rounds} rounds of {secs} s each):");
    let base = median(per[0].clone());
    for (i, (what, _)) in configs.iter().enumerate() {
        let ns = median(per[i].clone());
        println!("  {what:<44} {ns:>7.1} ns per event ({:+.1} vs the plain key)", ns - base);
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick" || a == "--test")
        || !std::env::args().any(|a| a == "--bench");
    if !tld_bpf::has_bpf_privileges() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("the BPF cost benchmark needs root, and CI=true does not allow skipping it");
        }
        println!("skipping: the BPF cost benchmark needs root (or CAP_BPF + CAP_PERFMON)");
        return;
    }
    in_program(quick);
    sched_switch(quick);
    sched_switch_otel(quick);
}
