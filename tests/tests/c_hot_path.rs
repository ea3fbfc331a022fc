//! The inline hot path of `tld.h` (`tests/c/hot_path.c`): after a thread's
//! first `tld_get_data()`, the call is a thread-local load, a check and an
//! add; `tld_free()`, a map attached later and `fork()` must each send it
//! back to the library. Every value the program reports is read back by BPF
//! from the map(s) the thread must be registered with; built against
//! libtld.a and libtld.so.

use std::path::PathBuf;

use tld_tests::cprog::{self, Link, Pin, PinDir, Program};
use tld_tests::{int_value, kernel, TempDir, TestBpf};

/// Parses `"<what> <tid> <value>"`.
fn report(prog: &mut Program, what: &str) -> (i32, i64) {
    let line = prog.line();
    let f: Vec<&str> = line.split(' ').collect();
    match f.as_slice() {
        [w, tid, value] if *w == what => match (tid.parse(), value.parse()) {
            (Ok(tid), Ok(value)) => (tid, value),
            _ => prog.die(&format!("bad line {line:?}")),
        },
        _ => prog.die(&format!("expected {what:?}, got {line:?}")),
    }
}

/// What BPF reads of `hot_value` for `tid` in `bpf`'s map (None: not registered there).
fn seen(bpf: &TestBpf, tid: i32) -> Option<i64> {
    let d = bpf.dump_tid(tid).unwrap_or_else(|e| panic!("dump of {tid}: {e}"));
    if !d.registered {
        return None;
    }
    int_value(&d, "hot_value")
}

fn run(link: Link) {
    let Some(mut a) = kernel() else { return };
    let mut b = TestBpf::load().expect("a second map");
    let pins = PinDir::new(PathBuf::from(format!("/sys/fs/bpf/tld-test-{}-hot-{link:?}", std::process::id())));
    let (pin_a, pin_b) = (Pin(pins.0.join("a")), Pin(pins.0.join("b")));
    a.pin_data_map(&pin_a.0).unwrap();
    b.pin_data_map(&pin_b.0).unwrap();
    let dir = TempDir::new(&format!("hot-path-{link:?}"));
    let exe = cprog::build(&dir.0, "hot_path", link);
    let mut prog = Program::start_with(&exe, &[("TLD_TEST_MAP", &pin_a.0), ("TLD_TEST_MAP2", &pin_b.0)]);

    let (tid, v) = report(&mut prog, "first");
    assert_eq!((v, seen(&a, tid)), (101, Some(101)), "first call: registered with map A");
    prog.send("go");

    let (t, v) = report(&mut prog, "freed");
    assert_eq!(t, tid);
    assert_eq!((v, seen(&a, tid)), (102, Some(102)), "after tld_free(): the new block is registered");
    prog.send("go");

    let (_, v) = report(&mut prog, "attached");
    assert_eq!(v, 103);
    assert_eq!(seen(&a, tid), Some(103), "still registered with A");
    assert_eq!(seen(&b, tid), Some(103), "registered with the map attached later");
    prog.send("go");

    let (child, v) = report(&mut prog, "child");
    assert_ne!(child, tid);
    assert_eq!(v, 104);
    assert_eq!(seen(&a, child), Some(104), "the fork child, through the pointer cached before fork, in A");
    assert_eq!(seen(&b, child), Some(104), "and in B");
    assert_eq!(seen(&a, tid), Some(103), "the parent keeps its own value");
    prog.send("go");

    assert_eq!(prog.line(), "done");
    let status = prog.finish();
    assert!(status.success(), "hot_path exited with {status}");
}

#[test]
fn hot_path_static_archive() {
    run(Link::Static);
}

#[test]
fn hot_path_shared_object() {
    run(Link::Shared);
}
