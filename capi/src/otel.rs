//! The C ABI of tld's OpenTelemetry support (`include/tld_otel.h`):
//! OTEP 4947 thread records and the OTEP 4719 process context, over the
//! `tld_otel` crate. Prefix `tld_otel_`, errors as `-errno` with the message
//! in `tld_last_error()`.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;

use tld_otel::{AttributeKey, Error, ResourceValue, SavedContext, SpanContext};

use crate::{set_message, tld_key_t};

/// `tld_otel_span_t`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct tld_otel_span_t {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub trace_flags: u8,
}

/// `tld_otel_attr_t`: an attribute by key name.
#[repr(C)]
pub struct tld_otel_attr_t {
    pub name: *const c_char,
    pub value: *const c_char,
}

/// `tld_otel_indexed_attr_t`: an attribute by key index.
#[repr(C)]
pub struct tld_otel_indexed_attr_t {
    pub key: u8,
    pub value: *const c_char,
}

/// `tld_otel_resource_attr_t`.
#[repr(C)]
pub struct tld_otel_resource_attr_t {
    pub key: *const c_char,
    pub kind: c_int,
    pub string_value: *const c_char,
    pub int_value: i64,
    pub double_value: f64,
    pub bool_value: bool,
}

const TLD_OTEL_STRING: c_int = 0;
const TLD_OTEL_BOOL: c_int = 1;
const TLD_OTEL_INT: c_int = 2;
const TLD_OTEL_DOUBLE: c_int = 3;

fn fail(e: &Error) -> c_int {
    set_message(&e.to_string());
    -e.errno()
}

fn status(r: tld_otel::Result<()>) -> c_int {
    r.map_or_else(|e| fail(&e), |()| 0)
}

/// A NUL-terminated UTF-8 string; `what` names it in the error.
unsafe fn text<'a>(s: *const c_char, what: &str) -> tld_otel::Result<&'a str> {
    if s.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    unsafe { CStr::from_ptr(s) }.to_str().map_err(|_| invalid(format!("{what} is not valid UTF-8")))
}

fn invalid(message: String) -> Error {
    Error::new(libc::EINVAL, message)
}

unsafe fn span_of(span: *const tld_otel_span_t) -> tld_otel::Result<SpanContext> {
    if span.is_null() {
        return Err(invalid("span is NULL".into()));
    }
    let s = unsafe { &*span };
    Ok(SpanContext::new(s.trace_id, s.span_id, s.trace_flags))
}

unsafe fn slice<'a, T>(p: *const T, n: usize, what: &str) -> tld_otel::Result<&'a [T]> {
    match (p.is_null(), n) {
        (_, 0) => Ok(&[]),
        (true, _) => Err(invalid(format!("{what} is NULL with a count of {n}"))),
        (false, _) => Ok(unsafe { std::slice::from_raw_parts(p, n) }),
    }
}

/// See tld_otel.h.
#[no_mangle]
pub extern "C" fn tld_otel_set_record_size(bytes: usize) -> c_int {
    status(tld_otel::set_record_size(bytes))
}

/// See tld_otel.h.
#[no_mangle]
pub extern "C" fn tld_otel_record_key() -> tld_key_t {
    match tld_otel::record_key() {
        Ok(k) => tld_key_t { off: k.offset() as i16 },
        Err(e) => tld_key_t { off: fail(&e) as i16 },
    }
}

/// See tld_otel.h.
#[no_mangle]
pub unsafe extern "C" fn tld_otel_attr_key(name: *const c_char) -> c_int {
    let r = unsafe { text(name, "attribute key name") }.and_then(AttributeKey::register);
    r.map_or_else(|e| fail(&e), |k| k.index() as c_int)
}

/// See tld_otel.h.
#[no_mangle]
pub unsafe extern "C" fn tld_otel_set(span: *const tld_otel_span_t, attrs: *const tld_otel_attr_t, n: usize) -> c_int {
    let r = (|| {
        let span = unsafe { span_of(span) }?;
        let attrs = unsafe { slice(attrs, n, "attrs") }?;
        let mut pairs = Vec::with_capacity(attrs.len());
        for a in attrs {
            let name = unsafe { text(a.name, "attribute name") }?;
            let value = unsafe { text(a.value, &format!("the value of attribute {name:?}")) }?;
            pairs.push((name, value));
        }
        tld_otel::set(&span, &pairs)
    })();
    status(r)
}

/// See tld_otel.h.
#[no_mangle]
pub unsafe extern "C" fn tld_otel_set_indexed(
    span: *const tld_otel_span_t,
    attrs: *const tld_otel_indexed_attr_t,
    n: usize,
) -> c_int {
    let r = (|| {
        let span = unsafe { span_of(span) }?;
        let attrs = unsafe { slice(attrs, n, "attrs") }?;
        let mut pairs = Vec::with_capacity(attrs.len());
        for a in attrs {
            let value = unsafe { text(a.value, &format!("the value of attribute {}", a.key)) }?;
            pairs.push((AttributeKey::from_index(a.key)?, value));
        }
        tld_otel::set_with_keys(&span, &pairs)
    })();
    status(r)
}

/// See tld_otel.h.
#[no_mangle]
pub extern "C" fn tld_otel_clear() -> c_int {
    status(tld_otel::clear())
}

/// `tld_otel_saved_t`: the bytes of a [`SavedContext`].
#[repr(C)]
pub struct tld_otel_saved_t {
    pub record: [u8; tld_otel::MAX_RECORD_SIZE],
}

const _: () = assert!(std::mem::size_of::<tld_otel_saved_t>() == std::mem::size_of::<SavedContext>());

/// See tld_otel.h.
#[no_mangle]
pub unsafe extern "C" fn tld_otel_save(saved: *mut tld_otel_saved_t) -> c_int {
    if saved.is_null() {
        return fail(&invalid("saved is NULL".into()));
    }
    match SavedContext::save() {
        Ok(s) => {
            unsafe { ptr::write(saved as *mut SavedContext, s) };
            0
        }
        Err(e) => fail(&e),
    }
}

/// See tld_otel.h.
#[no_mangle]
pub unsafe extern "C" fn tld_otel_restore(saved: *const tld_otel_saved_t) -> c_int {
    if saved.is_null() {
        return fail(&invalid("saved is NULL".into()));
    }
    status(unsafe { &*(saved as *const SavedContext) }.restore())
}

/// See tld_otel.h.
#[no_mangle]
pub unsafe extern "C" fn tld_otel_current(span: *mut tld_otel_span_t) -> c_int {
    match tld_otel::current() {
        Ok(r) => {
            if !span.is_null() {
                let s = tld_otel_span_t { trace_id: r.span.trace_id, span_id: r.span.span_id, trace_flags: r.span.trace_flags };
                unsafe { span.write(s) };
            }
            r.valid as c_int
        }
        Err(e) => fail(&e),
    }
}

/// See tld_otel.h.
#[no_mangle]
pub extern "C" fn tld_otel_record() -> *const c_void {
    match tld_otel::thread_record_ptr() {
        Ok(p) => p.as_ptr() as *const c_void,
        Err(e) => {
            unsafe { *libc::__errno_location() = -fail(&e) };
            ptr::null()
        }
    }
}

/// See tld_otel.h.
#[no_mangle]
pub unsafe extern "C" fn tld_otel_publish_process_context(attrs: *const tld_otel_resource_attr_t, n: usize) -> c_int {
    let r = (|| {
        let attrs = unsafe { slice(attrs, n, "attrs") }?;
        let mut pairs = Vec::with_capacity(attrs.len());
        for a in attrs {
            let key = unsafe { text(a.key, "resource attribute key") }?;
            let value = match a.kind {
                TLD_OTEL_STRING => {
                    ResourceValue::String(unsafe { text(a.string_value, &format!("the value of {key:?}")) }?)
                }
                TLD_OTEL_BOOL => ResourceValue::Bool(a.bool_value),
                TLD_OTEL_INT => ResourceValue::Int(a.int_value),
                TLD_OTEL_DOUBLE => ResourceValue::Double(a.double_value),
                k => return Err(invalid(format!("resource attribute {key:?}: unknown kind {k}"))),
            };
            pairs.push((key, value));
        }
        tld_otel::publish_process_context(&pairs)
    })();
    status(r)
}

/// See tld_otel.h.
#[no_mangle]
pub unsafe extern "C" fn tld_otel_set_schema_version(version: *const c_char) -> c_int {
    status(unsafe { text(version, "schema version") }.and_then(tld_otel::set_schema_version))
}

/// See tld_otel.h.
#[no_mangle]
pub extern "C" fn tld_otel_process_context() -> *const c_void {
    match tld_otel::process_context_address() {
        Ok(a) => a as *const c_void,
        Err(e) => {
            unsafe { *libc::__errno_location() = -fail(&e) };
            ptr::null()
        }
    }
}
