//! Builds the BPF objects and their Rust skeletons into OUT_DIR: the test
//! programs (`tld_test`), the `tld` tool's task iterator (`tld_inspect`) and
//! `tld top` program (`tld_top`), the cost benchmark (`tld_bench`), each
//! also for the 16-byte map value (`*16`, built with `-DTLD_MAP_VALUE_16`),
//! and the upstream-style 16-byte reader (`tld_upstream16`).
//!
//! 1. `vmlinux.h` is generated from the running kernel's BTF with bpftool
//!    (`BPFTOOL` overrides the tool, `TLD_VMLINUX_BTF` the BTF file).
//! 2. `src/bpf/<source>.bpf.c` is compiled with clang (`CLANG` overrides it;
//!    the upstream-style reader needs clang >= 15, `CLANG_UPSTREAM`, default
//!    `clang-19`) and libbpf-cargo generates `<name>.skel.rs`, for each
//!    object.
//!
//! The BPF side needs the page size at compile time (`__PAGE_SIZE`, see
//! tld.bpf.h). It is the build host's page size unless `TLD_BPF_PAGE_SIZE`
//! says otherwise; the loader refuses to run on a kernel whose page size
//! differs.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use libbpf_cargo::SkeletonBuilder;

/// One BPF object: `src/bpf/<source>.bpf.c` built into `<name>.bpf.o` and
/// `<name>.skel.rs`.
struct Object {
    name: &'static str,
    source: &'static str,
    /// Built with `-DTLD_MAP_VALUE_16`: reads maps of the 16-byte value.
    value16: bool,
    /// Built with `CLANG_UPSTREAM` (clang >= 15, default `clang-19`): the
    /// upstream-style reader needs `struct X __uptr *` kept in BTF, and one
    /// test build checks `tld.bpf.h` with that compiler too.
    upstream_clang: bool,
}

const fn object(name: &'static str, source: &'static str, value16: bool) -> Object {
    Object {
        name,
        source,
        value16,
        upstream_clang: false,
    }
}

const OBJECTS: &[Object] = &[
    object("tld_test", "tld_test", false),
    object("tld_test16", "tld_test", true),
    object("tld_inspect", "tld_inspect", false),
    object("tld_inspect16", "tld_inspect", true),
    object("tld_top", "tld_top", false),
    object("tld_top16", "tld_top", true),
    object("tld_bench", "tld_bench", false),
    // tld.bpf.h as clang >= 15 compiles it (kept type tags, other BTF).
    Object {
        name: "tld_test_clang_upstream",
        source: "tld_test",
        value16: false,
        upstream_clang: true,
    },
    Object {
        name: "tld_upstream16",
        source: "tld_upstream16",
        value16: true,
        upstream_clang: true,
    },
];
const WATCHED: &[&str] = &[
    "src/bpf/tld_test.bpf.c",
    "src/bpf/tld_test.h",
    "src/bpf/tld_inspect.bpf.c",
    "src/bpf/tld_inspect.h",
    "src/bpf/tld_top.bpf.c",
    "src/bpf/tld_top.h",
    "src/bpf/tld_bench.bpf.c",
    "src/bpf/tld_upstream16.bpf.c",
    "src/bpf/tld_upstream.h",
    "src/bpf/tld_walk.h",
    "src/bpf/tld_prog.h",
    "tld.bpf.h",
];

fn main() {
    for path in WATCHED {
        println!("cargo:rerun-if-changed={path}");
    }
    for var in [
        "BPFTOOL",
        "CLANG",
        "CLANG_UPSTREAM",
        "TLD_VMLINUX_BTF",
        "TLD_BPF_PAGE_SIZE",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    if let Err(msg) = build(&out_dir) {
        // A panic shows the whole message; keep it to the point.
        panic!("\n\ntld-bpf build failed: {msg}\n");
    }
}

fn build(out_dir: &Path) -> Result<(), String> {
    generate_vmlinux_h(out_dir)?;

    let page_size = page_size()?;
    println!("cargo:rustc-env=TLD_BPF_COMPILED_PAGE_SIZE={page_size}");

    let clang = env::var_os("CLANG").unwrap_or_else(|| "clang".into());
    let upstream_clang = env::var_os("CLANG_UPSTREAM").unwrap_or_else(|| "clang-19".into());
    for obj in OBJECTS {
        let src = format!("src/bpf/{}.bpf.c", obj.source);
        let (compiler, need, var) = if obj.upstream_clang {
            (&upstream_clang, "clang 15 or newer", "CLANG_UPSTREAM")
        } else {
            (&clang, "clang 14 or newer", "CLANG")
        };
        let mut args: Vec<std::ffi::OsString> = vec![
            "-I".into(),
            out_dir.as_os_str().to_owned(),
            format!("-DTLD_BPF_PAGE_SIZE={page_size}").into(),
            "-Wall".into(),
            "-Werror".into(),
        ];
        if obj.value16 {
            args.push("-DTLD_MAP_VALUE_16".into());
        }
        SkeletonBuilder::new()
            .source(&src)
            .obj(out_dir.join(format!("{}.bpf.o", obj.name)))
            .clang(compiler)
            .clang_args(args)
            .build_and_generate(out_dir.join(format!("{}.skel.rs", obj.name)))
            .map_err(|e| {
                format!(
                    "compiling {src} into {} with {} failed ({need} with the BPF target is \
                     needed; set {var} to pick another): {e:#}",
                    obj.name,
                    compiler.to_string_lossy()
                )
            })?;
    }
    Ok(())
}

/// Dumps the running kernel's BTF as C into `out_dir/vmlinux.h`.
fn generate_vmlinux_h(out_dir: &Path) -> Result<(), String> {
    let btf = env::var_os("TLD_VMLINUX_BTF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/sys/kernel/btf/vmlinux"));
    if !btf.exists() {
        return Err(format!(
            "kernel BTF not found at {} (a kernel built with CONFIG_DEBUG_INFO_BTF=y is needed; \
             set TLD_VMLINUX_BTF to a BTF file to build elsewhere)",
            btf.display()
        ));
    }
    println!("cargo:rerun-if-changed={}", btf.display());

    let bpftool = find_bpftool()?;
    let output = Command::new(&bpftool)
        .args(["btf", "dump", "file"])
        .arg(&btf)
        .args(["format", "c"])
        .output()
        .map_err(|e| format!("running {}: {e}", bpftool.display()))?;
    if !output.status.success() {
        return Err(format!(
            "`{} btf dump file {} format c` failed: {}",
            bpftool.display(),
            btf.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    fs::write(out_dir.join("vmlinux.h"), &output.stdout)
        .map_err(|e| format!("writing vmlinux.h: {e}"))
}

/// `BPFTOOL`, else `bpftool` on PATH, else the sbin directories (which a
/// non-root PATH often lacks).
fn find_bpftool() -> Result<PathBuf, String> {
    if let Some(path) = env::var_os("BPFTOOL") {
        return Ok(PathBuf::from(path));
    }
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|dir| dir.join("bpftool"))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            "bpftool not found (install it, e.g. the Debian package `bpftool`, or set BPFTOOL)"
                .to_string()
        })
}

fn page_size() -> Result<usize, String> {
    if let Ok(value) = env::var("TLD_BPF_PAGE_SIZE") {
        return match value.parse::<usize>() {
            Ok(size) if size.is_power_of_two() && size >= 4096 => Ok(size),
            _ => Err(format!(
                "TLD_BPF_PAGE_SIZE={value} is not a power of two >= 4096"
            )),
        };
    }
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).map_err(|_| "sysconf(_SC_PAGESIZE) failed".to_string())
}
