//! `tld-consumer PID [PIN]`: prints `tid priority request_id` for every
//! thread of process PID that publishes task local data, read by a BPF task
//! iterator (`src/bpf/consumer.bpf.c`) through `tld.bpf.h`.
//!
//! The one tld-specific step in the loader: make the object's `tld_data_map`
//! reuse the map pinned at PIN (default `/sys/fs/bpf/tld/tld_data_map`,
//! what `tld pin` creates and applications attach to) before loading. The
//! pinned map outlives this program, so a restarted consumer reads the
//! values the applications keep publishing, with nothing for them to do.
//! (A map declared with `__uint(pinning, LIBBPF_PIN_BY_NAME)` and loaded
//! with the pin's directory as `pin_root_path` does the same.)
//!
//! Needs root (or CAP_BPF + CAP_PERFMON).

use std::io::Read;
use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::process::ExitCode;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::Iter;

mod consumer {
    #![allow(clippy::all, dead_code, missing_docs, non_camel_case_types, unsafe_op_in_unsafe_fn)]
    include!(concat!(env!("OUT_DIR"), "/consumer.skel.rs"));
}
use consumer::ConsumerSkelBuilder;

fn run(pid: i32, pin: PathBuf) -> Result<String, String> {
    let mut storage = MaybeUninit::uninit();
    let mut open = ConsumerSkelBuilder::default()
        .open(&mut storage)
        .map_err(|e| format!("opening the BPF object: {e}"))?;
    open.maps
        .rodata_data
        .as_deref_mut()
        .ok_or("the BPF object has no .rodata")?
        .target_tgid = pid;
    open.maps
        .tld_data_map
        .reuse_pinned_map(&pin)
        .map_err(|e| format!("reusing the map pinned at {}: {e}", pin.display()))?;
    let skel = open
        .load()
        .map_err(|e| format!("loading the BPF program: {e}"))?;
    let link = skel
        .progs
        .dump_hints
        .attach()
        .map_err(|e| format!("attaching the task iterator: {e}"))?;
    let mut out = String::new();
    Iter::new(&link)
        .and_then(|mut it| it.read_to_string(&mut out).map_err(Into::into))
        .map_err(|e| format!("running the task iterator: {e}"))?;
    Ok(out)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(pid) = args.first().and_then(|p| p.parse::<i32>().ok()) else {
        eprintln!("usage: tld-consumer PID [PIN]");
        return ExitCode::from(2);
    };
    let pin = args
        .get(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/sys/fs/bpf/tld/tld_data_map"));
    match run(pid, pin) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tld-consumer: {e}");
            ExitCode::FAILURE
        }
    }
}
