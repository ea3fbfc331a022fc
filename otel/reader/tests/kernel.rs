//! Publishers in Rust and C set thread contexts; three readers check them
//! while the threads are alive (DESIGN §10.7):
//! - BPF reads each thread's record through `tld_data_map` (`read_record`):
//!   the bytes equal what the API set, `valid` is 0 after a clear;
//! - an OTEP 4719 reader finds `OTEL_CTX` in /proc/PID/maps and decodes the
//!   resource, the schema version and the attribute key map;
//! - an OTEP 4947 reader finds `otel_thread_ctx_v1` in `.dynsym`, stops each
//!   thread and follows its pointer: exactly one exported symbol is non-NULL,
//!   and it points at the very bytes BPF read; NULL after a clear.
//!
//! Scenarios: the Rust publisher (the symbol in the executable), the same
//! with a second copy of tld (libtld.so, `RTLD_LOCAL`) publishing half the
//! threads, and the C publisher linked with libtld.a and with libtld.so.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use tld_otel_reader::bpf::{Compiler, RecordReader};
use tld_otel_reader::context::{read_process_context, AnyValue, ProcessContext};
use tld_otel_reader::tls::{read_thread, tls_symbols};
use tld_otel_reader::kernel_tests_enabled;

const RECORD_SIZE: usize = 128;

/// The build directory holding libtld.a and libtld.so.
fn capi_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    assert!(
        dir.join("libtld.a").exists() && dir.join("libtld.so").exists(),
        "{} lacks libtld.a/libtld.so: run `cargo build -p task-local-data-capi` first (make test does)",
        dir.display()
    );
    dir
}

fn compile_c_publisher(shared: bool) -> PathBuf {
    let dir = capi_dir();
    let out = std::env::temp_dir().join(format!("otel_publisher_{}_{}", std::process::id(), shared));
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("c/otel_publisher.c");
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../capi/include");
    let mut cmd = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
    cmd.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pthread", "-I"]).arg(&include).arg(&src).arg("-o").arg(&out);
    if shared {
        cmd.arg(format!("-L{}", dir.display())).arg("-ltld").arg(format!("-Wl,-rpath,{}", dir.display()));
    } else {
        cmd.arg(dir.join("libtld.a")).arg("-Wl,--export-dynamic-symbol=otel_thread_ctx_v1");
    }
    cmd.args(["-ldl", "-lm"]);
    let o = cmd.output().expect("running cc");
    assert!(o.status.success(), "compiling {}: {}", src.display(), String::from_utf8_lossy(&o.stderr));
    out
}

struct Publisher {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    tids: Vec<i32>,
    /// A thread that is registered but never published (Rust publisher only).
    idle: Option<i32>,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        // A failed check must not leave the publisher waiting for commands.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Publisher {
    fn start(mut cmd: Command, map: &Path) -> Publisher {
        cmd.env("TLD_MAP_PATH", map).env("TLD_PIN_WATCH", "0").stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("starting the publisher");
        let stdin = child.stdin.take().unwrap();
        let mut p = Publisher { stdout: BufReader::new(child.stdout.take().unwrap()), stdin, child, tids: vec![], idle: None };
        loop {
            let line = p.line();
            if line == "ready" {
                break;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            if f[0] == "idle" {
                p.idle = Some(f[1].parse().unwrap());
                continue;
            }
            assert_eq!(f[0], "thread", "unexpected line {line:?}");
            let (i, tid): (usize, i32) = (f[1].parse().unwrap(), f[2].parse().unwrap());
            if p.tids.len() <= i {
                p.tids.resize(i + 1, 0);
            }
            p.tids[i] = tid;
        }
        p
    }

    fn line(&mut self) -> String {
        let mut s = String::new();
        let n = self.stdout.read_line(&mut s).unwrap();
        assert!(n > 0, "the publisher exited: {:?}", self.child.try_wait());
        s.trim().to_string()
    }

    fn command(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        assert_eq!(self.line(), format!("ok {cmd}"));
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

/// What thread `i` published, per the protocol of the publishers.
fn expected(lang: u8, i: usize, nested: bool) -> ([u8; 16], [u8; 8], Vec<(String, String)>) {
    let mut trace = [i as u8 + 1; 16];
    trace[0] = lang;
    let span = [if nested { 0x20 } else { 0x10 } + i as u8; 8];
    let attrs = if nested {
        vec![("http.route".to_string(), format!("/nested/{i}")), ("db.system".to_string(), "sqlite".to_string())]
    } else {
        vec![("http.route".to_string(), format!("/route/{i}")), ("worker".to_string(), format!("w{i}"))]
    };
    (trace, span, attrs)
}

/// A record's trace id, span id, valid byte, flags and attributes by name.
type Decoded = ([u8; 16], [u8; 8], u8, u8, Vec<(String, String)>);

/// Decodes a record's bytes by OTEP 4947, naming attributes through the key map.
fn decode(bytes: &[u8], key_map: &[String]) -> Decoded {
    let size = u16::from_ne_bytes([bytes[26], bytes[27]]) as usize;
    let mut attrs = vec![];
    let mut at = 28;
    while at + 2 <= 28 + size {
        let (k, len) = (bytes[at] as usize, bytes[at + 1] as usize);
        let name = key_map.get(k).cloned().unwrap_or_else(|| panic!("key index {k} not in the key map {key_map:?}"));
        attrs.push((name, String::from_utf8(bytes[at + 2..at + 2 + len].to_vec()).unwrap()));
        at += 2 + len;
    }
    assert_eq!(at, 28 + size, "attrs-data ends inside an entry");
    (bytes[..16].try_into().unwrap(), bytes[16..24].try_into().unwrap(), bytes[24], bytes[25], attrs)
}

fn check_context(ctx: &ProcessContext, service: &str) {
    assert_eq!(ctx.get("service.name"), Some(&AnyValue::String(service.into())), "{ctx:?}");
    assert_eq!(ctx.get("publisher.threads"), Some(&AnyValue::Int(4)));
    assert_eq!(ctx.get("threadlocal.schema_version"), Some(&AnyValue::String("tld_uptr_v1".into())));
    assert!(ctx.mapping_name.starts_with("/memfd:OTEL_CTX"), "{}", ctx.mapping_name);
}

/// The attrs-data the publishers write for `attrs` (in order), by the key map.
fn encode_attrs(attrs: &[(String, String)], key_map: &[String]) -> Vec<u8> {
    let mut out = vec![];
    for (k, v) in attrs {
        out.push(key_map.iter().position(|n| n == k).unwrap_or_else(|| panic!("{k} not in {key_map:?}")) as u8);
        out.push(v.len() as u8);
        out.extend_from_slice(v.as_bytes());
    }
    out
}

/// Checks what tld.bpf.h's `tld_otel_record()` and `tld_otel_attr()` give
/// a BPF program (built by each compiler) for every thread.
fn check_helpers(p: &Publisher, readers: &[&RecordReader], lang: u8, nested: Option<bool>, key_map: &[String]) {
    let route = key_map.iter().position(|n| n == "http.route").expect("http.route in the key map") as u32;
    let absent = key_map.len() as u32 + 3;
    for (r, bpf) in readers.iter().enumerate() {
        for (i, &tid) in p.tids.iter().enumerate() {
            let h = bpf.read_helper(tid, route).unwrap_or_else(|e| panic!("reader {r}: helper read of thread {i}: {e}"));
            match nested {
                None => {
                    assert_eq!(h.record, None, "reader {r}: thread {i}: tld_otel_record() after clear");
                    assert_eq!(h.attr, Err(-libc::ENODATA), "reader {r}: thread {i}: tld_otel_attr() after clear");
                }
                Some(nested) => {
                    let (trace, span, attrs) = expected(lang, i, nested);
                    let want = (trace, span, 1u8, encode_attrs(&attrs, key_map));
                    assert_eq!(h.record, Some(want), "reader {r}: thread {i}: tld_otel_record()");
                    let value = attrs[0].1.as_bytes().to_vec();
                    assert_eq!(h.attr, Ok((value.clone(), value.len())), "reader {r}: thread {i}: http.route");
                    let missing = bpf.read_helper(tid, absent).unwrap();
                    assert_eq!(missing.attr, Err(-libc::ENOENT), "reader {r}: thread {i}: an index no entry has");
                }
            }
        }
        if let Some(idle) = p.idle {
            let h = bpf.read_helper(idle, route).expect("helper read of the idle thread");
            assert_eq!(h.record, None, "reader {r}: a thread that never published has no record");
            assert_eq!(h.attr, Err(-libc::ENODATA));
        }
    }
}

/// Checks every thread through the three readers, in one phase.
fn check_threads(p: &Publisher, bpf: &RecordReader, lang: u8, nested: Option<bool>, symbols: usize) {
    let ctx = read_process_context(p.pid()).expect("OTEP 4719 read");
    let key_map = ctx.key_map();
    let bpf19 = RecordReader::load_with(Compiler::Clang19, Some(bpf)).expect("load otel_read built by clang-19");
    check_helpers(p, &[bpf, &bpf19], lang, nested, &key_map);
    let syms = tls_symbols(p.pid()).expect("OTEP 4947 discovery");
    assert_eq!(syms.len(), symbols, "exported otel_thread_ctx_v1 symbols: {syms:?}");
    for (i, &tid) in p.tids.iter().enumerate() {
        let b = bpf.read(tid, RECORD_SIZE).unwrap_or_else(|e| panic!("BPF read of thread {i} ({tid}): {e}"));
        assert_eq!(b.bytes.len(), RECORD_SIZE);
        let tls = read_thread(p.pid(), tid, &syms).unwrap_or_else(|e| panic!("TLS read of thread {i}: {e}"));
        // Distinct variables holding a pointer: references interposed onto
        // another object's definition reach the same variable.
        let mut live: Vec<u64> = tls.slots.iter().filter(|s| s.pointer != 0).map(|s| s.address).collect();
        live.dedup();
        match nested {
            None => {
                assert!(!b.valid, "thread {i}: valid after clear");
                assert_eq!(b.bytes[24], 0, "thread {i}: valid byte after clear");
                assert!(live.is_empty(), "thread {i}: otel_thread_ctx_v1 not NULL after clear: {:?}", tls.slots);
            }
            Some(nested) => {
                let (trace, span, attrs) = expected(lang, i, nested);
                assert!(b.valid, "thread {i}: record not valid");
                assert_eq!(decode(&b.bytes, &key_map), (trace, span, 1, 1, attrs), "thread {i} as BPF read it");
                assert_eq!(live.len(), 1, "thread {i}: one live symbol expected: {:?}", tls.slots);
                let rec = tls.record.expect("record behind the TLS pointer");
                assert_eq!(rec[..], b.bytes[..rec.len()], "thread {i}: TLS and BPF read different bytes");
            }
        }
    }
}

fn scenario(name: &str, cmd: Command, lang: u8, service: &str, symbols: usize) {
    if !kernel_tests_enabled() {
        return;
    }
    let mut bpf = RecordReader::load().expect("load otel_read");
    let dir = PathBuf::from(format!("/sys/fs/bpf/tld-otel-test-{}-{name}", std::process::id()));
    let map = bpf.pin(&dir).expect("pin");
    let mut p = Publisher::start(cmd, &map);
    assert_eq!(p.idle.is_some(), lang == 0x7e, "the Rust publisher (only) reports an idle thread");
    check_context(&read_process_context(p.pid()).expect("OTEP 4719 read"), service);
    check_threads(&p, &bpf, lang, Some(false), symbols);
    p.command("nested");
    check_threads(&p, &bpf, lang, Some(true), symbols);
    let keys = read_process_context(p.pid()).unwrap().key_map();
    for k in ["http.route", "worker", "db.system"] {
        assert_eq!(keys.iter().filter(|n| *n == k).count(), 1, "{k} once in the key map {keys:?}");
    }
    p.command("unnest");
    check_threads(&p, &bpf, lang, Some(false), symbols);
    p.command("clear");
    check_threads(&p, &bpf, lang, None, symbols);
    p.command("exit");
    assert!(p.child.wait().unwrap().success());
    // Two publishers, two pins: the dir is removed with `bpf`.
    drop(p);
}

#[test]
fn rust_publisher() {
    scenario("rust", Command::new(env!("CARGO_BIN_EXE_otel_publisher")), 0x7e, "otel-publisher-rust", 1);
}

#[test]
fn rust_publisher_with_a_second_copy() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_otel_publisher"));
    cmd.env("OTEL_PUBLISHER_LIBTLD", capi_dir().join("libtld.so"));
    scenario("two-copies", cmd, 0x7e, "otel-publisher-rust", 2);
}

/// The executable does not export its symbol, so each copy has its own
/// variable: the one in libtld.so is live (the second copy claims the word
/// first), the executable's is invisible to readers, and every thread's
/// record is reached through the live one whichever copy wrote it.
#[test]
fn rust_publisher_unexported_with_a_second_copy() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_otel_publisher_unexported"));
    cmd.env("OTEL_PUBLISHER_LIBTLD", capi_dir().join("libtld.so"));
    scenario("unexported", cmd, 0x7e, "otel-publisher-rust", 1);
}

#[test]
fn c_publisher_static() {
    scenario("c-static", Command::new(compile_c_publisher(false)), 0xc0, "otel-publisher-c", 1);
}

#[test]
fn c_publisher_shared() {
    scenario("c-shared", Command::new(compile_c_publisher(true)), 0xc0, "otel-publisher-c", 1);
}
