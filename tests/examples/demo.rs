//! The demo workload: four threads publish hints (a static key and two
//! dynamic ones) and change them every 100 ms, for `TLD_DEMO_SECONDS`
//! seconds (8 by default), then exit. It attaches to the pinned map at
//! `$TLD_MAP_PATH` (else /sys/fs/bpf/tld/tld_data_map).
//!
//! `make demo` (scripts/demo.sh) pins a map with `tld pin`, starts this, and
//! shows what BPF sees of it with `tld keys` and `tld dump`.

use std::time::{Duration, Instant};

use tld::Key;

// A static key: defined at load time, it gets its own space in every thread block.
tld::static_key!(static PRIORITY: i32 = "priority");

const WORKERS: usize = 4;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: u64 = std::env::var("TLD_DEMO_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    tld::attach_default().map_err(|e| format!("{e} (pin a map first: tld pin)"))?;
    // Dynamic keys: created at run time by name, from any thread, in any language.
    let in_cs: Key<u8> = Key::get_or_create("in_critical_section")?;
    let request: Key<u64> = Key::get_or_create("request_id")?;
    println!(
        "demo: pid {}: {WORKERS} threads publish priority, in_critical_section and request_id for {seconds}s",
        std::process::id()
    );
    let until = Instant::now() + Duration::from_secs(seconds);
    std::thread::scope(|s| {
        for w in 0..WORKERS {
            std::thread::Builder::new()
                .name(format!("worker-{w}"))
                .spawn_scoped(s, move || -> tld::Result<()> {
                    // The first access registers the thread; then plain stores.
                    PRIORITY.set(w as i32 + 1)?;
                    let mut round = 0u64;
                    while Instant::now() < until {
                        in_cs.set(((round as usize + w) % 2) as u8)?;
                        request.set(1000 * (w as u64 + 1) + round)?;
                        round += 1;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Ok(())
                })
                .expect("spawn a worker");
        }
    });
    Ok(())
}
