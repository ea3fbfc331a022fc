//! `tld._tld`: the Python extension module of tld (task local data).
//!
//! The Python package `tld` (python/tld/__init__.py) re-exports this module;
//! its stubs are python/tld/_tld.pyi. Semantics are the core's (DESIGN §3):
//! this crate converts names, formats and values, and turns `tld::Error`
//! into `tld.TldError` (an `OSError` with `errno` set and the core's message).

mod format;
mod key;
mod otel;
mod scope;

use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use pyo3::exceptions::{PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};

use key::{Baseline, Key, ATTACH_EPOCH};

pyo3::create_exception!(
    tld,
    TldError,
    PyOSError,
    "An error of the tld runtime: an OSError whose errno says what failed\n\
     (EEXIST, E2BIG, ENOSPC, EINVAL, ENAMETOOLONG, ENOENT, EBUSY, EPERM, ...)\n\
     and whose message names the key or map and the cause."
);

/// `tld::Error` as `TldError(errno, message)`.
pub(crate) fn tld_error(e: tld::Error) -> PyErr {
    TldError::new_err((e.errno(), e.to_string()))
}

/// A key name: a str, given to the core as UTF-8 bytes (the core counts the
/// 61-byte limit in bytes and rejects NUL bytes).
fn key_name<'py>(name: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyString>> {
    name.cast::<PyString>().cloned().map_err(|_| {
        let ty = name
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        PyTypeError::new_err(format!("a key name must be a str, not {ty}"))
    })
}

fn make_key(
    name: &Bound<'_, PyAny>,
    size_or_format: &Bound<'_, PyAny>,
    create: fn(&str, usize) -> tld::Result<tld::RawKey>,
) -> PyResult<Key> {
    let name = key_name(name)?;
    let fmt = format::parse(size_or_format)?;
    // Sizes of 0 or larger than a block are the core's errors (EINVAL).
    let raw = create(&name.to_cow()?, fmt.size).map_err(tld_error)?;
    Ok(Key::new(raw, name.unbind(), fmt))
}

// Python keys are the core's static keys: while no thread of the process has
// touched its data they grow every thread block (like C's `TLD_DEFINE_KEY` or
// a Rust `static_key!`), so keys made at import time leave the dynamic reserve
// alone; afterwards they come out of the reserve. The docstrings (`///`, what
// `help()` shows) summarize the stubs' (python/tld/_tld.pyi).

/// Creates a key, strictly: TldError EEXIST if the name exists, E2BIG if it
/// does not fit, ENOSPC when no slot is left. size_or_format: a size in
/// bytes, a struct format or a ctypes type.
#[pyfunction]
fn create_key(name: &Bound<'_, PyAny>, size_or_format: &Bound<'_, PyAny>) -> PyResult<Key> {
    make_key(name, size_or_format, |n, s| {
        tld::RawKey::create_static(n, s)
    })
}

/// Returns the key of that name if it exists with the same size (TldError
/// EEXIST if with another), else creates it: how two libraries or languages
/// share a value.
#[pyfunction(name = "key")]
fn get_or_create_key(name: &Bound<'_, PyAny>, size_or_format: &Bound<'_, PyAny>) -> PyResult<Key> {
    make_key(name, size_or_format, |n, s| {
        tld::RawKey::get_or_create_static(n, s)
    })
}

/// Finds an existing key (TldError ENOENT if none). Without a format it holds
/// raw bytes; with one, the sizes must agree (else TldError EEXIST).
#[pyfunction]
#[pyo3(signature = (name, size_or_format=None))]
fn find_key(name: &Bound<'_, PyAny>, size_or_format: Option<&Bound<'_, PyAny>>) -> PyResult<Key> {
    let name = key_name(name)?;
    let s = &*name.to_cow()?;
    let fmt = match size_or_format {
        Some(f) if !f.is_none() => Some(format::parse(f)?),
        _ => None,
    };
    let raw = tld::RawKey::find(s).map_err(tld_error)?;
    let fmt = match fmt {
        Some(fmt) => {
            if fmt.size != raw.size() {
                return Err(tld_error(tld::Error::SizeMismatch {
                    name: s.to_string(),
                    existing: raw.size(),
                    requested: fmt.size,
                }));
            }
            fmt
        }
        None => format::Format {
            kind: format::Kind::Bytes,
            size: raw.size(),
            shown: name.py().None(),
            codec: None,
        },
    };
    Ok(Key::new(raw, name.unbind(), fmt))
}

/// Every published key, in slot order, as raw-bytes keys.
#[pyfunction]
fn keys(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    let all = tld::keys().map_err(tld_error)?;
    let list = PyList::empty(py);
    for (name, raw) in all {
        let fmt = format::Format {
            kind: format::Kind::Bytes,
            size: raw.size(),
            shown: py.None(),
            codec: None,
        };
        list.append(Key::new(raw, PyString::new(py, &name).unbind(), fmt))?;
    }
    Ok(list)
}

/// Attaches a tld_data_map that BPF programs read: the map pinned at path, the
/// map behind fd, or by default the one at $TLD_MAP_PATH, else
/// /sys/fs/bpf/tld/tld_data_map. Threads register with it on their next access.
#[pyfunction]
#[pyo3(signature = (path=None, *, fd=None))]
fn attach(py: Python<'_>, path: Option<PathBuf>, fd: Option<i64>) -> PyResult<()> {
    let result = match (path, fd) {
        (Some(_), Some(_)) => {
            return Err(PyTypeError::new_err(
                "attach() takes a path or fd=, not both",
            ))
        }
        (Some(path), None) => py.detach(|| tld::attach_path(&path)),
        (None, Some(fd)) => {
            let fd = i32::try_from(fd)
                .ok()
                .filter(|&fd| fd >= 0)
                .ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "fd must be a non-negative file descriptor, not {fd}"
                    ))
                })?;
            // SAFETY: the core only duplicates the fd during the call; the
            // caller keeps ownership (a closed fd is the core's EBADF error).
            py.detach(|| tld::attach_fd(unsafe { BorrowedFd::borrow_raw(fd) }))
        }
        (None, None) => py.detach(tld::attach_default),
    };
    result.map_err(tld_error)?;
    // Threads that already have a block register with the new map on their
    // next access, which makes system calls: let them release the GIL.
    ATTACH_EPOCH.fetch_add(1, Ordering::AcqRel);
    // This extension exports otel_thread_ctx_v1: make it the process's live
    // symbol now, so threads that publish OpenTelemetry context through a
    // library whose symbol is hidden (C++, Go) are found by OTEP 4947
    // readers even if Python never publishes (DESIGN §10.5).
    tld_otel::claim_live_symbol();
    Ok(())
}

/// Checks every map attached by path against its pin now, and follows a
/// replaced pin: the new map is attached, every live thread registered with
/// it, the old map detached. A watcher thread does the same within about a
/// second unless TLD_PIN_WATCH=0 was set.
#[pyfunction]
fn refresh(py: Python<'_>) -> PyResult<()> {
    py.detach(tld::refresh).map_err(tld_error)?;
    // A thread the runtime could not register itself does so on its next access.
    ATTACH_EPOCH.fetch_add(1, Ordering::AcqRel);
    Ok(())
}

/// Sets the bytes every thread block keeps for keys created after the first
/// thread touched its data (default 64). TldError EBUSY once that happened.
#[pyfunction]
fn set_dynamic_reserve(nbytes: &Bound<'_, PyAny>) -> PyResult<()> {
    let n: i128 = nbytes.extract()?;
    let n = usize::try_from(n).map_err(|_| {
        PyValueError::new_err(format!("the reserve must be a size in bytes, not {n}"))
    })?;
    tld::set_dynamic_reserve(n).map_err(tld_error)
}

/// The path attach() uses by default: $TLD_MAP_PATH, else /sys/fs/bpf/tld/tld_data_map.
#[pyfunction]
fn default_map_path() -> String {
    tld::default_map_path().to_string_lossy().into_owned()
}

/// A snapshot of the process's tld runtime.
#[pyclass(frozen, module = "tld._tld", name = "RuntimeStats", get_all)]
struct RuntimeStats {
    meta_page: usize,
    page_size: usize,
    live_blocks: usize,
    attached_maps: usize,
    data_size: usize,
    frozen: bool,
}

#[pymethods]
impl RuntimeStats {
    fn __repr__(&self) -> String {
        format!(
            "RuntimeStats(meta_page={:#x}, page_size={}, live_blocks={}, attached_maps={}, data_size={}, frozen={})",
            self.meta_page,
            self.page_size,
            self.live_blocks,
            self.attached_maps,
            self.data_size,
            if self.frozen { "True" } else { "False" }
        )
    }
}

/// Creates or joins the runtime and describes it.
#[pyfunction]
fn runtime_stats() -> PyResult<RuntimeStats> {
    let s = tld::runtime_stats().map_err(tld_error)?;
    Ok(RuntimeStats {
        meta_page: s.meta_page,
        page_size: s.page_size,
        live_blocks: s.live_blocks,
        attached_maps: s.attached_maps,
        data_size: s.data_size,
        frozen: s.frozen,
    })
}

// Not tested on a free-threaded CPython: such a build re-enables the GIL
// (with a warning) when it imports this module.
#[pymodule(gil_used = true)]
fn _tld(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("TldError", py.get_type::<TldError>())?;
    m.add("DEFAULT_DYNAMIC_RESERVE", tld::DEFAULT_DYNAMIC_RESERVE)?;
    m.add("MAX_NAME_BYTES", tld::abi::MAX_NAME_BYTES)?;
    m.add_class::<Key>()?;
    m.add_class::<RuntimeStats>()?;
    m.add_class::<Baseline>()?;
    m.add_function(wrap_pyfunction!(attach, m)?)?;
    m.add_function(wrap_pyfunction!(create_key, m)?)?;
    m.add_function(wrap_pyfunction!(get_or_create_key, m)?)?;
    m.add_function(wrap_pyfunction!(find_key, m)?)?;
    m.add_function(wrap_pyfunction!(keys, m)?)?;
    m.add_function(wrap_pyfunction!(set_dynamic_reserve, m)?)?;
    m.add_function(wrap_pyfunction!(refresh, m)?)?;
    m.add_function(wrap_pyfunction!(default_map_path, m)?)?;
    m.add_function(wrap_pyfunction!(runtime_stats, m)?)?;
    m.add_class::<scope::Scope>()?;
    m.add_function(wrap_pyfunction!(scope::scoped, m)?)?;
    // tld.otel's native half, the submodule tld._otel (python/tld/otel.py).
    otel::register(m)?;
    // The public names (pyo3 would list everything added, _Baseline too).
    let public = [
        "__version__",
        "DEFAULT_DYNAMIC_RESERVE",
        "Key",
        "MAX_NAME_BYTES",
        "RuntimeStats",
        "TldError",
        "attach",
        "create_key",
        "default_map_path",
        "find_key",
        "key",
        "keys",
        "runtime_stats",
        "Scope",
        "scoped",
        "refresh",
        "set_dynamic_reserve",
    ];
    m.setattr("__all__", PyList::new(py, public)?)?;
    Ok(())
}
