//! A Rust process publishing OpenTelemetry thread contexts for the readers
//! to check (tests/kernel.rs). Line protocol on stdin/stdout, shared with
//! c/otel_publisher.c:
//!
//! - out `thread <i> <tid>` per thread, then `ready`: every thread published
//!   its span (trace id `[i + 1; 16]` with byte 0 = 0x7e, span id
//!   `[0x10 + i; 8]`, flags 1, `http.route=/route/<i>`, `worker=w<i>`);
//! - Rust only, before `ready`: `idle <tid>`, a thread that read its record
//!   (so it is registered, with the key) but never published a span;
//! - in `nested`: each thread opens a scope (span id `[0x20 + i; 8]`,
//!   `http.route=/nested/<i>`, `db.system=sqlite`); `unnest` closes it;
//!   `clear` clears; `exit` ends. Each is answered `ok <command>`.
//!
//! `TLD_MAP_PATH` names the map to attach. The binary exports
//! `otel_thread_ctx_v1` (build.rs); `otel_publisher_unexported` is the same
//! program without it. With `OTEL_PUBLISHER_LIBTLD` set
//! to a libtld.so, that second copy of tld is loaded `RTLD_LOCAL` and the odd
//! threads publish through its C ABI: two copies, one process.

use std::ffi::{c_char, c_int, c_void, CString};
use std::io::BufRead;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use tld_otel::{ResourceValue, SpanContext};

tld_otel::static_record_key!();

const THREADS: usize = 4;
const LANG: u8 = 0x7e;

static PHASE: AtomicU32 = AtomicU32::new(0);
static DONE: AtomicUsize = AtomicUsize::new(0);
const COMMANDS: [&str; 4] = ["nested", "unnest", "clear", "exit"];

#[repr(C)]
struct CSpan {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    trace_flags: u8,
}

#[repr(C)]
struct CAttr {
    name: *const c_char,
    value: *const c_char,
}

type SetFn = unsafe extern "C" fn(*const CSpan, *const CAttr, usize) -> c_int;
type SaveFn = unsafe extern "C" fn(*mut u8) -> c_int;
type RestoreFn = unsafe extern "C" fn(*const u8) -> c_int;
type ClearFn = unsafe extern "C" fn() -> c_int;

/// The C ABI of the second copy, looked up with dlsym.
struct OtherCopy {
    set: SetFn,
    save: SaveFn,
    restore: RestoreFn,
    clear: ClearFn,
}

fn load_other_copy(path: &str) -> OtherCopy {
    let c = CString::new(path).unwrap();
    let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!h.is_null(), "dlopen {path} failed");
    let sym = |name: &std::ffi::CStr| {
        let p = unsafe { libc::dlsym(h, name.as_ptr()) };
        assert!(!p.is_null(), "{name:?} missing from {path}");
        p
    };
    unsafe {
        OtherCopy {
            set: std::mem::transmute::<*mut c_void, SetFn>(sym(c"tld_otel_set")),
            save: std::mem::transmute::<*mut c_void, SaveFn>(sym(c"tld_otel_save")),
            restore: std::mem::transmute::<*mut c_void, RestoreFn>(sym(c"tld_otel_restore")),
            clear: std::mem::transmute::<*mut c_void, ClearFn>(sym(c"tld_otel_clear")),
        }
    }
}

fn span(i: usize, nested: bool) -> SpanContext {
    let mut trace = [i as u8 + 1; 16];
    trace[0] = LANG;
    SpanContext::new(trace, [if nested { 0x20 } else { 0x10 } + i as u8; 8], 1)
}

fn attrs(i: usize, nested: bool) -> Vec<(String, String)> {
    if nested {
        vec![("http.route".into(), format!("/nested/{i}")), ("db.system".into(), "sqlite".into())]
    } else {
        vec![("http.route".into(), format!("/route/{i}")), ("worker".into(), format!("w{i}"))]
    }
}

fn set_through(other: Option<&OtherCopy>, s: &SpanContext, a: &[(String, String)]) {
    match other {
        None => {
            let pairs: Vec<(&str, &str)> = a.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            tld_otel::set(s, &pairs).expect("tld_otel::set");
        }
        Some(o) => {
            let c: Vec<(CString, CString)> =
                a.iter().map(|(k, v)| (CString::new(k.as_str()).unwrap(), CString::new(v.as_str()).unwrap())).collect();
            let attrs: Vec<CAttr> = c.iter().map(|(k, v)| CAttr { name: k.as_ptr(), value: v.as_ptr() }).collect();
            let cs = CSpan { trace_id: s.trace_id, span_id: s.span_id, trace_flags: s.trace_flags };
            assert_eq!(unsafe { (o.set)(&cs, attrs.as_ptr(), attrs.len()) }, 0, "tld_otel_set of the second copy");
        }
    }
}

fn worker(i: usize, other: Option<&'static OtherCopy>) {
    set_through(other, &span(i, false), &attrs(i, false));
    println!("thread {i} {}", unsafe { libc::syscall(libc::SYS_gettid) });
    DONE.fetch_add(1, Ordering::SeqCst);
    let mut scope = None;
    let mut saved = [0u8; 640];
    let mut seen = 0;
    loop {
        let phase = PHASE.load(Ordering::SeqCst);
        if phase == seen {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        seen = phase;
        match (COMMANDS[phase as usize - 1], other) {
            ("nested", None) => {
                let a = attrs(i, true);
                let pairs: Vec<(&str, &str)> = a.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                scope = Some(tld_otel::scope(&span(i, true), &pairs).expect("scope"));
            }
            ("nested", Some(o)) => {
                assert_eq!(unsafe { (o.save)(saved.as_mut_ptr()) }, 0);
                set_through(other, &span(i, true), &attrs(i, true));
            }
            ("unnest", None) => drop(scope.take()),
            ("unnest", Some(o)) => assert_eq!(unsafe { (o.restore)(saved.as_ptr()) }, 0),
            ("clear", None) => tld_otel::clear().expect("clear"),
            ("clear", Some(o)) => assert_eq!(unsafe { (o.clear)() }, 0),
            _ => {
                DONE.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
        DONE.fetch_add(1, Ordering::SeqCst);
    }
}

pub fn main() {
    tld::attach_default().expect("attach the map at TLD_MAP_PATH");
    tld_otel::publish_process_context(&[
        ("service.name", ResourceValue::String("otel-publisher-rust")),
        ("publisher.threads", ResourceValue::Int(THREADS as i64)),
    ])
    .expect("publish the process context");
    let other: Option<&'static OtherCopy> =
        std::env::var("OTEL_PUBLISHER_LIBTLD").ok().map(|p| &*Box::leak(Box::new(load_other_copy(&p))));
    if let Some(o) = other {
        // The second copy touches the thread context first, so it is the one
        // that claims the live symbol when the executable cannot.
        assert_eq!(unsafe { (o.clear)() }, 0, "tld_otel_clear of the second copy");
    }
    let threads: Vec<_> = (0..THREADS)
        .map(|i| {
            let through = if i % 2 == 1 { other } else { None };
            std::thread::spawn(move || worker(i, through))
        })
        .collect();
    let wait_for = |n: usize| {
        while DONE.load(Ordering::SeqCst) < n {
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    wait_for(THREADS);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let record = tld_otel::current().expect("reading the idle thread's record");
        assert!(!record.valid, "a fresh thread's record is not valid");
        tx.send(unsafe { libc::syscall(libc::SYS_gettid) }).unwrap();
        loop {
            std::thread::park();
        }
    });
    println!("idle {}", rx.recv().unwrap());
    println!("ready");
    let mut lines = std::io::stdin().lock().lines();
    loop {
        // The reader went away: nothing more to publish.
        let Some(line) = lines.next() else { std::process::exit(1) };
        let line = line.expect("stdin");
        let Some(phase) = COMMANDS.iter().position(|c| *c == line.trim()) else {
            panic!("unknown command {line:?}")
        };
        let before = DONE.load(Ordering::SeqCst);
        PHASE.store(phase as u32 + 1, Ordering::SeqCst);
        wait_for(before + THREADS);
        println!("ok {}", COMMANDS[phase]);
        if COMMANDS[phase] == "exit" {
            break;
        }
    }
    for t in threads {
        t.join().expect("worker");
    }
}
