//! An out-of-process reader of the OTEP 4719 process context, written from
//! the OTEP's reading protocol, with its own protobuf decoder (so it checks
//! the publisher's encoding rather than sharing it).
//!
//! The attribute key map (`threadlocal.attribute_key_map`) it yields names
//! the key indexes of thread records ([`crate::record`]).

use crate::{maps, read_memory};

/// An attribute value as decoded from the payload.
#[derive(Clone, Debug, PartialEq)]
pub enum AnyValue {
    String(String),
    Bool(bool),
    Int(i64),
    Double(f64),
    Array(Vec<AnyValue>),
    /// A kind this reader does not decode (kvlist, bytes).
    Other,
}

/// A process context as read.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessContext {
    /// Address of the mapping.
    pub address: u64,
    /// Its name in /proc/PID/maps.
    pub mapping_name: String,
    pub version: u32,
    pub published_at_ns: u64,
    /// The payload's attributes, in order.
    pub attributes: Vec<(String, AnyValue)>,
}

impl ProcessContext {
    /// The value of attribute `key`.
    pub fn get(&self, key: &str) -> Option<&AnyValue> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// `threadlocal.attribute_key_map` as names by index.
    pub fn key_map(&self) -> Vec<String> {
        match self.get("threadlocal.attribute_key_map") {
            Some(AnyValue::Array(v)) => v
                .iter()
                .map(|x| match x {
                    AnyValue::String(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .collect(),
            _ => vec![],
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().unwrap())
}

/// Follows OTEP 4719's reading protocol for process `pid`: finds the
/// `OTEL_CTX` mapping in /proc/PID/maps, checks signature and version,
/// reads the payload between two reads of `published_at_ns` (retrying while
/// it is 0 or changes), and decodes the `Resource`.
pub fn read_process_context(pid: i32) -> Result<ProcessContext, String> {
    let candidates: Vec<_> = maps(pid)?
        .into_iter()
        .filter(|m| m.name.starts_with("/memfd:OTEL_CTX") || m.name.starts_with("[anon_shmem:OTEL_CTX]"))
        .collect();
    let mut why = format!("no OTEL_CTX mapping in /proc/{pid}/maps");
    for m in candidates {
        for _attempt in 0..100 {
            let mut hdr = [0u8; 32];
            if let Err(e) = read_memory(pid, m.start, &mut hdr) {
                why = e;
                break;
            }
            if &hdr[..8] != b"OTEL_CTX" || u32_at(&hdr, 8) != 2 {
                why = format!("mapping at {:#x}: bad signature or version {}", m.start, u32_at(&hdr, 8));
                break;
            }
            let published = u64_at(&hdr, 16);
            if published == 0 {
                std::thread::yield_now();
                continue; // an update is in progress
            }
            let (size, payload_at) = (u32_at(&hdr, 12) as usize, u64_at(&hdr, 24));
            let mut payload = vec![0u8; size];
            if read_memory(pid, payload_at, &mut payload).is_err() {
                continue; // the payload moved under us: read again
            }
            let mut again = [0u8; 32];
            read_memory(pid, m.start, &mut again)?;
            if u64_at(&again, 16) != published {
                continue;
            }
            let attributes = decode_resource(&payload)?;
            return Ok(ProcessContext {
                address: m.start,
                mapping_name: m.name.clone(),
                version: 2,
                published_at_ns: published,
                attributes,
            });
        }
    }
    Err(why)
}

/// A protobuf reader over one message's bytes.
struct Wire<'a> {
    b: &'a [u8],
}

impl<'a> Wire<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&byte, rest) = self.b.split_first().ok_or("truncated varint")?;
            self.b = rest;
            v |= ((byte & 0x7f) as u64) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    /// The next field: (number, wire type, bytes of a LEN field or the varint / fixed value).
    fn field(&mut self) -> Result<Option<(u64, Field<'a>)>, String> {
        if self.b.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let f = match tag & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                let (v, rest) = self.b.split_at_checked(8).ok_or("truncated fixed64")?;
                self.b = rest;
                Field::Fixed64(u64::from_le_bytes(v.try_into().unwrap()))
            }
            2 => {
                let n = self.varint()? as usize;
                let (v, rest) = self.b.split_at_checked(n).ok_or("truncated length-delimited field")?;
                self.b = rest;
                Field::Len(v)
            }
            5 => {
                self.b = self.b.get(4..).ok_or("truncated fixed32")?;
                Field::Other
            }
            t => return Err(format!("wire type {t} not expected")),
        };
        Ok(Some((tag >> 3, f)))
    }
}

enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    Other,
}

fn text(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a string that is not UTF-8".into())
}

fn decode_any(b: &[u8]) -> Result<AnyValue, String> {
    let mut w = Wire { b };
    let mut v = AnyValue::Other;
    while let Some((n, f)) = w.field()? {
        v = match (n, f) {
            (1, Field::Len(s)) => AnyValue::String(text(s)?),
            (2, Field::Varint(x)) => AnyValue::Bool(x != 0),
            (3, Field::Varint(x)) => AnyValue::Int(x as i64),
            (4, Field::Fixed64(x)) => AnyValue::Double(f64::from_bits(x)),
            (5, Field::Len(a)) => {
                let mut values = vec![];
                let mut aw = Wire { b: a };
                while let Some((n, f)) = aw.field()? {
                    if let (1, Field::Len(x)) = (n, f) {
                        values.push(decode_any(x)?);
                    }
                }
                AnyValue::Array(values)
            }
            _ => AnyValue::Other,
        };
    }
    Ok(v)
}

/// Decodes `opentelemetry.proto.resource.v1.Resource`: its `attributes` (1),
/// each a `KeyValue` of `key` (1) and `value` (2, an `AnyValue`).
pub fn decode_resource(b: &[u8]) -> Result<Vec<(String, AnyValue)>, String> {
    let mut w = Wire { b };
    let mut out = vec![];
    while let Some((n, f)) = w.field()? {
        if let (1, Field::Len(kv)) = (n, f) {
            let mut kw = Wire { b: kv };
            let (mut key, mut value) = (String::new(), AnyValue::Other);
            while let Some((n, f)) = kw.field()? {
                match (n, f) {
                    (1, Field::Len(k)) => key = text(k)?,
                    (2, Field::Len(v)) => value = decode_any(v)?,
                    _ => {}
                }
            }
            out.push((key, value));
        }
    }
    Ok(out)
}
