//! OpenTelemetry thread context in `tld dump` and `tld top` (DESIGN §10):
//! a thread's OTEP 4947 record is the value of the key
//! `otel.thread_ctx_v1`; its attribute indexes are named by the process's
//! OTEP 4719 context (`threadlocal.attribute_key_map`), read from its
//! `OTEL_CTX` mapping with `tld-otel-context`.

use serde_json::{json, Value};
use tld_otel_context::{read_process_context, ThreadRecord};

use crate::show::hex;

/// The record's key.
pub const KEY: &str = "otel.thread_ctx_v1";

/// The attribute key map of process `pid`, or why it could not be read.
pub fn key_map(pid: i32) -> Result<Vec<String>, String> {
    read_process_context(pid).map(|ctx| ctx.key_map())
}

/// An attribute value for display: its UTF-8 (invalid bytes replaced).
pub fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(value).into_owned()
}

/// `tld dump`'s cell for a record: ids, flags, valid and attributes by
/// name, or `valid=N` alone when the record is not valid (its other bytes
/// then mean nothing).
pub fn cell(bytes: &[u8], key_map: &[String]) -> String {
    let Some(r) = ThreadRecord::decode(bytes) else {
        return format!("0x{} (shorter than a record)", hex(bytes));
    };
    if !r.is_valid() {
        return format!("valid={}", r.valid);
    }
    let mut s = format!(
        "trace={} span={} flags={:02x} valid=1",
        hex(&r.trace_id),
        hex(&r.span_id),
        r.trace_flags
    );
    for (name, value) in r.named_attributes(key_map) {
        s.push_str(&format!(" {name}={:?}", text(&value)));
    }
    if r.cut {
        s.push_str(" (attrs-data cut)");
    }
    s
}

/// The `otel` member of a record's value in `tld dump --json`: `valid`
/// alone when the record is not valid, else every field; null when the
/// value is shorter than a record's header.
pub fn json(bytes: &[u8], key_map: &[String]) -> Value {
    let Some(r) = ThreadRecord::decode(bytes) else {
        return Value::Null;
    };
    if !r.is_valid() {
        return json!({ "valid": r.valid });
    }
    let mut seen: Vec<u8> = Vec::new();
    let mut attributes = Vec::new();
    // One per index, its last entry (OTEP), in order of first appearance.
    for (k, _) in &r.attributes {
        if seen.contains(k) {
            continue;
        }
        seen.push(*k);
        let value = r.attribute(*k).unwrap_or_default();
        attributes.push(json!({
            "index": k,
            "name": key_map.get(usize::from(*k)),
            "value": text(value),
            "hex": hex(value),
        }));
    }
    json!({
        "valid": r.valid,
        "trace_id": hex(&r.trace_id),
        "span_id": hex(&r.span_id),
        "trace_flags": r.trace_flags,
        "attrs_data_size": r.attrs_data_size,
        "attributes": attributes,
        "attrs_cut": r.cut,
    })
}
