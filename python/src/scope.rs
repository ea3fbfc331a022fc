//! `Key.scoped(value)` and `tld.scoped({key: value, ...})`: set values for the
//! duration of a `with` block and put the previous ones back on exit.
//!
//! Values belong to OS threads, not to coroutines or requests: a scope is the
//! way to give a value a lifetime shorter than the thread's. The previous
//! values are saved as bytes, so every format restores exactly.

use std::thread::ThreadId;

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::key::Key;

/// What one `__enter__` saved: the thread it ran on and each key's previous
/// bytes, in the order the keys were set.
struct Entered {
    thread: ThreadId,
    saved: Vec<Vec<u8>>,
}

/// A context manager that sets keys on entry and restores their previous
/// values on exit (exceptions included). Reusable and nestable; each entry
/// restores what it saw.
#[pyclass(module = "tld._tld", name = "Scope")]
pub struct Scope {
    values: Vec<(Py<Key>, Py<PyAny>)>,
    entered: Vec<Entered>,
}

impl Scope {
    pub fn one(key: Py<Key>, value: Py<PyAny>) -> Scope {
        Scope { values: vec![(key, value)], entered: Vec::new() }
    }

    /// Puts back `saved[..n]` in reverse order: a key given twice ends with
    /// the value it had before the first.
    fn restore(&self, py: Python<'_>, saved: &[Vec<u8>]) -> PyResult<()> {
        let mut first_err = None;
        for ((key, _), old) in self.values.iter().zip(saved).rev() {
            if let Err(e) = key.get().restore_bytes(py, old) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

#[pymethods]
impl Scope {
    /// Saves each key's current value, then sets the new ones. A value that
    /// does not fit raises (ValueError/TypeError, as Key.set) after putting
    /// back the keys already set: entry is all or nothing.
    fn __enter__(mut slf: PyRefMut<'_, Self>) -> PyResult<PyRefMut<'_, Self>> {
        let py = slf.py();
        let mut saved = Vec::with_capacity(slf.values.len());
        for (key, _) in &slf.values {
            saved.push(key.get().snapshot(py)?);
        }
        for (i, (key, value)) in slf.values.iter().enumerate() {
            if let Err(e) = key.get().set(py, value.bind(py)) {
                slf.restore(py, &saved[..i])?;
                return Err(e);
            }
        }
        let thread = std::thread::current().id();
        slf.entered.push(Entered { thread, saved });
        Ok(slf)
    }

    /// Restores the values saved by the matching `__enter__`. Never
    /// suppresses the block's exception.
    #[pyo3(signature = (*exc_info))]
    #[allow(unused_variables)]
    fn __exit__(mut slf: PyRefMut<'_, Self>, exc_info: &Bound<'_, PyTuple>) -> PyResult<()> {
        let py = slf.py();
        let Some(entered) = slf.entered.pop() else {
            return Err(PyRuntimeError::new_err("tld scope exited without being entered"));
        };
        if entered.thread != std::thread::current().id() {
            // The saved values are another thread's: writing them here would
            // set this thread's values instead of restoring that one's.
            return Err(PyRuntimeError::new_err(
                "tld scope exited on another thread than it was entered on: \
                 values belong to OS threads, and the entering thread's were not restored",
            ));
        }
        slf.restore(py, &entered.saved)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let mut parts = Vec::new();
        for (key, value) in &self.values {
            parts.push(format!(
                "{}: {}",
                key.get().name_str(py),
                value.bind(py).repr()?
            ));
        }
        Ok(format!("tld.scoped({{{}}})", parts.join(", ")))
    }
}

/// `tld.scoped({key: value, ...})`: one scope over several keys.
#[pyfunction]
pub fn scoped(values: &Bound<'_, PyAny>) -> PyResult<Scope> {
    let dict = values.cast::<PyDict>().map_err(|_| {
        PyTypeError::new_err("tld.scoped() takes a dict {key: value, ...} of tld.Key objects")
    })?;
    let mut pairs = Vec::with_capacity(dict.len());
    for (k, v) in dict.iter() {
        let key = k.cast::<Key>().map_err(|_| {
            let ty = k.get_type().name().map(|n| n.to_string()).unwrap_or_default();
            PyTypeError::new_err(format!("tld.scoped(): the dict's keys must be tld.Key objects, not {ty}"))
        })?;
        pairs.push((key.clone().unbind(), v.unbind()));
    }
    Ok(Scope { values: pairs, entered: Vec::new() })
}
