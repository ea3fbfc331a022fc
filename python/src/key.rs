//! `tld.Key`: one key, acting on the calling thread's value.
//!
//! The hot path (`get`/`set` on a thread that already has its block) holds
//! the GIL, makes no system call and does not call into Python for the fixed
//! formats: a thread-local check, the core's cached data pointer, one store.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyFloat, PyInt, PyMemoryView, PyString, PyTuple};

use crate::format::{Format, Kind};
use crate::scope::Scope;
use crate::tld_error;

/// Bumped by every `tld.attach`: a thread whose last first-access predates
/// it registers with the new map on its next access, with system calls.
pub static ATTACH_EPOCH: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The `ATTACH_EPOCH` at which this thread last made sure its block is
    /// allocated and registered; 0 before its first access.
    static REGISTERED_AT: Cell<u64> = const { Cell::new(0) };
}

/// Makes sure the calling thread's block is allocated and registered with
/// every attached map, as `thread_data` does, for code that reaches the data
/// through another crate (tld_otel): the GIL is released meanwhile.
#[inline]
pub fn ensure_registered(py: Python<'_>) -> PyResult<()> {
    let epoch = ATTACH_EPOCH.load(Ordering::Acquire);
    if REGISTERED_AT.with(Cell::get) != epoch {
        py.detach(|| tld::thread_data().map(|p| p.as_ptr() as usize))
            .map_err(tld_error)?;
        REGISTERED_AT.with(|r| r.set(epoch));
    }
    Ok(())
}

/// The calling thread's data area. A first access (allocation and map
/// registration: mmap, pidfd_open, bpf) runs with the GIL released, so other
/// Python threads keep running; afterwards it is the core's cached pointer.
#[inline]
pub fn thread_data(py: Python<'_>) -> PyResult<*mut u8> {
    let epoch = ATTACH_EPOCH.load(Ordering::Acquire);
    if REGISTERED_AT.with(Cell::get) != epoch {
        py.detach(|| tld::thread_data().map(|p| p.as_ptr() as usize))
            .map_err(tld_error)?;
        REGISTERED_AT.with(|r| r.set(epoch));
    }
    tld::thread_data().map(|p| p.as_ptr()).map_err(tld_error)
}

/// A key: a name, a size and an offset shared by every thread of the
/// process (and by BPF and other languages through the name). `get`, `set`,
/// `view` and `address` act on the calling thread's value.
#[pyclass(frozen, module = "tld._tld", name = "Key")]
pub struct Key {
    raw: tld::RawKey,
    name: Py<PyString>,
    kind: Kind,
    format: Py<PyAny>,
    codec: Option<Py<PyAny>>,
}

impl Key {
    pub fn new(raw: tld::RawKey, name: Py<PyString>, format: Format) -> Key {
        Key {
            raw,
            name,
            kind: format.kind,
            format: format.shown,
            codec: format.codec,
        }
    }

    #[inline]
    fn ptr(&self, py: Python<'_>) -> PyResult<*mut u8> {
        // SAFETY: every published key lies inside every thread block's data area.
        Ok(unsafe { thread_data(py)?.add(self.raw.offset()) })
    }

    fn describe(&self, py: Python<'_>) -> String {
        let fmt = self.format.bind(py);
        let fmt = if fmt.is_none() {
            format!("{} raw bytes", self.raw.size())
        } else {
            fmt.repr().map(|r| r.to_string()).unwrap_or_default()
        };
        format!("key {:?} ({fmt})", self.name.bind(py).to_string())
    }

    fn does_not_fit(&self, py: Python<'_>, value: &Bound<'_, PyAny>, why: &str) -> PyErr {
        let shown = value
            .repr()
            .map(|r| r.to_string())
            .unwrap_or_else(|_| "the value".into());
        PyValueError::new_err(format!(
            "{}: {shown} does not fit: {why}",
            self.describe(py)
        ))
    }

    fn wrong_type(&self, py: Python<'_>, value: &Bound<'_, PyAny>, expected: &str) -> PyErr {
        let ty = value
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        PyTypeError::new_err(format!(
            "{}: expected {expected}, got {ty}",
            self.describe(py)
        ))
    }

    /// An integer value (ints and objects with `__index__`, not floats).
    #[inline]
    fn int<T: TryFrom<i128>>(&self, value: &Bound<'_, PyAny>, range: &str) -> PyResult<T> {
        let py = value.py();
        let v: i128 = if value.is_exact_instance_of::<PyInt>() {
            match value.extract::<i64>() {
                Ok(v) => v as i128,
                Err(_) => value
                    .extract::<i128>()
                    .map_err(|_| self.does_not_fit(py, value, range))?,
            }
        } else {
            // operator.index(): refuses floats on every Python version.
            let index = unsafe { pyo3::ffi::PyNumber_Index(value.as_ptr()) };
            if index.is_null() {
                PyErr::fetch(py);
                return Err(self.wrong_type(py, value, "an int"));
            }
            let index = unsafe { Bound::from_owned_ptr(py, index) };
            index
                .extract::<i128>()
                .map_err(|_| self.does_not_fit(py, value, range))?
        };
        T::try_from(v).map_err(|_| self.does_not_fit(py, value, range))
    }

    fn float(&self, value: &Bound<'_, PyAny>) -> PyResult<f64> {
        if value.is_exact_instance_of::<PyFloat>() {
            return value.extract::<f64>();
        }
        if value.is_instance_of::<PyString>() || value.is_instance_of::<PyBytes>() {
            return Err(self.wrong_type(value.py(), value, "a float"));
        }
        value
            .extract::<f64>()
            .map_err(|_| self.wrong_type(value.py(), value, "a float"))
    }

    fn bytes_value<'py>(
        &self,
        value: &Bound<'py, PyAny>,
        exact: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let py = value.py();
        let bytes = if let Ok(b) = value.cast::<PyBytes>() {
            b.clone()
        } else if value.is_instance_of::<PyByteArray>() || value.is_instance_of::<PyMemoryView>() {
            // bytes(value): a copy of any contiguous or strided buffer.
            let b = unsafe { pyo3::ffi::PyBytes_FromObject(value.as_ptr()) };
            if b.is_null() {
                return Err(PyErr::fetch(py));
            }
            unsafe { Bound::from_owned_ptr(py, b) }.cast_into::<PyBytes>()?
        } else {
            return Err(self.wrong_type(py, value, "bytes, bytearray or memoryview"));
        };
        let n = bytes.as_bytes().len();
        let size = self.raw.size();
        if n > size || (exact && n != size) {
            let want = if exact {
                format!("exactly {size} bytes")
            } else {
                format!("at most {size} bytes")
            };
            return Err(self.does_not_fit(py, value, &format!("{n} bytes, the key holds {want}")));
        }
        Ok(bytes)
    }

    /// Stores `bytes` (at most `size` bytes) and zeroes the rest of the value.
    fn store_bytes(&self, py: Python<'_>, bytes: &[u8]) -> PyResult<()> {
        let p = self.ptr(py)?;
        let size = self.raw.size();
        debug_assert!(bytes.len() <= size);
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
            std::ptr::write_bytes(p.add(bytes.len()), 0, size - bytes.len());
        }
        Ok(())
    }

    /// The calling thread's value as bytes, for a scope to restore.
    pub(crate) fn snapshot(&self, py: Python<'_>) -> PyResult<Vec<u8>> {
        let p = self.ptr(py)?;
        Ok(unsafe { std::slice::from_raw_parts(p, self.raw.size()) }.to_vec())
    }

    /// Puts back bytes that `snapshot` saved on this thread.
    pub(crate) fn restore_bytes(&self, py: Python<'_>, bytes: &[u8]) -> PyResult<()> {
        self.store_bytes(py, bytes)
    }

    pub(crate) fn name_str(&self, py: Python<'_>) -> String {
        self.name.bind(py).to_string()
    }

    fn load_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let p = self.ptr(py)?;
        Ok(PyBytes::new(py, unsafe {
            std::slice::from_raw_parts(p, self.raw.size())
        }))
    }
}

/// `PyBUF_WRITE` of `memoryobject.h` (part of the stable ABI; pyo3-ffi lacks it).
const PYBUF_WRITE: std::os::raw::c_int = 0x200;

#[inline]
unsafe fn store<T>(p: *mut u8, v: T) {
    // Volatile: BPF reads the value from another context at any time.
    unsafe { std::ptr::write_volatile(p.cast::<T>(), v) }
}

#[inline]
unsafe fn load<T>(p: *mut u8) -> T {
    unsafe { std::ptr::read_volatile(p.cast::<T>()) }
}

#[pymethods]
impl Key {
    /// The key's name.
    #[getter]
    fn name(&self, py: Python<'_>) -> Py<PyString> {
        self.name.clone_ref(py)
    }

    /// The value's size in bytes.
    #[getter]
    fn size(&self) -> usize {
        self.raw.size()
    }

    /// The value's offset in every thread's data area (what BPF's key holds).
    #[getter]
    fn offset(&self) -> usize {
        self.raw.offset()
    }

    /// The key's metadata slot.
    #[getter]
    fn slot(&self) -> usize {
        self.raw.slot()
    }

    /// The format given when this key object was made: a struct format
    /// string, a ctypes type, or None for raw bytes.
    #[getter]
    fn format(&self, py: Python<'_>) -> Py<PyAny> {
        self.format.clone_ref(py)
    }

    /// The calling thread's value, decoded with the key's format (zeros until
    /// the thread sets it).
    fn get(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let p = self.ptr(py)?;
        unsafe {
            Ok(match self.kind {
                Kind::I8 => load::<i8>(p).into_pyobject(py)?.into_any().unbind(),
                Kind::U8 => load::<u8>(p).into_pyobject(py)?.into_any().unbind(),
                Kind::I16 => load::<i16>(p).into_pyobject(py)?.into_any().unbind(),
                Kind::U16 => load::<u16>(p).into_pyobject(py)?.into_any().unbind(),
                Kind::I32 => load::<i32>(p).into_pyobject(py)?.into_any().unbind(),
                Kind::U32 => load::<u32>(p).into_pyobject(py)?.into_any().unbind(),
                Kind::I64 => load::<i64>(p).into_pyobject(py)?.into_any().unbind(),
                Kind::U64 => load::<u64>(p).into_pyobject(py)?.into_any().unbind(),
                Kind::F32 => (load::<f32>(p) as f64)
                    .into_pyobject(py)?
                    .into_any()
                    .unbind(),
                Kind::F64 => load::<f64>(p).into_pyobject(py)?.into_any().unbind(),
                Kind::Bool => PyBool::new(py, load::<u8>(p) != 0)
                    .to_owned()
                    .into_any()
                    .unbind(),
                Kind::Char | Kind::Bytes => self.load_bytes(py)?.into_any().unbind(),
                Kind::Struct { items } => {
                    let codec = self.codec.as_ref().expect("struct codec").bind(py);
                    let values =
                        codec.call_method1(intern!(py, "unpack"), (self.load_bytes(py)?,))?;
                    if items == 1 {
                        values.cast::<PyTuple>()?.get_item(0)?.unbind()
                    } else {
                        values.unbind()
                    }
                }
                Kind::CType => {
                    let codec = self.codec.as_ref().expect("ctypes type").bind(py);
                    codec
                        .call_method1(intern!(py, "from_buffer_copy"), (self.load_bytes(py)?,))?
                        .unbind()
                }
            })
        }
    }

    /// Sets the calling thread's value. A value that does not fit the format
    /// raises ValueError (TypeError for the wrong type) and is never
    /// truncated; the stored value is then unchanged.
    pub(crate) fn set(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        // Convert first, then find the pointer: a refused value leaves the
        // stored one alone, and Python code run by the conversion
        // (`__index__`) cannot outlive the pointer.
        unsafe {
            match self.kind {
                Kind::I8 => {
                    let v = self.int::<i8>(value, "range -128..127")?;
                    store(self.ptr(py)?, v)
                }
                Kind::U8 => {
                    let v = self.int::<u8>(value, "range 0..255")?;
                    store(self.ptr(py)?, v)
                }
                Kind::I16 => {
                    let v = self.int::<i16>(value, "range -32768..32767")?;
                    store(self.ptr(py)?, v)
                }
                Kind::U16 => {
                    let v = self.int::<u16>(value, "range 0..65535")?;
                    store(self.ptr(py)?, v)
                }
                Kind::I32 => {
                    let v = self.int::<i32>(value, "range -2**31..2**31-1")?;
                    store(self.ptr(py)?, v)
                }
                Kind::U32 => {
                    let v = self.int::<u32>(value, "range 0..2**32-1")?;
                    store(self.ptr(py)?, v)
                }
                Kind::I64 => {
                    let v = self.int::<i64>(value, "range -2**63..2**63-1")?;
                    store(self.ptr(py)?, v)
                }
                Kind::U64 => {
                    let v = self.int::<u64>(value, "range 0..2**64-1")?;
                    store(self.ptr(py)?, v)
                }
                Kind::F32 => {
                    let v = self.float(value)?;
                    if v.is_finite() && (v as f32).is_infinite() {
                        return Err(self.does_not_fit(
                            py,
                            value,
                            "out of the range of a 32-bit float",
                        ));
                    }
                    store(self.ptr(py)?, v as f32)
                }
                Kind::F64 => {
                    let v = self.float(value)?;
                    store(self.ptr(py)?, v)
                }
                Kind::Bool => {
                    let v = if let Ok(b) = value.cast::<PyBool>() {
                        b.is_true()
                    } else if value.is_instance_of::<PyInt>() {
                        match self.int::<u8>(value, "a bool is 0 or 1")? {
                            0 => false,
                            1 => true,
                            _ => return Err(self.does_not_fit(py, value, "a bool is 0 or 1")),
                        }
                    } else {
                        return Err(self.wrong_type(py, value, "a bool"));
                    };
                    store(self.ptr(py)?, v as u8)
                }
                Kind::Char => {
                    let b = self.bytes_value(value, true)?;
                    self.store_bytes(py, b.as_bytes())?
                }
                Kind::Bytes => {
                    let b = self.bytes_value(value, false)?;
                    self.store_bytes(py, b.as_bytes())?
                }
                Kind::Struct { items } => {
                    let codec = self.codec.as_ref().expect("struct codec").bind(py);
                    let packed = if items == 1 {
                        codec.call_method1(intern!(py, "pack"), (value,))
                    } else {
                        let Ok(values) = value.cast::<PyTuple>().cloned().or_else(|_| {
                            value
                                .extract::<Vec<Bound<'_, PyAny>>>()
                                .map(|v| PyTuple::new(py, v))
                                .and_then(|t| t)
                        }) else {
                            return Err(self.wrong_type(
                                py,
                                value,
                                &format!("a tuple of {items} values"),
                            ));
                        };
                        codec.call_method(intern!(py, "pack"), values, None)
                    };
                    let packed = packed.map_err(|e| {
                        // struct.error says "required argument is not an
                        // integer" where the fast path raises TypeError.
                        let text = e.value(py).to_string();
                        let wrong_type = e.is_instance_of::<PyTypeError>(py)
                            || text.contains("is not a")
                            || text.contains("must be a");
                        let err = if wrong_type {
                            PyTypeError::new_err(format!("{}: {}", self.describe(py), e.value(py)))
                        } else {
                            self.does_not_fit(py, value, &e.value(py).to_string())
                        };
                        err.set_cause(py, Some(e));
                        err
                    })?;
                    self.store_bytes(py, packed.cast::<PyBytes>()?.as_bytes())?
                }
                Kind::CType => {
                    let codec = self.codec.as_ref().expect("ctypes type").bind(py);
                    let b = if value.is_instance(codec)? {
                        let b = pyo3::ffi::PyBytes_FromObject(value.as_ptr());
                        if b.is_null() {
                            return Err(PyErr::fetch(py));
                        }
                        Bound::from_owned_ptr(py, b).cast_into::<PyBytes>()?
                    } else if value.is_instance_of::<PyBytes>()
                        || value.is_instance_of::<PyByteArray>()
                        || value.is_instance_of::<PyMemoryView>()
                    {
                        self.bytes_value(value, true)?
                    } else {
                        let name = codec.getattr(intern!(py, "__name__"))?.to_string();
                        return Err(self.wrong_type(
                            py,
                            value,
                            &format!("a ctypes {name} or {} bytes", self.raw.size()),
                        ));
                    };
                    self.store_bytes(py, b.as_bytes())?
                }
            }
        }
        Ok(())
    }

    /// A writable memoryview (format 'B') of the calling thread's value.
    /// Use it on this thread only. When the thread exits, the binding
    /// releases it (using it then raises ValueError) before the block goes
    /// back to the pool; views derived from it (cast, slices) are the
    /// caller's to drop first.
    fn view<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let p = self.ptr(py)?;
        let size = self.raw.size() as pyo3::ffi::Py_ssize_t;
        let mv = unsafe { pyo3::ffi::PyMemoryView_FromMemory(p.cast(), size, PYBUF_WRITE) };
        if mv.is_null() {
            return Err(PyErr::fetch(py));
        }
        let mv = unsafe { Bound::from_owned_ptr(py, mv) };
        thread_views::track(&mv)?;
        Ok(mv)
    }

    /// `Key[int]`: keys are generic for type checkers (the stubs say which
    /// value type each format gives); at run time the alias is Key itself.
    #[classmethod]
    fn __class_getitem__<'py>(
        cls: &Bound<'py, pyo3::types::PyType>,
        item: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = cls.py();
        py.import(intern!(py, "types"))?
            .getattr(intern!(py, "GenericAlias"))?
            .call1((cls, item))
    }

    /// A context manager that sets the calling thread's value on entry and
    /// restores the previous one on exit, exceptions included.
    fn scoped(slf: &Bound<'_, Self>, value: Py<PyAny>) -> Scope {
        Scope::one(slf.clone().unbind(), value)
    }

    /// The address of the calling thread's value, for ctypes
    /// (ctypes.c_int.from_address(key.address())). Valid on this thread
    /// only, until it exits.
    fn address(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.ptr(py)? as usize)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Key(name={}, format={}, size={}, offset={}, slot={})",
            self.name.bind(py).repr()?,
            self.format.bind(py).repr()?,
            self.raw.size(),
            self.raw.offset(),
            self.raw.slot()
        ))
    }
}

/// A pyo3 method call that does nothing: the floor the benchmark compares
/// Key.get/Key.set with. Not part of the API.
#[pyclass(frozen, module = "tld._tld", name = "_Baseline")]
pub struct Baseline;

#[pymethods]
impl Baseline {
    #[new]
    fn new() -> Self {
        Baseline
    }

    #[allow(unused_variables)]
    fn noop(&self, value: &Bound<'_, PyAny>) {}

    fn noop0(&self) {}
}

/// The memoryviews `Key.view` handed out on each thread, released when the
/// thread ends: a view kept past its thread would otherwise point into a
/// block the pool may give to another thread.
///
/// Python clears a thread's `threading.local` attributes when the thread
/// state is cleared, with the GIL held and before the OS thread's TLS
/// destructors release the block; the list lives there so its `Drop` runs
/// at that moment.
mod thread_views {
    use pyo3::prelude::*;
    use pyo3::sync::PyOnceLock;
    use pyo3::intern;

    #[pyclass(module = "tld._tld", name = "_ThreadViews")]
    pub struct ThreadViews {
        /// Weak references to the views (`weakref.ref`).
        views: Vec<Py<PyAny>>,
    }

    impl Drop for ThreadViews {
        fn drop(&mut self) {
            Python::attach(|py| {
                for weak in self.views.drain(..) {
                    if let Ok(view) = weak.bind(py).call0() {
                        if !view.is_none() {
                            // BufferError when something holds a buffer of
                            // the view itself: nothing more can be done.
                            if view.call_method0(intern!(py, "release")).is_err() {
                                PyErr::fetch(py);
                            }
                        }
                    }
                }
            });
        }
    }

    static LOCAL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

    pub fn track(view: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = view.py();
        let local = LOCAL
            .get_or_try_init(py, || -> PyResult<_> {
                Ok(py.import(intern!(py, "threading"))?.getattr(intern!(py, "local"))?.call0()?.unbind())
            })?
            .bind(py);
        let name = intern!(py, "views");
        let list = match local.getattr(name) {
            Ok(list) => list.cast_into::<ThreadViews>()?,
            Err(_) => {
                let list = Bound::new(py, ThreadViews { views: Vec::new() })?;
                local.setattr(name, &list)?;
                list
            }
        };
        let weak = py.import(intern!(py, "weakref"))?.getattr(intern!(py, "ref"))?.call1((view,))?;
        let mut list = list.borrow_mut();
        if list.views.len() >= 32 {
            // Forget views already gone, so a thread that makes many keeps
            // a short list.
            list.views.retain(|w| w.bind(py).call0().map(|v| !v.is_none()).unwrap_or(false));
        }
        list.views.push(weak.unbind());
        Ok(())
    }
}
