//! fork(): the child inherits the records and the key map, not the
//! OTEL_CTX mapping (MADV_DONTFORK), and publishes its own on its next use.
//! Without libtest: fork is only safe from a single-threaded parent.

use tld_otel::SpanContext;

tld_otel::static_record_key!();

fn has_context_at(addr: usize) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().any(|l| l.starts_with(&format!("{addr:x}-")) && l.contains("OTEL_CTX"))
}

fn main() {
    let span = SpanContext::new([7; 16], [8; 8], 1);
    tld_otel::set(&span, &[("fork.k", "parent")]).unwrap();
    let parent_ctx = tld_otel::process_context_address().unwrap();
    let keys = tld_otel::attribute_keys().unwrap();
    match unsafe { libc::fork() } {
        0 => {
            let ok = std::panic::catch_unwind(|| {
                assert!(!has_context_at(parent_ctx), "the parent's OTEL_CTX is not inherited");
                assert_eq!(tld_otel::current().unwrap().span, span, "the record is inherited");
                assert_eq!(tld_otel::attribute_keys().unwrap(), keys, "the key map is inherited");
                tld_otel::set(&span, &[("fork.k", "child"), ("fork.child_only", "1")]).unwrap();
                let child_ctx = tld_otel::process_context_address().unwrap();
                assert!(has_context_at(child_ctx), "the child published its own");
                let hdr = unsafe { std::slice::from_raw_parts(child_ctx as *const u8, 8) };
                assert_eq!(hdr, b"OTEL_CTX");
            })
            .is_ok();
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        pid => {
            let mut status = 0;
            unsafe { libc::waitpid(pid, &mut status, 0) };
            let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
            assert!(has_context_at(parent_ctx), "the parent keeps its own");
            assert!(!tld_otel::attribute_keys().unwrap().contains(&"fork.child_only".to_string()));
            println!("test fork_republishes_in_the_child ... {}", if ok { "ok" } else { "FAILED" });
            println!("\n{} passed, {} failed", ok as u32, !ok as u32);
            std::process::exit(if ok { 0 } else { 1 });
        }
    }
}
