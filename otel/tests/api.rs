//! The Rust API without the kernel: records as written, the rules that
//! refuse a record, scopes, the settings, the process context in memory.

use tld_otel::{Record, ResourceValue, SpanContext};

tld_otel::static_record_key!();

fn span(n: u8) -> SpanContext {
    SpanContext::new([n; 16], [n + 1; 8], 1)
}

fn record_bytes() -> Vec<u8> {
    let p = tld_otel::thread_record_ptr().unwrap();
    let size = tld_otel::record_key().unwrap().size();
    unsafe { std::slice::from_raw_parts(p.as_ptr(), size) }.to_vec()
}

#[test]
fn a_record_is_the_otep_layout() {
    std::thread::spawn(|| {
        tld_otel::set(&span(3), &[("layout.a", "xy"), ("layout.b", "")]).unwrap();
        let keys = tld_otel::attribute_keys().unwrap();
        let (a, b) = (
            keys.iter().position(|k| k == "layout.a").unwrap() as u8,
            keys.iter().position(|k| k == "layout.b").unwrap() as u8,
        );
        let bytes = record_bytes();
        assert_eq!(bytes.len(), tld_otel::DEFAULT_RECORD_SIZE);
        assert_eq!(&bytes[..16], &[3; 16]);
        assert_eq!(&bytes[16..24], &[4; 8]);
        assert_eq!((bytes[24], bytes[25]), (1, 1));
        assert_eq!(u16::from_ne_bytes([bytes[26], bytes[27]]), 6);
        assert_eq!(&bytes[28..34], &[a, 2, b'x', b'y', b, 0]);
        tld_otel::clear().unwrap();
        assert_eq!(record_bytes()[24], 0);
    })
    .join()
    .unwrap();
}

#[test]
fn refused_records_leave_the_previous_one() {
    std::thread::spawn(|| {
        tld_otel::set(&span(5), &[("refuse.k", "v")]).unwrap();
        let before = record_bytes();
        let long = "x".repeat(256);
        assert_eq!(tld_otel::set(&span(6), &[("refuse.k", &long)]).unwrap_err().errno(), libc::E2BIG);
        let fill = "y".repeat(99); // 2 + 99 > 100 bytes of attributes
        let e = tld_otel::set(&span(6), &[("refuse.k", &fill)]).unwrap_err();
        assert_eq!(e.errno(), libc::E2BIG, "{e}");
        let half = SpanContext::new([1; 16], [0; 8], 0);
        assert_eq!(tld_otel::set(&half, &[]).unwrap_err().errno(), libc::EINVAL);
        assert_eq!(tld_otel::set(&span(6), &[("", "v")]).unwrap_err().errno(), libc::EINVAL);
        assert_eq!(record_bytes(), before);
        // The largest that fits is accepted.
        tld_otel::set(&span(6), &[("refuse.k", &"z".repeat(98))]).unwrap();
        assert!(tld_otel::current().unwrap().valid);
    })
    .join()
    .unwrap();
}

#[test]
fn scopes_restore_in_order() {
    std::thread::spawn(|| {
        assert!(!tld_otel::current().unwrap().valid, "a new thread has no context");
        {
            let _outer = tld_otel::scope(&span(10), &[("scope.k", "outer")]).unwrap();
            {
                let _inner = tld_otel::scope(&span(20), &[("scope.k", "inner")]).unwrap();
                assert_eq!(tld_otel::current().unwrap().span, span(20));
                // A refused inner scope changes nothing.
                assert!(tld_otel::scope(&span(30), &[("scope.k", &"q".repeat(300))]).is_err());
                assert_eq!(tld_otel::current().unwrap().span, span(20));
            }
            let r: Record = tld_otel::current().unwrap();
            assert_eq!(r.span, span(10));
            assert_eq!(r.attributes.last().unwrap().1, b"outer");
        }
        assert!(!tld_otel::current().unwrap().valid, "back to no context");
    })
    .join()
    .unwrap();
}

#[test]
fn settings_after_the_key_exists() {
    let size = tld_otel::record_key().unwrap().size();
    tld_otel::set_record_size(size).unwrap();
    let e = tld_otel::set_record_size(256).unwrap_err();
    assert_eq!(e.errno(), libc::EBUSY);
    assert!(e.message().contains("already exists with 128 bytes"), "{e}");
    assert_eq!(tld_otel::set_record_size(1000).unwrap_err().errno(), libc::EINVAL);
    assert_eq!(tld_otel::set_schema_version("").unwrap_err().errno(), libc::EINVAL);
    let e = tld_otel::publish_process_context(&[("threadlocal.x", ResourceValue::Bool(true))]).unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL);
    let dup = [("a", ResourceValue::Int(1)), ("a", ResourceValue::Int(2))];
    assert_eq!(tld_otel::publish_process_context(&dup).unwrap_err().errno(), libc::EINVAL);
}

#[test]
fn the_process_context_mapping() {
    tld_otel::publish_process_context(&[("service.name", ResourceValue::String("api-test"))]).unwrap();
    let addr = tld_otel::process_context_address().unwrap();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps.lines().find(|l| l.starts_with(&format!("{addr:x}-"))).expect("the mapping is listed");
    assert!(line.contains("/memfd:OTEL_CTX"), "{line}");
    let hdr = unsafe { std::slice::from_raw_parts(addr as *const u8, 32) };
    assert_eq!(&hdr[..8], b"OTEL_CTX");
    assert_eq!(u32::from_ne_bytes(hdr[8..12].try_into().unwrap()), 2);
    let size = u32::from_ne_bytes(hdr[12..16].try_into().unwrap()) as usize;
    let payload_at = u64::from_ne_bytes(hdr[24..32].try_into().unwrap()) as usize;
    assert_eq!(payload_at, addr + 32, "the payload follows the header");
    let before = u64::from_ne_bytes(hdr[16..24].try_into().unwrap());
    let payload = unsafe { std::slice::from_raw_parts(payload_at as *const u8, size) };
    let has = |s: &[u8]| payload.windows(s.len()).any(|w| w == s);
    assert!(has(b"api-test") && has(b"threadlocal.schema_version") && has(b"tld_uptr_v1"));
    // A new key republishes with a later timestamp, in the same mapping.
    tld_otel::AttributeKey::register("mapping.new_key").unwrap();
    let after = u64::from_ne_bytes(hdr[16..24].try_into().unwrap());
    assert!(after > before);
    assert_eq!(tld_otel::process_context_address().unwrap(), addr);
}

#[test]
fn attribute_keys_are_append_only_and_checked() {
    let a = tld_otel::AttributeKey::register("keys.first").unwrap();
    assert_eq!(tld_otel::AttributeKey::register("keys.first").unwrap(), a);
    let b = tld_otel::AttributeKey::register("keys.second").unwrap();
    assert!(b.index() > a.index());
    assert_eq!(tld_otel::AttributeKey::from_index(b.index()).unwrap(), b);
    assert_eq!(tld_otel::AttributeKey::from_index(255).unwrap_err().errno(), libc::EINVAL);
    assert_eq!(tld_otel::AttributeKey::register(&"n".repeat(128)).unwrap_err().errno(), libc::EINVAL);
}
