//! The C ABI as a C program sees it.
//!
//! - `tests/c/upstream_basic.c` uses only the upstream-compatible names of
//!   `tld.h` and raw system calls. It is built against `libtld.a` and against
//!   `libtld.so`, and each build runs the basic scenario with 32 threads:
//!   every value a thread prints is read back by BPF (`dump_task`) for that
//!   thread, twice, then every thread calls `tld_free()` and BPF no longer
//!   sees it. The program also checks the upstream error codes and the
//!   upstream options (`TLD_DYN_DATA_SIZE 128`, `TLD_FREE_DATA_ON_THREAD_EXIT`).
//! - `tld.h` compiles on its own as C11 and C99 with `-pedantic`, and as C++17.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use tld_tests::cprog::{self, compile, tool, Link, Pin, Program};
use tld_tests::{capi_include, kernel, TaskDump, TempDir};

const THREADS: usize = 32;
const STATIC_SIZE: u16 = 8; // one int, rounded up to 8
const DYN_DATA_SIZE: u16 = 128; // TLD_DYN_DATA_SIZE in the program
const MAX_NAME: &str = "mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm";

// The values the program writes (see upstream_basic.c).
fn static_value(i: i64, round: i64) -> i64 {
    1000 * round + i + 1
}
fn dyn_value(i: i64, round: i64) -> i64 {
    -(100000 * round + 7 * i + 3)
}
fn struct_bytes(i: i64, round: i64) -> Vec<u8> {
    (0..32).map(|j| (64 * round + 5 * i + 3 * j + 1) as u8).collect()
}

/// One "tid <tid> <static> <dyn> <hex>" line.
#[derive(Debug)]
struct Reported {
    tid: i32,
    static_int: i64,
    dyn_int: i64,
    bytes: Vec<u8>,
}

fn parse_tid_line(line: &str) -> Option<Reported> {
    let f: Vec<&str> = line.split(' ').collect();
    if f.len() != 5 || f[0] != "tid" || f[4].len() != 64 {
        return None;
    }
    let bytes = (0..32).map(|j| u8::from_str_radix(&f[4][2 * j..2 * j + 2], 16).ok()).collect::<Option<_>>()?;
    Some(Reported { tid: f[1].parse().ok()?, static_int: f[2].parse().ok()?, dyn_int: f[3].parse().ok()?, bytes })
}

fn numbers(line: &str, tag: &str, n: usize) -> Option<Vec<i64>> {
    let mut f = line.split(' ');
    if f.next()? != tag {
        return None;
    }
    let v: Vec<i64> = f.map(|x| x.parse().ok()).collect::<Option<_>>()?;
    (v.len() == n).then_some(v)
}

/// The key offsets the program printed.
struct Offsets {
    static_int: i32,
    dyn_int: i32,
    dyn_struct: i32,
    max_name: i32,
}

/// Checks one thread's dump against what it printed: names, sizes, offsets, values.
fn check_dump(dump: &TaskDump, r: &Reported, off: &Offsets, ctx: &str) {
    assert!(dump.registered && dump.has_data && dump.has_meta, "{ctx}: not registered: {dump:?}");
    assert_eq!(dump.meta_size, STATIC_SIZE + DYN_DATA_SIZE, "{ctx}: metadata size = static 8 + TLD_DYN_DATA_SIZE 128");
    assert_eq!(dump.cnt, 4, "{ctx}: four keys published");
    assert!(!dump.stopped_at_unwritten, "{ctx}");
    let keys: BTreeMap<&str, _> = dump.keys.iter().map(|k| (k.name.as_str(), k)).collect();
    let expect = [
        ("test_static_int", 4u16, off.static_int, r.static_int.to_le_bytes()[..4].to_vec()),
        ("test_dyn_int", 4, off.dyn_int, r.dyn_int.to_le_bytes()[..4].to_vec()),
        ("test_dyn_struct", 32, off.dyn_struct, r.bytes.clone()),
        (MAX_NAME, 1, off.max_name, vec![0]),
    ];
    for (name, size, offset, value) in expect {
        let k = keys.get(name).unwrap_or_else(|| panic!("{ctx}: BPF does not see key {name:?}: {dump:?}"));
        assert_eq!((k.size, k.offset), (size, offset), "{ctx}: size and offset of {name}");
        assert!(k.in_page, "{ctx}: {name} in the page");
        assert_eq!(k.value, value, "{ctx}: BPF reads {name} as the program wrote it");
    }
}

/// Reads one round of 32 lines, checks the values against the formula and
/// against what BPF reads for each thread; returns the thread ids.
fn check_round(prog: &mut Program, bpf: &tld_tests::TestBpf, off: &Offsets, round: i64) -> BTreeSet<i32> {
    let mut tids = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for _ in 0..THREADS {
        let line = prog.line();
        let Some(r) = parse_tid_line(&line) else { prog.die(&format!("round {round}: unexpected line {line:?}")) };
        let i = r.static_int - 1000 * round - 1;
        let ctx = format!("round {round}, line {line:?}");
        assert!((0..THREADS as i64).contains(&i), "{ctx}: static value is not one of this round's");
        assert!(seen.insert(i), "{ctx}: two threads wrote thread {i}'s value");
        assert!(tids.insert(r.tid), "{ctx}: tid reported twice");
        assert_eq!(r.dyn_int, dyn_value(i, round), "{ctx}: dynamic int");
        assert_eq!(r.bytes, struct_bytes(i, round), "{ctx}: struct bytes");
        assert_eq!(r.static_int, static_value(i, round));
        let dump = bpf.dump_tid(r.tid).unwrap_or_else(|e| prog.die(&format!("{ctx}: dump_tid: {e}")));
        check_dump(&dump, &r, off, &ctx);
    }
    tids
}

fn run_scenario(link: Link) {
    let Some(mut bpf) = kernel() else { return };
    let dir = TempDir::new(&format!("c-abi-{link:?}"));
    let exe = cprog::build(&dir.0, "upstream_basic", link);

    let pin = Pin(PathBuf::from(format!("/sys/fs/bpf/tld_c_abi_{}_{link:?}", std::process::id())));
    let _ = std::fs::remove_file(&pin.0);
    bpf.pin_data_map(&pin.0).unwrap_or_else(|e| panic!("pinning the data map: {e}"));

    let mut prog = Program::start(&exe, &pin.0);

    // Upstream error codes, as -errno in tld_key_t.off.
    let line = prog.line();
    let Some(errors) = numbers(&line, "errors", 4) else {
        prog.die(&format!("expected the errors line, got {line:?}"))
    };
    assert_eq!(
        errors,
        [-libc::EEXIST, -libc::EINVAL, -libc::ENAMETOOLONG, -libc::E2BIG].map(i64::from),
        "EEXIST, EINVAL, ENAMETOOLONG, E2BIG"
    );

    // The static key comes first (constructor), the dynamic ones follow, each rounded to 8.
    let line = prog.line();
    let Some(k) = numbers(&line, "keys", 4) else { prog.die(&format!("expected the keys line, got {line:?}")) };
    assert_eq!(k, [0, 8, 16, 48], "key offsets");
    let off = Offsets { static_int: k[0] as i32, dyn_int: k[1] as i32, dyn_struct: k[2] as i32, max_name: k[3] as i32 };

    let tids = check_round(&mut prog, &bpf, &off, 1);
    prog.send("round 2");
    let tids2 = check_round(&mut prog, &bpf, &off, 2);
    assert_eq!(tids, tids2, "the same 32 threads in both rounds");

    // Every thread called tld_free() and is blocked: BPF sees no entry any more.
    prog.send("free");
    let mut freed = BTreeSet::new();
    for _ in 0..THREADS {
        let line = prog.line();
        let Some(n) = numbers(&line, "freed", 1) else { prog.die(&format!("expected a freed line, got {line:?}")) };
        let tid = n[0] as i32;
        assert!(freed.insert(tid), "{line}: twice");
        let dump = bpf.dump_tid(tid).unwrap_or_else(|e| prog.die(&format!("dump_tid({tid}): {e}")));
        assert!(!dump.registered, "after tld_free() thread {tid} still has a map entry: {dump:?}");
    }
    assert_eq!(freed, tids);

    let status = prog.finish();
    let line = prog.line();
    assert_eq!(line, "done");
    if !status.success() {
        prog.die("exited with a failure");
    }
    assert!(prog.no_more_lines(), "nothing after done");
}

#[test]
fn upstream_basic_static_archive() {
    run_scenario(Link::Static);
}

#[test]
fn upstream_basic_shared_object() {
    run_scenario(Link::Shared);
}

/// `tld.h` compiles on its own, as the first and only include, in every
/// language mode a user may pick; upstream options are accepted and a
/// `TLD_NAME_LEN` other than the default is refused.
#[test]
fn header_compiles_standalone() {
    let dir = TempDir::new("c-abi-header");
    let include = capi_include();
    let inc = include.to_str().unwrap();

    let only = dir.0.join("only.c");
    std::fs::write(&only, "#include <tld.h>\n").unwrap();
    let options = dir.0.join("options.c");
    std::fs::write(
        &options,
        r#"#define TLD_DYN_DATA_SIZE 256
#define TLD_FREE_DATA_ON_THREAD_EXIT
#define TLD_NAME_LEN 62
#include <tld.h>
#include <tld.h> /* include guard */

TLD_DEFINE_KEY(prio, "priority", sizeof(int));

int use_upstream_api(int map_fd);
int use_upstream_api(int map_fd)
{
	tld_key_t k = tld_create_key("in_cs", 1);
	int *p = (int *)tld_get_data(map_fd, prio);
	char name[TLD_NAME_LEN];
	(void)name;
	if (p)
		*p = 3;
	tld_free();
	return tld_key_is_err(k) ? tld_key_err_or_zero(k) : 0;
}
"#,
    )
    .unwrap();
    let bad = dir.0.join("bad_name_len.c");
    std::fs::write(&bad, "#define TLD_NAME_LEN 32\n#include <tld.h>\n").unwrap();

    let cc = tool("CC", "cc");
    let cxx = tool("CXX", "c++");
    let obj = dir.0.join("out.o");
    let obj = obj.to_str().unwrap();
    let modes: [(&str, &[&str]); 3] = [
        (cc.as_str(), &["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic"]),
        (cc.as_str(), &["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]),
        (cxx.as_str(), &["-x", "c++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-pedantic"]),
    ];
    for (compiler, flags) in modes {
        let mut args = flags.to_vec();
        args.extend(["-I", inc, "-c", only.to_str().unwrap(), "-o", obj]);
        compile(compiler, &args);
        // Upstream programs write `TLD_DEFINE_KEY(...);`: the macro ends in a
        // declaration that takes that `;`, so this is clean under -pedantic too.
        let mut args = flags.to_vec();
        args.extend(["-I", inc, "-c", options.to_str().unwrap(), "-o", obj]);
        compile(compiler, &args);
        let mut args = flags.to_vec();
        args.extend(["-I", inc, "-c", bad.to_str().unwrap(), "-o", obj]);
        let out = Command::new(compiler).args(&args).output().unwrap();
        assert!(!out.status.success(), "{compiler} {flags:?} accepted TLD_NAME_LEN 32");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("TLD_NAME_LEN only at its default"), "{stderr}");
    }
}

/// Builds and runs `tests/c/<name>.c` (no map), returning its stdout; fails
/// with its stderr unless it exits 0.
fn run_simple(name: &str, link: Link) -> String {
    let dir = TempDir::new(&format!("c-abi-{name}-{link:?}"));
    let exe = cprog::build(&dir.0, name, link);
    let out = Command::new(&exe).output().unwrap_or_else(|e| panic!("running {}: {e}", exe.display()));
    assert!(
        out.status.success(),
        "{name} ({link:?}) failed: {}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Option macros, `TLD_PAGE_SIZE`/`TLD_MAX_DATA_CNT`/`TLD_NAME_LEN`, a
/// program constructor seeing a `TLD_DEFINE_KEY` key, `-E2BIG`/`-EINVAL`, and
/// the upstream selftest's creation race (tests/c/upstream_compat.c).
#[test]
fn upstream_compatibility() {
    for link in [Link::Static, Link::Shared] {
        assert_eq!(run_simple("upstream_compat", link).trim(), "ok");
    }
}

/// C ABI calls from thread-exit destructors after tld's own (DESIGN §5.7):
/// no abort, errors reported, blocks allocated there released again.
#[test]
fn late_destructors_never_abort() {
    for link in [Link::Static, Link::Shared] {
        assert_eq!(run_simple("late_destructor", link).trim(), "ok live=0");
    }
}
