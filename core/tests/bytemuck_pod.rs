//! The `bytemuck` feature: a user struct derives `bytemuck::Pod` and is a
//! `tld::Key<T>` with no `unsafe` in user code; BPF (the `tld` command) reads
//! the struct's bytes as written.
//!
//! `cargo test -p task-local-data --features bytemuck --test bytemuck_pod`
//! (the kernel part needs root and `cargo build -p tld-cli`; under CI=true it
//! fails instead of skipping).

use std::path::PathBuf;
use std::process::Command;

#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Hints {
    request_id: u64,
    priority: i32,
    flags: [u8; 4],
}

#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(16))]
struct Wide {
    x: [u64; 2],
}

fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

#[test]
fn derived_struct_is_a_key() {
    let hints = tld::Key::<Hints>::create("pod_hints").unwrap();
    let want = Hints { request_id: 1 << 40 | 7, priority: -3, flags: *b"io\0\x01" };
    hints.set(want).unwrap();
    assert_eq!(hints.get().unwrap(), want);
    // Through the untyped key: the struct's exact bytes, no padding.
    let mut bytes = [0u8; 16];
    assert_eq!(hints.raw().read(&mut bytes).unwrap(), 16);
    assert_eq!(&bytes, bytemuck::bytes_of(&want));
    // Arrays and primitives still are keys (bytemuck's impls now).
    let arr = tld::Key::<[u16; 3]>::create("pod_array").unwrap();
    arr.set([1, 2, 3]).unwrap();
    assert_eq!(arr.get().unwrap(), [1, 2, 3]);
    // More than 8-byte alignment is refused when the key is made.
    let err = tld::Key::<Wide>::create("pod_wide").unwrap_err();
    assert_eq!(err.errno(), libc::EINVAL, "{err}");

    kernel_check(&want);
}

/// Pins a map with the `tld` command, attaches it, and reads the thread's
/// value back through BPF (`tld dump --json`).
fn kernel_check(want: &Hints) {
    let cli = std::env::var_os("TLD_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/tld"));
    let privileged = unsafe { libc::geteuid() } == 0;
    if !privileged || !cli.exists() {
        let why = if privileged {
            format!("{} is missing (cargo build -p tld-cli)", cli.display())
        } else {
            "needs root for BPF".to_string()
        };
        assert!(!in_ci(), "kernel check: {why}, and CI=true forbids skipping");
        eprintln!("skipping the kernel check: {why}");
        return;
    }
    let dir = format!("/sys/fs/bpf/tld-test-{}-pod", std::process::id());
    let path = format!("{dir}/tld_data_map");
    let run = |args: &[&str]| {
        let out = Command::new(&cli).args(args).output().expect("run tld");
        assert!(out.status.success(), "tld {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    run(&["pin", "--path", &path]);
    let result = std::panic::catch_unwind(|| {
        tld::attach_path(&path).unwrap();
        let hints = tld::Key::<Hints>::find("pod_hints").unwrap();
        hints.set(*want).unwrap(); // the next access registers the thread with the map
        let tid = unsafe { libc::gettid() }.to_string();
        let pid = std::process::id().to_string();
        let json = run(&["dump", &pid, "--tid", &tid, "--json", "--path", &path]);
        // The thread's values come after the key list, which names the key too.
        let threads = json.find("\"threads\"").unwrap_or_else(|| panic!("no threads: {json}"));
        let at = threads
            + json[threads..].find("\"pod_hints\"").unwrap_or_else(|| panic!("BPF does not see pod_hints: {json}"));
        let hex_at = at + json[at..].find("\"hex\"").unwrap();
        let value = json[hex_at + 5..].split('"').nth(1).unwrap();
        let expected: String = bytemuck::bytes_of(want).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(value, expected, "BPF reads other bytes than the struct's");
    });
    run(&["unpin", "--path", &path]);
    let _ = std::fs::remove_dir(&dir);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
