//! Compiles `src/bpf/consumer.bpf.c` and generates its skeleton, as any
//! libbpf-rs program does. `vmlinux.h` comes from the running kernel's BTF
//! (`bpftool btf dump file /sys/kernel/btf/vmlinux format c`); `tld.bpf.h`
//! from this repository's `bpf/` (copy it next to your program instead).

use std::env;
use std::path::PathBuf;
use std::process::Command;

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for path in ["src/bpf/consumer.bpf.c", "../../bpf/tld.bpf.h"] {
        println!("cargo:rerun-if-changed={path}");
    }
    let bpftool = ["/usr/sbin/bpftool", "/sbin/bpftool", "/usr/local/sbin/bpftool"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("bpftool"));
    let vmlinux = Command::new(&bpftool)
        .args(["btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c"])
        .output()
        .expect("running bpftool (Debian package bpftool)");
    assert!(vmlinux.status.success(), "bpftool btf dump failed");
    std::fs::write(out.join("vmlinux.h"), vmlinux.stdout).expect("writing vmlinux.h");

    SkeletonBuilder::new()
        .source("src/bpf/consumer.bpf.c")
        .clang_args([
            "-I".into(),
            out.as_os_str().to_owned(),
            "-I".into(),
            std::ffi::OsString::from("../../bpf"),
            "-Wall".into(),
            "-Werror".into(),
        ])
        .build_and_generate(out.join("consumer.skel.rs"))
        .expect("compiling the BPF consumer (clang with the BPF target)");
}
