//! Formats: what a key holds, decided once when the key object is made.
//!
//! A format is a `struct` module format string, a ctypes type, or a bare
//! `int` (a byte size: raw bytes). The common single-value formats get a
//! [`Kind`] that `Key.get`/`Key.set` handle in Rust without calling into
//! Python; everything else goes through a `struct.Struct` or the ctypes type.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyInt, PyString, PyTuple, PyType};

/// How a key's value crosses between Python and the thread's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
    /// `?`: a bool stored as one byte.
    Bool,
    /// `c`: a bytes object of length 1.
    Char,
    /// `Ns` or a bare size: a bytes object of at most N bytes (shorter ones are zero-padded).
    Bytes,
    /// Any other struct format: through `struct.Struct.pack`/`unpack`.
    Struct {
        items: usize,
    },
    /// A ctypes structure, union or array: `from_buffer_copy` and `bytes(value)`.
    CType,
}

/// A parsed format.
pub struct Format {
    pub kind: Kind,
    pub size: usize,
    /// What `Key.format` returns: the struct format string, the ctypes type, or None.
    pub shown: Py<PyAny>,
    /// The `struct.Struct` (for [`Kind::Struct`]) or the ctypes type (for [`Kind::CType`]).
    pub codec: Option<Py<PyAny>>,
}

const ACCEPTED: &str = "a size in bytes (int), a struct format (str) or a ctypes type";

/// Parses `size_or_format` (the second argument of `create_key`/`key`).
pub fn parse(obj: &Bound<'_, PyAny>) -> PyResult<Format> {
    let py = obj.py();
    if obj.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "expected {ACCEPTED}, got a bool"
        )));
    }
    if obj.is_instance_of::<PyInt>() {
        // Sizes the core rejects (0, larger than a block) are its errors
        // (TldError EINVAL); a negative number is not a size at all.
        let size: i128 = obj.extract().unwrap_or(i128::MAX);
        if size < 0 {
            return Err(PyValueError::new_err(format!(
                "a key size cannot be negative (got {size})"
            )));
        }
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        return Ok(Format {
            kind: Kind::Bytes,
            size,
            shown: py.None(),
            codec: None,
        });
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return parse_struct(py, &s.to_cow()?, obj.clone().unbind());
    }
    if let Ok(t) = obj.cast::<PyType>() {
        return parse_ctype(t);
    }
    Err(PyTypeError::new_err(format!(
        "expected {ACCEPTED}, got {}",
        obj.get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into())
    )))
}

/// A single-code format in the machine's byte order, which the fast path
/// stores directly: `(repeat count, code)`.
fn single_item(fmt: &str) -> Option<(Option<usize>, char)> {
    let (body, native_order) = match fmt.chars().next()? {
        '@' => (&fmt[1..], true),
        // Standard sizes; the byte order is the machine's (or little endian,
        // which is the machine's on every little-endian target).
        '=' => (&fmt[1..], true),
        '<' => (&fmt[1..], cfg!(target_endian = "little")),
        '>' | '!' => (&fmt[1..], cfg!(target_endian = "big")),
        _ => (fmt, true),
    };
    if !native_order {
        return None;
    }
    let digits = body.bytes().take_while(u8::is_ascii_digit).count();
    let rest = &body[digits..];
    let mut chars = rest.chars();
    let code = chars.next()?;
    if chars.next().is_some() {
        return None;
    }
    let count = if digits == 0 {
        None
    } else {
        Some(body[..digits].parse().ok()?)
    };
    Some((count, code))
}

fn struct_error_to_value_error(py: Python<'_>, e: PyErr, what: &str) -> PyErr {
    let err = PyValueError::new_err(format!("{what}: {}", e.value(py)));
    err.set_cause(py, Some(e));
    err
}

fn parse_struct(py: Python<'_>, fmt: &str, shown: Py<PyAny>) -> PyResult<Format> {
    // Pointers are addresses in this process: meaningless to BPF and to other
    // processes, and tld values are untrusted hints anyway.
    if fmt.contains('P') {
        return Err(PyValueError::new_err(format!(
            "format {fmt:?}: pointers ('P') cannot be task local data"
        )));
    }
    let codec = py
        .import(intern!(py, "struct"))?
        .getattr(intern!(py, "Struct"))?
        .call1((fmt,))
        .map_err(|e| {
            struct_error_to_value_error(py, e, &format!("invalid struct format {fmt:?}"))
        })?;
    let size: usize = codec.getattr(intern!(py, "size"))?.extract()?;
    // The number of values: unpack a zeroed buffer once.
    let zeros = pyo3::types::PyBytes::new(py, &vec![0u8; size]);
    let items = codec
        .call_method1(intern!(py, "unpack"), (zeros,))?
        .cast::<PyTuple>()?
        .len();
    if items == 0 || size == 0 {
        return Err(PyValueError::new_err(format!(
            "format {fmt:?} holds no value (size {size}, {items} fields)"
        )));
    }
    let kind = match single_item(fmt) {
        Some((None, code)) => match (code, size) {
            ('b', 1) => Kind::I8,
            ('B', 1) => Kind::U8,
            ('h', 2) => Kind::I16,
            ('H', 2) => Kind::U16,
            ('i' | 'l', 4) => Kind::I32,
            ('I' | 'L', 4) => Kind::U32,
            ('q' | 'l' | 'n', 8) => Kind::I64,
            ('Q' | 'L' | 'N', 8) => Kind::U64,
            ('f', 4) => Kind::F32,
            ('d', 8) => Kind::F64,
            ('?', 1) => Kind::Bool,
            ('c', 1) => Kind::Char,
            ('s', 1) => Kind::Bytes,
            _ => Kind::Struct { items },
        },
        Some((Some(_), 's')) => Kind::Bytes,
        _ => Kind::Struct { items },
    };
    let codec = matches!(kind, Kind::Struct { .. }).then(|| codec.unbind());
    Ok(Format {
        kind,
        size,
        shown,
        codec,
    })
}

fn parse_ctype(t: &Bound<'_, PyType>) -> PyResult<Format> {
    let py = t.py();
    let ctypes = py.import(intern!(py, "ctypes"))?;
    let type_name = t
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into());
    let data_types = [
        ctypes.getattr(intern!(py, "Structure"))?,
        ctypes.getattr(intern!(py, "Union"))?,
        ctypes.getattr(intern!(py, "Array"))?,
    ];
    // Every ctypes simple type (c_int, c_double, c_bool, ...) has a one-letter `_type_`.
    let simple = ctypes.getattr(intern!(py, "_SimpleCData"))?;
    if t.is_subclass(&simple)? {
        let code: String = t.getattr(intern!(py, "_type_"))?.extract()?;
        if !matches!(
            code.as_str(),
            "b" | "B" | "h" | "H" | "i" | "I" | "l" | "L" | "q" | "Q" | "f" | "d" | "?" | "c"
        ) {
            return Err(PyValueError::new_err(format!(
                "ctypes.{type_name} (type code {code:?}) cannot be task local data: only fixed-size \
                 integers, floats, bool and c_char are (no pointers, strings or long double)"
            )));
        }
        // ctypes swaps byte order in the `__ctype_be__`/`__ctype_le__` variants.
        let order = if t
            .getattr(intern!(py, "__ctype_le__"))
            .is_ok_and(|le| le.is(t))
        {
            if cfg!(target_endian = "little") {
                "@"
            } else {
                "<"
            }
        } else if cfg!(target_endian = "big") {
            "@"
        } else {
            ">"
        };
        // A native type keeps its native size ('@'); a swapped one uses the
        // standard size of its code, which ctypes also uses.
        let ctypes_size: usize = ctypes
            .call_method1(intern!(py, "sizeof"), (t,))?
            .extract()?;
        let code = match (code.as_str(), order, ctypes_size) {
            ("l", "<" | ">", 8) => "q",
            ("L", "<" | ">", 8) => "Q",
            (c, _, _) => c,
        };
        let fmt = format!("{order}{code}");
        let mut parsed = parse_struct(py, &fmt, t.clone().into_any().unbind())?;
        if ctypes_size != parsed.size {
            return Err(PyValueError::new_err(format!(
                "ctypes.{type_name}: {ctypes_size} bytes, but struct format {fmt:?} has {}",
                parsed.size
            )));
        }
        parsed.shown = t.clone().into_any().unbind();
        return Ok(parsed);
    }
    if contains_pointer(t, 0)? {
        return Err(PyValueError::new_err(format!(
            "ctypes type {type_name} holds a pointer: pointers cannot be task local data"
        )));
    }
    let mut is_data = false;
    for d in &data_types {
        is_data |= t.is_subclass(d)?;
    }
    if !is_data {
        return Err(PyTypeError::new_err(format!(
            "expected {ACCEPTED}, got the type {type_name}"
        )));
    }
    let size: usize = ctypes
        .call_method1(intern!(py, "sizeof"), (t,))
        .map_err(|e| {
            struct_error_to_value_error(
                py,
                e,
                &format!("ctypes type {type_name} has no fixed size"),
            )
        })?
        .extract()?;
    let align: usize = ctypes
        .call_method1(intern!(py, "alignment"), (t,))?
        .extract()?;
    if size == 0 {
        return Err(PyValueError::new_err(format!(
            "ctypes type {type_name} has size 0"
        )));
    }
    if align > tld::abi::VALUE_ALIGN {
        return Err(PyValueError::new_err(format!(
            "ctypes type {type_name} needs {align}-byte alignment; values are {}-byte aligned",
            tld::abi::VALUE_ALIGN
        )));
    }
    Ok(Format {
        kind: Kind::CType,
        size,
        shown: t.clone().into_any().unbind(),
        codec: Some(t.clone().into_any().unbind()),
    })
}

/// Whether a ctypes type is or holds a pointer (through structure fields,
/// union members and array elements).
fn contains_pointer(t: &Bound<'_, PyType>, depth: usize) -> PyResult<bool> {
    let py = t.py();
    let ctypes = py.import(intern!(py, "ctypes"))?;
    if depth > 32 || t.is_subclass(&ctypes.getattr(intern!(py, "_Pointer"))?)? {
        return Ok(true);
    }
    if t.is_subclass(&ctypes.getattr(intern!(py, "_SimpleCData"))?)? {
        let code: String = t.getattr(intern!(py, "_type_"))?.extract()?;
        return Ok(matches!(code.as_str(), "z" | "Z" | "P" | "O"));
    }
    if t.is_subclass(&ctypes.getattr(intern!(py, "Array"))?)? {
        if let Ok(elem) = t.getattr(intern!(py, "_type_")) {
            if let Ok(elem) = elem.cast::<PyType>() {
                return contains_pointer(elem, depth + 1);
            }
        }
        return Ok(false);
    }
    if let Ok(fields) = t.getattr(intern!(py, "_fields_")) {
        for field in fields.try_iter()? {
            if let Ok(ft) = field?.get_item(1)?.cast::<PyType>() {
                if contains_pointer(ft, depth + 1)? {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}
