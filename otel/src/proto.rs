//! The protobuf messages of the OTEP 4719 payload: the subset of
//! `opentelemetry.proto.resource.v1.Resource` and
//! `opentelemetry.proto.common.v1.{KeyValue, AnyValue, ArrayValue}` that tld
//! writes, with the field numbers of the OpenTelemetry protos (DESIGN §10.4).

/// `opentelemetry.proto.resource.v1.Resource`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
    #[prost(uint32, tag = "2")]
    pub dropped_attributes_count: u32,
}

/// `opentelemetry.proto.common.v1.KeyValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

/// `opentelemetry.proto.common.v1.AnyValue` (its `kvlist_value` = 6 and
/// `bytes_value` = 7 are not written by tld).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct AnyValue {
    #[prost(oneof = "Value", tags = "1, 2, 3, 4, 5")]
    pub value: Option<Value>,
}

/// The `value` oneof of `AnyValue`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum Value {
    #[prost(string, tag = "1")]
    String(String),
    #[prost(bool, tag = "2")]
    Bool(bool),
    #[prost(int64, tag = "3")]
    Int(i64),
    #[prost(double, tag = "4")]
    Double(f64),
    #[prost(message, tag = "5")]
    Array(ArrayValue),
}

/// `opentelemetry.proto.common.v1.ArrayValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ArrayValue {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<AnyValue>,
}

impl KeyValue {
    pub(crate) fn new(key: &str, value: Value) -> Self {
        KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(value) }) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Bytes worked out by hand from the protobuf wire format, so a wrong
    /// field number or wire type in the declarations above shows here.
    #[test]
    fn wire_bytes() {
        let r = Resource {
            attributes: vec![
                KeyValue::new("a", Value::String("b".into())),
                KeyValue::new("n", Value::Int(-1)),
                KeyValue::new("k", Value::Array(ArrayValue { values: vec![AnyValue { value: Some(Value::String("x".into())) }] })),
                KeyValue::new("t", Value::Bool(true)),
            ],
            dropped_attributes_count: 0,
        };
        let mut want = vec![];
        // attributes (1, LEN) { key (1, LEN) "a", value (2, LEN) { string_value (1, LEN) "b" } }
        want.extend([0x0a, 8, 0x0a, 1, b'a', 0x12, 3, 0x0a, 1, b'b']);
        // { key "n", value { int_value (3, VARINT) -1 as ten bytes } }
        want.extend([0x0a, 16, 0x0a, 1, b'n', 0x12, 11, 0x18]);
        want.extend([0xff; 9]);
        want.push(0x01);
        // { key "k", value { array_value (5, LEN) { values (1, LEN) { string_value "x" } } } }
        want.extend([0x0a, 12, 0x0a, 1, b'k', 0x12, 7, 0x2a, 5, 0x0a, 3, 0x0a, 1, b'x']);
        // { key "t", value { bool_value (2, VARINT) 1 } }
        want.extend([0x0a, 7, 0x0a, 1, b't', 0x12, 2, 0x10, 1]);
        assert_eq!(r.encode_to_vec(), want);
        // Concatenated messages merge their repeated fields: how the payload is assembled.
        let a = Resource { attributes: r.attributes[..2].to_vec(), dropped_attributes_count: 0 };
        let b = Resource { attributes: r.attributes[2..].to_vec(), dropped_attributes_count: 0 };
        let mut joined = a.encode_to_vec();
        joined.extend(b.encode_to_vec());
        assert_eq!(Resource::decode(joined.as_slice()).unwrap(), r);
    }
}
