//! # tld: task local data
//!
//! Per-thread values ("hints") that BPF programs read in place. A process
//! creates keys by name; each thread writes its values through an ordinary
//! pointer; a BPF program (a sched_ext scheduler, a tracer) finds the same
//! values through the task-storage map `tld_data_map`, whose per-thread entry
//! holds UPTRs to the thread's block and to the process's metadata page.
//!
//! ```no_run
//! use tld::Key;
//!
//! // Once per process: the map that BPF consumers read (see `tld pin`).
//! tld::attach_default()?;
//!
//! // Once per process (any thread): a key shared by name with BPF and other languages.
//! let priority: Key<i32> = Key::get_or_create("priority")?;
//!
//! // On any thread: a plain memory store, no system call after the first access.
//! priority.set(3)?;
//! assert_eq!(priority.get()?, 3);
//! # Ok::<(), tld::Error>(())
//! ```
//!
//! ## Rules every binding shares (DESIGN §3)
//! - Names are 1 to 61 bytes without NUL; sizes at least 1.
//! - [`Key::create`] is strict (an existing name is [`Error::Exists`]);
//!   [`Key::get_or_create`] returns an existing key of the same size.
//! - Keys defined with [`static_key!`] grow every thread block while no block
//!   exists. After the first thread touches its data the size is frozen and
//!   new keys must fit the dynamic reserve ([`DEFAULT_DYNAMIC_RESERVE`] bytes
//!   unless [`set_dynamic_reserve`] said otherwise).
//! - A thread's block is allocated and registered with every attached map on
//!   its first access, deregistered and released when the thread exits, and
//!   re-registered in the child after `fork()`.
//! - Every copy of this crate loaded in one process (the Python extension, a
//!   C++ library, a Go archive) shares one runtime, one metadata page and one
//!   block per thread.
//!
//! ## Security
//! Whoever can write the map can set any task's values: BPF consumers must
//! treat them as untrusted hints, and the pinned map's file mode is the trust
//! boundary.

#![deny(unsafe_op_in_unsafe_fn)]

// The runtime's rendezvous, key offsets and UPTR registration assume a
// 64-bit address space and 64-bit map values (DESIGN §2, §4).
#[cfg(not(target_pointer_width = "64"))]
compile_error!("tld supports 64-bit targets only: BPF task storage UPTRs and the runtime layout are 64-bit");

pub mod abi;
mod error;
mod keys;
mod sync;

#[cfg(not(loom))]
mod maps;
#[cfg(not(loom))]
mod runtime;
#[cfg(not(loom))]
mod sys;

pub use error::{Error, MapProblem, MapSource, Result};
pub use keys::KeyInfo;

/// Bytes every thread block keeps for keys created after the first block exists.
pub const DEFAULT_DYNAMIC_RESERVE: usize = 64;

#[cfg(not(loom))]
mod api;
#[cfg(not(loom))]
pub use api::*;
#[cfg(not(loom))]
pub use maps::{default_map_path, DEFAULT_MAP_PATH, MAP_PATH_ENV};
#[cfg(not(loom))]
pub use runtime::watch::PIN_WATCH_ENV;
#[cfg(not(loom))]
pub use runtime::RUNTIME_ABI_VERSION;
