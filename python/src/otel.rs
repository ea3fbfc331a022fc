//! `tld._otel`: the native half of `tld.otel` (python/tld/otel.py), over
//! tld_otel (DESIGN §10): the calling thread's OTEP 4947 record, its scopes,
//! the attribute key map and the OTEP 4719 process context.
//!
//! Arguments are converted here (ids as bytes, hex str or int; attributes as
//! a dict of str), then tld_otel checks and writes them; what it refuses is
//! `TldError` with its errno (`EINVAL`, `E2BIG`, ...), nothing written.

use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use tld_otel::{SavedContext, SpanContext};

use crate::key;
use crate::scope::EnteredStack;
use crate::TldError;

/// Set once the record key exists: from then on a thread's first access
/// may freeze the data area.
static KEY_READY: AtomicBool = AtomicBool::new(false);

/// Creates the record key before the calling thread's first access to tld
/// data (which would freeze the data area without room for it), then makes
/// sure the thread's block is allocated and registered (GIL released).
#[inline]
fn ensure_registered(py: Python<'_>) -> PyResult<()> {
    if !KEY_READY.load(Ordering::Acquire) {
        tld_otel::record_key().map_err(otel_error)?;
        KEY_READY.store(true, Ordering::Release);
    }
    key::ensure_registered(py)
}

/// `tld_otel::Error` as `TldError(errno, message)`.
fn otel_error(e: tld_otel::Error) -> PyErr {
    TldError::new_err((e.errno(), e.message().to_string()))
}

fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type().name().map(|n| n.to_string()).unwrap_or_default()
}

/// An id of `N` bytes: bytes (or bytearray) of exactly `N`, a str of `2N`
/// hex digits, or an int below 2^(8N) (big-endian, as OpenTelemetry's API
/// holds ids and as the W3C hex form reads).
fn id<const N: usize>(v: &Bound<'_, PyAny>, what: &str) -> PyResult<[u8; N]> {
    if v.is_instance_of::<PyInt>() && !v.is_instance_of::<PyBool>() {
        let n: u128 = v.extract().map_err(|_| {
            PyValueError::new_err(format!("{what} {}: an int id must be in 0..2**{}", v.repr().map(|r| r.to_string()).unwrap_or_default(), N * 8))
        })?;
        if N < 16 && n >> (N * 8) != 0 {
            return Err(PyValueError::new_err(format!("{what} {n:#x}: an int id must be in 0..2**{}", N * 8)));
        }
        let mut out = [0u8; N];
        out.copy_from_slice(&n.to_be_bytes()[16 - N..]);
        return Ok(out);
    }
    if let Ok(b) = v.cast::<PyBytes>() {
        return id_bytes(b.as_bytes(), what);
    }
    if let Ok(b) = v.cast::<PyByteArray>() {
        return id_bytes(&b.to_vec(), what);
    }
    if let Ok(s) = v.cast::<PyString>() {
        let s = s.to_cow()?;
        let hex = s.as_bytes();
        if hex.len() != 2 * N {
            return Err(PyValueError::new_err(format!(
                "{what} {s:?}: a hex id has {} digits, not {}",
                2 * N,
                hex.len()
            )));
        }
        let mut out = [0u8; N];
        for (i, pair) in hex.chunks(2).enumerate() {
            let digit = |c: u8| (c as char).to_digit(16);
            match (digit(pair[0]), digit(pair[1])) {
                (Some(h), Some(l)) => out[i] = (h * 16 + l) as u8,
                _ => return Err(PyValueError::new_err(format!("{what} {s:?}: not a hex string"))),
            }
        }
        return Ok(out);
    }
    Err(PyTypeError::new_err(format!("{what} must be bytes, a hex str or an int, not {}", type_name(v))))
}

fn id_bytes<const N: usize>(b: &[u8], what: &str) -> PyResult<[u8; N]> {
    b.try_into()
        .map_err(|_| PyValueError::new_err(format!("{what}: {} bytes, an id has exactly {N}", b.len())))
}

fn span_context(trace_id: &Bound<'_, PyAny>, span_id: &Bound<'_, PyAny>, flags: i64) -> PyResult<SpanContext> {
    let flags = u8::try_from(flags)
        .map_err(|_| PyValueError::new_err(format!("flags {flags}: W3C trace flags are one byte (0..=255)")))?;
    Ok(SpanContext::new(id::<16>(trace_id, "trace_id")?, id::<8>(span_id, "span_id")?, flags))
}

/// The attributes: None, or a dict of str names to str values.
fn attribute_pairs<'py>(attrs: Option<&Bound<'py, PyAny>>) -> PyResult<Vec<(Bound<'py, PyString>, Bound<'py, PyString>)>> {
    let Some(attrs) = attrs.filter(|a| !a.is_none()) else {
        return Ok(Vec::new());
    };
    let dict = attrs
        .cast::<PyDict>()
        .map_err(|_| PyTypeError::new_err(format!("attributes must be a dict of str to str, not {}", type_name(attrs))))?;
    let mut out = Vec::with_capacity(dict.len());
    for (k, v) in dict.iter() {
        let k = k.cast_into::<PyString>().map_err(|e| {
            PyTypeError::new_err(format!("attribute names must be str, not {}", type_name(&e.into_inner())))
        })?;
        let v = v.cast_into::<PyString>().map_err(|e| {
            PyTypeError::new_err(format!(
                "attribute {:?}: values must be str, not {}",
                k.to_string(),
                type_name(&e.into_inner())
            ))
        })?;
        out.push((k, v));
    }
    Ok(out)
}

/// Publishes a span context and attributes on the calling thread.
fn publish(py: Python<'_>, span: &SpanContext, attrs: &[(Bound<'_, PyString>, Bound<'_, PyString>)]) -> PyResult<()> {
    ensure_registered(py)?;
    if attrs.is_empty() {
        return tld_otel::set(span, &[]).map_err(otel_error);
    }
    let strs: Vec<(std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)> =
        attrs.iter().map(|(k, v)| Ok((k.to_cow()?, v.to_cow()?))).collect::<PyResult<_>>()?;
    let pairs: Vec<(&str, &str)> = strs.iter().map(|(k, v)| (&**k, &**v)).collect();
    tld_otel::set(span, &pairs).map_err(otel_error)
}

/// Publishes the calling thread's context (see tld/_otel.pyi).
#[pyfunction]
#[pyo3(signature = (trace_id, span_id, flags=1, attributes=None))]
fn set(
    py: Python<'_>,
    trace_id: &Bound<'_, PyAny>,
    span_id: &Bound<'_, PyAny>,
    flags: i64,
    attributes: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let span = span_context(trace_id, span_id, flags)?;
    publish(py, &span, &attribute_pairs(attributes)?)
}

/// Marks the calling thread's record invalid; its TLS pointer becomes NULL.
#[pyfunction]
fn clear(py: Python<'_>) -> PyResult<()> {
    ensure_registered(py)?;
    tld_otel::clear().map_err(otel_error)
}

/// The calling thread's record when valid: (trace_id, span_id, flags,
/// [(name, value), ...]) with names resolved through the key map; else None.
#[pyfunction]
fn current(py: Python<'_>) -> PyResult<Option<Bound<'_, PyTuple>>> {
    ensure_registered(py)?;
    let rec = tld_otel::current().map_err(otel_error)?;
    if !rec.valid {
        return Ok(None);
    }
    let names = tld_otel::attribute_keys().map_err(otel_error)?;
    let attrs = PyList::empty(py);
    for (index, value) in &rec.attributes {
        let name = names.get(*index as usize).cloned().unwrap_or_else(|| format!("#{index}"));
        attrs.append((name, String::from_utf8_lossy(value).into_owned()))?;
    }
    let t = (
        PyBytes::new(py, &rec.span.trace_id),
        PyBytes::new(py, &rec.span.span_id),
        rec.span.trace_flags,
        attrs,
    );
    Ok(Some(t.into_pyobject(py)?))
}

/// Sets the size of every thread's record before the key exists.
#[pyfunction]
fn set_record_size(n: &Bound<'_, PyAny>) -> PyResult<()> {
    let n: i128 = n.extract()?;
    let n = usize::try_from(n).map_err(|_| PyValueError::new_err(format!("a record size is a number of bytes, not {n}")))?;
    tld_otel::set_record_size(n).map_err(otel_error)
}

/// The record size, creating the record key if it does not exist.
#[pyfunction]
fn record_size() -> PyResult<usize> {
    tld_otel::record_key().map(|k| k.size()).map_err(otel_error)
}

/// Registers (or finds) an attribute name in the key map: its index.
#[pyfunction]
fn attribute_key(name: &Bound<'_, PyAny>) -> PyResult<u8> {
    let name = name
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err(format!("an attribute name must be a str, not {}", type_name(name))))?;
    tld_otel::AttributeKey::register(&name.to_cow()?).map(|k| k.index()).map_err(otel_error)
}

/// The key map: names by index.
#[pyfunction]
fn attribute_keys() -> PyResult<Vec<String>> {
    tld_otel::attribute_keys().map_err(otel_error)
}

/// Publishes the OTEP 4719 process context with these resource attributes.
#[pyfunction]
fn publish_process_context(attributes: &Bound<'_, PyAny>) -> PyResult<()> {
    let dict = attributes.cast::<PyDict>().map_err(|_| {
        PyTypeError::new_err(format!("publish_process_context() takes a dict of str to str, bool, int or float, not {}", type_name(attributes)))
    })?;
    let mut keys = Vec::with_capacity(dict.len());
    let mut strings = Vec::with_capacity(dict.len());
    enum V {
        S(usize),
        B(bool),
        I(i64),
        D(f64),
    }
    let mut values = Vec::with_capacity(dict.len());
    for (k, v) in dict.iter() {
        let k = k
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err(format!("resource attribute names must be str, not {}", type_name(&k))))?
            .to_cow()?
            .into_owned();
        let val = if let Ok(s) = v.cast::<PyString>() {
            strings.push(s.to_cow()?.into_owned());
            V::S(strings.len() - 1)
        } else if let Ok(b) = v.cast::<PyBool>() {
            V::B(b.is_true())
        } else if v.is_instance_of::<PyInt>() {
            V::I(v.extract::<i64>().map_err(|_| {
                PyValueError::new_err(format!("resource attribute {k:?}: {} does not fit an int64", v.repr().map(|r| r.to_string()).unwrap_or_default()))
            })?)
        } else if let Ok(f) = v.cast::<PyFloat>() {
            V::D(f.value())
        } else {
            return Err(PyTypeError::new_err(format!(
                "resource attribute {k:?}: values must be str, bool, int or float, not {}",
                type_name(&v)
            )));
        };
        keys.push(k);
        values.push(val);
    }
    let attrs: Vec<(&str, tld_otel::ResourceValue<'_>)> = keys
        .iter()
        .zip(&values)
        .map(|(k, v)| {
            let v = match *v {
                V::S(i) => tld_otel::ResourceValue::String(&strings[i]),
                V::B(b) => tld_otel::ResourceValue::Bool(b),
                V::I(i) => tld_otel::ResourceValue::Int(i),
                V::D(d) => tld_otel::ResourceValue::Double(d),
            };
            (k.as_str(), v)
        })
        .collect();
    tld_otel::publish_process_context(&attrs).map_err(otel_error)
}

/// Sets `threadlocal.schema_version` and republishes the process context.
#[pyfunction]
fn set_schema_version(version: &str) -> PyResult<()> {
    tld_otel::set_schema_version(version).map_err(otel_error)
}

/// Whether this module's `otel_thread_ctx_v1` is the process's live symbol.
#[pyfunction]
fn owns_live_symbol() -> PyResult<bool> {
    tld_otel::owns_live_symbol().map_err(otel_error)
}

/// A context manager publishing a span context on entry and putting the
/// calling thread's previous record back on exit, exceptions included.
/// Reusable and nestable; each entry restores what it saw.
#[pyclass(module = "tld._otel", name = "Scope")]
pub struct Scope {
    span: SpanContext,
    attrs: Vec<(Py<PyString>, Py<PyString>)>,
    entered: EnteredStack<Box<SavedContext>>,
}

#[pymethods]
impl Scope {
    fn __enter__(mut slf: PyRefMut<'_, Self>) -> PyResult<PyRefMut<'_, Self>> {
        let py = slf.py();
        ensure_registered(py)?;
        let saved = Box::new(SavedContext::save().map_err(otel_error)?);
        let attrs: Vec<_> = slf.attrs.iter().map(|(k, v)| (k.bind(py).clone(), v.bind(py).clone())).collect();
        publish(py, &slf.span, &attrs)?;
        slf.entered.push(saved);
        Ok(slf)
    }

    #[pyo3(signature = (*exc_info))]
    #[allow(unused_variables)]
    fn __exit__(mut slf: PyRefMut<'_, Self>, exc_info: &Bound<'_, PyTuple>) -> PyResult<()> {
        let py = slf.py();
        let saved = slf.entered.pop("tld.otel scope", "records")?;
        ensure_registered(py)?;
        saved.restore().map_err(otel_error)
    }

    fn __repr__(&self) -> String {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        format!(
            "tld.otel.scoped({:?}, {:?}, flags={}, {} attribute(s))",
            hex(&self.span.trace_id),
            hex(&self.span.span_id),
            self.span.trace_flags,
            self.attrs.len()
        )
    }
}

/// A Scope for this span context; checked now, published on entry.
#[pyfunction]
#[pyo3(signature = (trace_id, span_id, flags=1, attributes=None))]
fn scoped(
    trace_id: &Bound<'_, PyAny>,
    span_id: &Bound<'_, PyAny>,
    flags: i64,
    attributes: Option<&Bound<'_, PyAny>>,
) -> PyResult<Scope> {
    let span = span_context(trace_id, span_id, flags)?;
    let attrs = attribute_pairs(attributes)?.into_iter().map(|(k, v)| (k.unbind(), v.unbind())).collect();
    Ok(Scope { span, attrs, entered: EnteredStack::new() })
}

/// Builds the `tld._otel` submodule and registers it in `sys.modules`.
pub fn register(parent: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = parent.py();
    let m = PyModule::new(py, "tld._otel")?;
    m.add("RECORD_KEY", tld_otel::RECORD_KEY)?;
    m.add("DEFAULT_RECORD_SIZE", tld_otel::DEFAULT_RECORD_SIZE)?;
    m.add("MIN_RECORD_SIZE", tld_otel::MIN_RECORD_SIZE)?;
    m.add("MAX_RECORD_SIZE", tld_otel::MAX_RECORD_SIZE)?;
    m.add("MAX_ATTRIBUTE_VALUE", tld_otel::MAX_ATTRIBUTE_VALUE)?;
    m.add("MAX_ATTRIBUTE_KEYS", tld_otel::MAX_ATTRIBUTE_KEYS)?;
    m.add("RECORD_SIZE_ENV", tld_otel::RECORD_SIZE_ENV)?;
    m.add_class::<Scope>()?;
    m.add_function(wrap_pyfunction!(set, &m)?)?;
    m.add_function(wrap_pyfunction!(clear, &m)?)?;
    m.add_function(wrap_pyfunction!(current, &m)?)?;
    m.add_function(wrap_pyfunction!(scoped, &m)?)?;
    m.add_function(wrap_pyfunction!(set_record_size, &m)?)?;
    m.add_function(wrap_pyfunction!(record_size, &m)?)?;
    m.add_function(wrap_pyfunction!(attribute_key, &m)?)?;
    m.add_function(wrap_pyfunction!(attribute_keys, &m)?)?;
    m.add_function(wrap_pyfunction!(publish_process_context, &m)?)?;
    m.add_function(wrap_pyfunction!(set_schema_version, &m)?)?;
    m.add_function(wrap_pyfunction!(owns_live_symbol, &m)?)?;
    parent.add("_otel", &m)?;
    py.import("sys")?.getattr("modules")?.set_item("tld._otel", &m)?;
    Ok(())
}
