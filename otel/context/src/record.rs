//! OTEP 4947's Thread-Local Context Record, decoded from its bytes (as BPF
//! or a TLS reader copied them out of a thread).
//!
//! Layout (byte-packed, host byte order): trace id u8[16], span id u8[8],
//! valid u8, trace flags u8, attrs-data size u16, then attrs-data: entries
//! of key-index u8, length u8, `length` bytes of UTF-8. Readers stop where
//! the rest of attrs-data cannot hold a whole entry, use the last entry of a
//! repeated index, and ignore indexes outside the key map.

/// Bytes of the record's header.
pub const HEADER: usize = 28;

/// A decoded record. It is meaningful only when [`ThreadRecord::valid`] is 1.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadRecord {
    /// W3C trace id (all zero: none).
    pub trace_id: [u8; 16],
    /// W3C span id.
    pub span_id: [u8; 8],
    /// The `valid` byte as read: 1 means use the record, anything else ignore it.
    pub valid: u8,
    /// W3C trace flags.
    pub trace_flags: u8,
    /// `attrs-data-size` as read.
    pub attrs_data_size: u16,
    /// The whole entries of attrs-data, in order: (key index, value bytes).
    pub attributes: Vec<(u8, Vec<u8>)>,
    /// attrs-data ends inside an entry, or runs past the bytes given (the
    /// key's slot): the entries after that point were not read.
    pub cut: bool,
}

impl ThreadRecord {
    /// Decodes `bytes` (the record key's value); `None` when they are fewer
    /// than the 28-byte header.
    pub fn decode(bytes: &[u8]) -> Option<ThreadRecord> {
        if bytes.len() < HEADER {
            return None;
        }
        let mut r = ThreadRecord {
            trace_id: bytes[..16].try_into().expect("16 bytes"),
            span_id: bytes[16..24].try_into().expect("8 bytes"),
            valid: bytes[24],
            trace_flags: bytes[25],
            attrs_data_size: u16::from_ne_bytes([bytes[26], bytes[27]]),
            ..ThreadRecord::default()
        };
        let wanted = HEADER + usize::from(r.attrs_data_size);
        let end = wanted.min(bytes.len());
        r.cut = wanted > bytes.len();
        let mut at = HEADER;
        while at + 2 <= end {
            let (k, len) = (bytes[at], usize::from(bytes[at + 1]));
            if at + 2 + len > end {
                break;
            }
            r.attributes.push((k, bytes[at + 2..at + 2 + len].to_vec()));
            at += 2 + len;
        }
        r.cut |= at != end;
        Some(r)
    }

    /// Whether readers use the record (`valid == 1`).
    pub fn is_valid(&self) -> bool {
        self.valid == 1
    }

    /// The value of key index `index`: its last entry (OTEP).
    pub fn attribute(&self, index: u8) -> Option<&[u8]> {
        self.attributes.iter().rev().find(|(k, _)| *k == index).map(|(_, v)| v.as_slice())
    }

    /// The attributes by name through `key_map` (the process context's
    /// `threadlocal.attribute_key_map`), one per key index (its last entry),
    /// in order of first appearance; an index the map lacks is named
    /// `#index`.
    pub fn named_attributes(&self, key_map: &[String]) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(u8, String, Vec<u8>)> = Vec::new();
        for (k, v) in &self.attributes {
            match out.iter_mut().find(|(i, _, _)| i == k) {
                Some(e) => e.2 = v.clone(),
                None => {
                    let name = key_map.get(usize::from(*k)).cloned().unwrap_or_else(|| format!("#{k}"));
                    out.push((*k, name, v.clone()));
                }
            }
        }
        out.into_iter().map(|(_, n, v)| (n, v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(attrs: &[u8], size: u16) -> Vec<u8> {
        let mut b = vec![0u8; HEADER];
        b[..16].copy_from_slice(&[7; 16]);
        b[16..24].copy_from_slice(&[9; 8]);
        b[24] = 1;
        b[25] = 1;
        b[26..28].copy_from_slice(&size.to_ne_bytes());
        b.extend_from_slice(attrs);
        b
    }

    #[test]
    fn decodes_the_header_and_entries() {
        let b = record(&[0, 2, b'h', b'i', 1, 1, b'x', 0, 1, b'z'], 10);
        let r = ThreadRecord::decode(&b).unwrap();
        assert_eq!((r.trace_id, r.span_id, r.valid, r.trace_flags), ([7; 16], [9; 8], 1, 1));
        assert_eq!(r.attributes.len(), 3);
        assert!(!r.cut);
        assert_eq!(r.attribute(0), Some(&b"z"[..]), "the last entry of an index wins");
        let names = r.named_attributes(&["http.route".into()]);
        assert_eq!(names, vec![("http.route".into(), b"z".to_vec()), ("#1".into(), b"x".to_vec())]);
    }

    #[test]
    fn stops_at_a_cut_entry_and_at_the_slot() {
        let r = ThreadRecord::decode(&record(&[0, 5, b'a'], 3)).unwrap();
        assert!(r.attributes.is_empty() && r.cut);
        // attrs-data-size claims more than the slot holds.
        let r = ThreadRecord::decode(&record(&[0, 1, b'a'], 200)).unwrap();
        assert_eq!(r.attributes, vec![(0, b"a".to_vec())]);
        assert!(r.cut);
        assert_eq!(ThreadRecord::decode(&[0; 27]), None);
    }
}
