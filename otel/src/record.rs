//! The OTEP 4947 Thread-Local Context Record (DESIGN §10.2): its layout,
//! the checks a record passes before it is written, and its decoding.

use crate::error::{Error, Result};

/// Name of the static tld key whose value is the thread's record.
pub const RECORD_KEY: &str = "otel.thread_ctx_v1";
/// Bytes before `attrs-data`: trace id, span id, valid, trace flags, attrs-data size.
pub const HEADER_SIZE: usize = 28;
/// Smallest record size: the header alone, no room for attributes.
pub const MIN_RECORD_SIZE: usize = HEADER_SIZE;
/// Largest record size: what OTEP 4947 recommends and the OpenTelemetry
/// eBPF profiler reads at most.
pub const MAX_RECORD_SIZE: usize = 640;
/// Record size unless [`set_record_size`](crate::set_record_size) or
/// `TLD_OTEL_RECORD_SIZE` says otherwise: 100 bytes of attributes.
pub const DEFAULT_RECORD_SIZE: usize = 128;
/// Longest attribute value in bytes (its length is one byte on the wire).
pub const MAX_ATTRIBUTE_VALUE: usize = 255;

pub(crate) const TRACE_ID_OFFSET: usize = 0;
pub(crate) const SPAN_ID_OFFSET: usize = 16;
pub(crate) const VALID_OFFSET: usize = 24;
pub(crate) const FLAGS_OFFSET: usize = 25;
pub(crate) const ATTRS_SIZE_OFFSET: usize = 26;

/// The W3C trace context of the span a thread serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SpanContext {
    /// W3C trace id (16 bytes, as on the wire); all zero: no trace.
    pub trace_id: [u8; 16],
    /// W3C span id (8 bytes, as on the wire); all zero: no span.
    pub span_id: [u8; 8],
    /// W3C trace flags (bit 0: sampled, bit 1: random trace id).
    pub trace_flags: u8,
}

impl SpanContext {
    /// A span context from its W3C parts.
    pub const fn new(trace_id: [u8; 16], span_id: [u8; 8], trace_flags: u8) -> Self {
        SpanContext { trace_id, span_id, trace_flags }
    }

    /// OTEP 4947: if either id is set, both must be; flags are zero when the ids are unset.
    pub(crate) fn check(&self) -> Result<()> {
        let has_trace = self.trace_id != [0; 16];
        let has_span = self.span_id != [0; 8];
        if has_trace != has_span {
            let (set, unset) = if has_trace { ("trace id", "span id") } else { ("span id", "trace id") };
            return Err(Error::invalid(format!(
                "otel thread context: the {set} is set but the {unset} is all zero (OTEP 4947 needs both or neither)"
            )));
        }
        if !has_trace && self.trace_flags != 0 {
            return Err(Error::invalid(format!(
                "otel thread context: trace flags {:#04x} without a trace id and span id (they must be 0)",
                self.trace_flags
            )));
        }
        Ok(())
    }
}

/// Checks that `attrs` (key index, value, name for messages) fit a record of
/// `record_size` bytes and returns the `attrs-data` size. Nothing is written:
/// a record that does not fit is refused whole, never truncated.
pub(crate) fn attrs_size<'a>(
    record_size: usize,
    attrs: impl Iterator<Item = (u8, &'a [u8], &'a str)>,
) -> Result<usize> {
    let room = record_size - HEADER_SIZE;
    let mut total = 0usize;
    for (_, value, name) in attrs {
        if value.len() > MAX_ATTRIBUTE_VALUE {
            return Err(Error::too_big(format!(
                "otel attribute {name:?}: its value is {} bytes, more than the {MAX_ATTRIBUTE_VALUE} a record entry holds",
                value.len()
            )));
        }
        total += 2 + value.len();
    }
    if total > room {
        return Err(Error::too_big(format!(
            "otel thread context: the attributes take {total} bytes, more than the {room} a {record_size}-byte \
             record holds (set a larger record size before the record key exists, at most {MAX_RECORD_SIZE})"
        )));
    }
    Ok(total)
}

/// Writes `attrs-data` entries into `out` (at least the size `attrs_size` returned).
pub(crate) fn write_attrs<'a>(out: &mut [u8], attrs: impl Iterator<Item = (u8, &'a [u8], &'a str)>) {
    let mut at = 0;
    for (index, value, _) in attrs {
        out[at] = index;
        out[at + 1] = value.len() as u8;
        out[at + 2..at + 2 + value.len()].copy_from_slice(value);
        at += 2 + value.len();
    }
}

/// A record as read back: what a reader following OTEP 4947 sees.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// Trace id, span id and flags.
    pub span: SpanContext,
    /// The `valid` byte is 1: readers use the record.
    pub valid: bool,
    /// `attrs-data` entries in order: (key index, value bytes).
    pub attributes: Vec<(u8, Vec<u8>)>,
}

impl Record {
    /// Decodes `bytes` as OTEP 4947 readers do: entries stop at `attrs-data-size`
    /// or where the rest cannot hold a whole entry.
    pub fn decode(bytes: &[u8]) -> Record {
        let mut r = Record::default();
        if bytes.len() < HEADER_SIZE {
            return r;
        }
        r.span.trace_id.copy_from_slice(&bytes[TRACE_ID_OFFSET..TRACE_ID_OFFSET + 16]);
        r.span.span_id.copy_from_slice(&bytes[SPAN_ID_OFFSET..SPAN_ID_OFFSET + 8]);
        r.valid = bytes[VALID_OFFSET] == 1;
        r.span.trace_flags = bytes[FLAGS_OFFSET];
        let size = u16::from_ne_bytes([bytes[ATTRS_SIZE_OFFSET], bytes[ATTRS_SIZE_OFFSET + 1]]) as usize;
        let data = &bytes[HEADER_SIZE..(HEADER_SIZE + size).min(bytes.len())];
        let mut at = 0;
        while at + 2 <= data.len() {
            let len = data[at + 1] as usize;
            if at + 2 + len > data.len() {
                break;
            }
            r.attributes.push((data[at], data[at + 2..at + 2 + len].to_vec()));
            at += 2 + len;
        }
        r
    }
}

/// Checks a record size against the OTEP's bounds.
pub(crate) fn check_record_size(bytes: usize, origin: &str) -> Result<()> {
    if !(MIN_RECORD_SIZE..=MAX_RECORD_SIZE).contains(&bytes) {
        return Err(Error::invalid(format!(
            "otel record size {bytes} ({origin}) is outside {MIN_RECORD_SIZE}..={MAX_RECORD_SIZE} bytes \
             (the 28-byte header plus attributes, at most the 640 OTEP 4947 recommends)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries<'a>(v: &'a [(u8, &'a str)]) -> impl Iterator<Item = (u8, &'a [u8], &'a str)> + 'a {
        v.iter().map(|(i, s)| (*i, s.as_bytes(), "attr"))
    }

    #[test]
    fn span_context_rules() {
        assert!(SpanContext::default().check().is_ok());
        assert!(SpanContext::new([1; 16], [2; 8], 1).check().is_ok());
        assert_eq!(SpanContext::new([1; 16], [0; 8], 0).check().unwrap_err().errno(), libc::EINVAL);
        assert_eq!(SpanContext::new([0; 16], [2; 8], 0).check().unwrap_err().errno(), libc::EINVAL);
        let e = SpanContext::new([0; 16], [0; 8], 1).check().unwrap_err();
        assert!(e.message().contains("trace flags 0x01"), "{e}");
    }

    #[test]
    fn attributes_fit_exactly_or_are_refused() {
        // 128-byte record: 100 bytes of attrs-data.
        let v98 = "x".repeat(98);
        assert_eq!(attrs_size(128, entries(&[(0, &v98)])).unwrap(), 100);
        let v99 = "x".repeat(99);
        let e = attrs_size(128, entries(&[(0, &v99)])).unwrap_err();
        assert_eq!(e.errno(), libc::E2BIG);
        assert!(e.message().contains("101 bytes") && e.message().contains("100"), "{e}");
        let long = "y".repeat(256);
        let e = attrs_size(640, entries(&[(3, &long)])).unwrap_err();
        assert!(e.message().contains("256 bytes"), "{e}");
        assert_eq!(attrs_size(28, entries(&[])).unwrap(), 0);
    }

    #[test]
    fn decode_follows_the_reader_rules() {
        let mut rec = vec![0u8; 64];
        rec[..16].copy_from_slice(&[7; 16]);
        rec[16..24].copy_from_slice(&[9; 8]);
        rec[VALID_OFFSET] = 1;
        rec[FLAGS_OFFSET] = 3;
        let attrs = [(2u8, "GET"), (0, "/a")];
        let n = attrs_size(64, entries(&attrs)).unwrap();
        write_attrs(&mut rec[HEADER_SIZE..], entries(&attrs));
        // One byte more than the entries: a truncated trailing entry is ignored.
        rec[ATTRS_SIZE_OFFSET..ATTRS_SIZE_OFFSET + 2].copy_from_slice(&((n + 1) as u16).to_ne_bytes());
        let r = Record::decode(&rec);
        assert!(r.valid);
        assert_eq!(r.span, SpanContext::new([7; 16], [9; 8], 3));
        assert_eq!(r.attributes, vec![(2, b"GET".to_vec()), (0, b"/a".to_vec())]);
        rec[VALID_OFFSET] = 2; // reserved values are invalid
        assert!(!Record::decode(&rec).valid);
    }

    #[test]
    fn record_size_bounds() {
        assert!(check_record_size(28, "test").is_ok());
        assert!(check_record_size(640, "test").is_ok());
        assert_eq!(check_record_size(27, "test").unwrap_err().errno(), libc::EINVAL);
        assert!(check_record_size(641, "TLD_OTEL_RECORD_SIZE").unwrap_err().message().contains("TLD_OTEL_RECORD_SIZE"));
    }
}
