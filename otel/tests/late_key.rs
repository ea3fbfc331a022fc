//! The record key created after threads touched tld data must fit the
//! dynamic reserve: refused with a message saying how to create it in time.

#[test]
fn a_late_record_key_is_refused_clearly() {
    tld::RawKey::get_or_create("late.other", 8).unwrap().write(&[1; 8]).unwrap(); // freezes the blocks
    let e = tld_otel::record_key().unwrap_err();
    assert_eq!(e.errno(), libc::E2BIG);
    assert!(e.message().contains("static_record_key!"), "{e}");
    assert_eq!(tld_otel::set(&tld_otel::SpanContext::default(), &[]).unwrap_err().errno(), libc::E2BIG);
    // A record small enough for the reserve works.
    tld_otel::set_record_size(48).unwrap();
    assert_eq!(tld_otel::record_key().unwrap().size(), 48);
    tld_otel::set(&tld_otel::SpanContext::new([1; 16], [2; 8], 0), &[("k", "0123456789abcdef")]).unwrap();
}
