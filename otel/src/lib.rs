//! # tld_otel: OpenTelemetry thread context through task local data
//!
//! Profilers and tracers (the OpenTelemetry eBPF profiler, sched_ext
//! schedulers, any BPF program) want to know which trace and span a thread
//! serves when they see it. This crate publishes it in the formats
//! OpenTelemetry standardises, with tld as the carrier (DESIGN §10):
//!
//! - **Thread context (OTEP 4947).** Each thread's *Thread-Local Context
//!   Record* (trace id, span id, flags, attributes) lives in its tld block
//!   under the static key `otel.thread_ctx_v1`, so BPF reads it through
//!   `tld_data_map` from any context, with no page faults and no TLS
//!   discovery. The same record is also reachable the OTEP's own way: the
//!   ELF TLS symbol `otel_thread_ctx_v1` points at it.
//! - **Process context (OTEP 4719).** An `OTEL_CTX` mapping holds a protobuf
//!   `Resource` with the application's resource attributes,
//!   `threadlocal.schema_version` and `threadlocal.attribute_key_map` (the
//!   names behind the one-byte attribute indexes of records).
//!
//! Every copy of tld in a process (this crate, libtld, the Python, C++ and Go
//! bindings) shares one key map, one `OTEL_CTX` mapping and one live TLS
//! symbol, through the tld runtime.
//!
//! ```
//! use tld_otel::SpanContext;
//!
//! // Before any thread touches tld data: the record key gets room in every block.
//! tld_otel::static_record_key!();
//!
//! fn handle_request() -> tld_otel::Result<()> {
//!     let span = SpanContext::new([0x4b; 16], [0x51; 8], 0x01);
//!     let _active = tld_otel::scope(&span, &[("http.route", "/users/:id")])?;
//!     // ... BPF and OTEP readers see this span on this thread until `_active` drops.
//!     Ok(())
//! }
//! # handle_request().unwrap();
//! ```
//!
//! ## Linking
//! OTEP readers find `otel_thread_ctx_v1` in `.dynsym`: an executable that
//! links this crate must export it (`-Wl,--export-dynamic-symbol=otel_thread_ctx_v1`,
//! from a build script: `cargo:rustc-link-arg-bins=...`), and a shared object
//! must pass the version script this crate's build writes
//! (`DEP_TLD_OTEL_TLS_VERSION_SCRIPT`). Without it the BPF path works and
//! the TLS path stays dark.
//!
//! ## Threads
//! A record belongs to the OS thread that wrote it; only that thread writes
//! it. Publishing is a few stores after the thread's first call. Registering
//! attribute keys and publishing the process context take a process-wide
//! lock and are not async-signal-safe.

#![deny(unsafe_op_in_unsafe_fn)]

mod error;
mod process;
mod proto;
mod record;
mod symbol;
mod thread;

pub use error::{Error, Result};
pub use process::{
    attribute_keys, process_context_address, publish_process_context, set_schema_version, ResourceValue,
    CONTEXT_HEADER_SIZE, CONTEXT_MAPPING_SIZE, CONTEXT_SIGNATURE, CONTEXT_VERSION, DEFAULT_SCHEMA_VERSION,
    MAX_ATTRIBUTE_KEYS, MAX_ATTRIBUTE_KEY_NAME, MAX_RESOURCE_BYTES, MAX_SCHEMA_VERSION,
};
pub use record::{
    Record, SpanContext, DEFAULT_RECORD_SIZE, HEADER_SIZE, MAX_ATTRIBUTE_VALUE, MAX_RECORD_SIZE, MIN_RECORD_SIZE,
    RECORD_KEY,
};
pub use symbol::{claim as claim_live_symbol, owns_live_symbol};
pub use thread::{
    clear, current, record_key, scope, set, set_record_size, set_with_keys, thread_record_ptr, AttributeKey, SavedContext, Scope,
    RECORD_SIZE_ENV,
};
