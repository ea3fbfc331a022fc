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

/// What one `__enter__` of a scope saved (`S`: here each key's previous
/// bytes, in the order the keys were set; a record for `tld.otel`'s scope)
/// and the thread it ran on.
pub(crate) struct Entered<S> {
    thread: ThreadId,
    saved: S,
}

/// A stack of entries of one scope object: nested or repeated `with` blocks.
pub(crate) struct EnteredStack<S>(Vec<Entered<S>>);

impl<S> EnteredStack<S> {
    pub(crate) fn new() -> Self {
        EnteredStack(Vec::new())
    }

    /// Records an entry made on the calling thread.
    pub(crate) fn push(&mut self, saved: S) {
        self.0.push(Entered { thread: std::thread::current().id(), saved });
    }

    /// The matching entry's saved state, if it was made on the calling thread:
    /// saved state is another thread's otherwise, and writing it here would
    /// set this thread's values instead of restoring that one's. `what` names
    /// the scope ("tld scope"), `held` what belongs to threads ("values").
    pub(crate) fn pop(&mut self, what: &str, held: &str) -> PyResult<S> {
        let Some(entered) = self.0.pop() else {
            return Err(PyRuntimeError::new_err(format!("{what} exited without being entered")));
        };
        if entered.thread != std::thread::current().id() {
            return Err(PyRuntimeError::new_err(format!(
                "{what} exited on another thread than it was entered on: {held} belong to OS threads, \
                 and the entering thread's were not restored"
            )));
        }
        Ok(entered.saved)
    }
}

/// A context manager that sets keys on entry and restores their previous
/// values on exit (exceptions included). Reusable and nestable; each entry
/// restores what it saw.
#[pyclass(module = "tld._tld", name = "Scope")]
pub struct Scope {
    values: Vec<(Py<Key>, Py<PyAny>)>,
    entered: EnteredStack<Vec<Vec<u8>>>,
}

impl Scope {
    pub fn one(key: Py<Key>, value: Py<PyAny>) -> Scope {
        Scope { values: vec![(key, value)], entered: EnteredStack::new() }
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
        slf.entered.push(saved);
        Ok(slf)
    }

    /// Restores the values saved by the matching `__enter__`. Never
    /// suppresses the block's exception.
    #[pyo3(signature = (*exc_info))]
    #[allow(unused_variables)]
    fn __exit__(mut slf: PyRefMut<'_, Self>, exc_info: &Bound<'_, PyTuple>) -> PyResult<()> {
        let py = slf.py();
        let saved = slf.entered.pop("tld scope", "values")?;
        slf.restore(py, &saved)
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
    Ok(Scope { values: pairs, entered: EnteredStack::new() })
}
