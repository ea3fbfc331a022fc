//! The demo: creates a `tld_data_map` (from the test BPF object), publishes
//! hints from several threads, and prints per thread what a BPF program read.
//!
//! `make demo` (root: loading BPF needs CAP_BPF).

use std::sync::mpsc;

use tld::Key;
use tld_bpf::TestBpf;

// A static key: defined at load time, it gets its own space in every thread block.
tld::static_key!(static PRIORITY: i32 = "priority");

const WORKERS: usize = 4;
const ROUNDS: u64 = 3;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bpf = TestBpf::load().map_err(|e| format!("loading BPF (run as root): {e}"))?;
    tld::attach_fd(bpf.data_map_fd())?;
    // Dynamic keys: created at run time by name, from any thread, in any language.
    let in_cs: Key<u8> = Key::get_or_create("in_critical_section")?;
    let request: Key<u64> = Key::get_or_create("request_id")?;

    println!("tld demo: {WORKERS} threads publish hints; a BPF program reads each thread's values in place\n");
    println!("{:>5}  {:>8}  {:<10} {:>8} {:>20} {:>10}", "round", "tid", "thread", "priority", "in_critical_section", "request_id");
    let bpf = &bpf;
    for round in 0..ROUNDS {
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|s| {
            for w in 0..WORKERS {
                let tx = tx.clone();
                std::thread::Builder::new()
                    .name(format!("worker-{w}"))
                    .spawn_scoped(s, move || -> tld::Result<()> {
                        // Plain stores: no system call once the thread is set up.
                        PRIORITY.set(w as i32 + 1)?;
                        in_cs.set((round as usize + w) as u8 % 2)?;
                        request.set(1000 * (round + 1) + w as u64)?;
                        // A SEC("syscall") program, run on this thread, walks the metadata and data pages.
                        let seen = bpf.dump_current().expect("run the BPF reader");
                        tx.send((w, tld_tests::gettid(), seen)).unwrap();
                        Ok(())
                    })
                    .unwrap();
            }
        });
        drop(tx);
        let mut rows: Vec<_> = rx.iter().collect();
        rows.sort_by_key(|r| r.0);
        for (w, tid, seen) in rows {
            let v = |name: &str| -> String {
                seen.keys
                    .iter()
                    .find(|k| k.name == name)
                    .map(|k| {
                        let mut b = [0u8; 8];
                        b[..k.value.len().min(8)].copy_from_slice(&k.value[..k.value.len().min(8)]);
                        i64::from_le_bytes(b).to_string()
                    })
                    .unwrap_or_else(|| "-".into())
            };
            println!(
                "{round:>5}  {tid:>8}  {:<10} {:>8} {:>20} {:>10}",
                format!("worker-{w}"),
                v("priority"),
                v("in_critical_section"),
                v("request_id")
            );
        }
    }
    println!("\nkeys (slot, offset, size): {:?}", tld::keys()?.iter().map(|(n, k)| (n.as_str(), k.slot(), k.offset(), k.size())).collect::<Vec<_>>());
    Ok(())
}
