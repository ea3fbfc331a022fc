//! What a BPF program pays to read task local data: the `tld_bench`
//! programs (`src/bpf/tld_bench.bpf.c`) time a loop of `tld_object_init()`,
//! `tld_get_data()` (warm and cold key cache) and, for comparison, a hash
//! map lookup by tid, inside the program on the calling thread; and
//! [`RunStats`] turns on the kernel's BPF run-time statistics
//! (`BPF_ENABLE_STATS`) for measuring [`crate::top::Top`] per event.
//! Driven by `cargo bench -p tld-bpf --bench bpf_cost`.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use libbpf_rs::{MapCore, MapFlags, Object};

use crate::skels::tld_bench::types;
use crate::{load_object, map, objects, run_syscall, DataMap, Error};

/// One timed loop, as a bench program reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timed {
    /// `tld_object_init()`'s result before the loop (0: registered).
    pub init_err: i32,
    /// The loop's duration.
    pub ns: u64,
    /// Iterations that found the value.
    pub hits: u64,
}

/// The benchmark programs, loaded with a new 24-byte `tld_data_map`.
pub struct BenchBpf {
    obj: Object,
}

impl BenchBpf {
    /// Loads the programs.
    ///
    /// # Errors
    ///
    /// As [`crate::TestBpf::load`].
    pub fn load() -> Result<Self, Error> {
        Ok(BenchBpf {
            obj: load_object(objects::BENCH, "tld_bench", |open| DataMap::Own.apply(open))?,
        })
    }

    /// The `tld_data_map` to register threads in (by hand, [`crate::hand`]).
    pub fn data_map_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        let m = map(&self.obj, "tld_data_map");
        // SAFETY: the fd belongs to the object, owned by `self`.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(m.as_fd().as_raw_fd()) }
    }

    /// Puts `tid -> hint` in the hash map `bench_hash` looks up.
    ///
    /// # Errors
    ///
    /// [`Error::Bpf`] when the update fails.
    pub fn set_hash_hint(&self, tid: i32, hint: u64) -> Result<(), Error> {
        map(&self.obj, "tid_hints")
            .update(&tid.to_ne_bytes(), &hint.to_ne_bytes(), MapFlags::ANY)
            .map_err(Error::bpf("filling the tid hash map"))
    }

    /// Runs bench program `name` (`bench_empty`, `bench_hash`,
    /// `bench_init`, `bench_init_get`, `bench_warm_get`, `bench_cold_get`)
    /// for `iters` iterations on the calling thread.
    ///
    /// # Errors
    ///
    /// [`Error::Bpf`] when the run fails.
    pub fn run(&self, name: &str, iters: u32) -> Result<Timed, Error> {
        let mut ctx = types::bench_ctx {
            iters,
            ..Default::default()
        };
        run_syscall(&self.obj, name, &mut ctx)?;
        Ok(Timed {
            init_err: ctx.err,
            ns: ctx.ns,
            hits: ctx.hits,
        })
    }
}

/// The kernel's BPF run-time statistics (`run_time_ns`, `run_cnt` of every
/// program), on while this value lives (`BPF_ENABLE_STATS`).
#[derive(Debug)]
pub struct RunStats {
    _fd: OwnedFd,
}

impl RunStats {
    /// Turns the statistics on.
    ///
    /// # Errors
    ///
    /// [`Error::Bpf`] when the kernel refuses (it needs `CAP_SYS_ADMIN`).
    pub fn enable() -> Result<Self, Error> {
        // SAFETY: a plain system call wrapper.
        let fd = unsafe {
            libbpf_rs::libbpf_sys::bpf_enable_stats(libbpf_rs::libbpf_sys::BPF_STATS_RUN_TIME)
        };
        if fd < 0 {
            return Err(Error::Bpf {
                op: "enabling BPF run-time statistics (BPF_ENABLE_STATS)".into(),
                source: libbpf_rs::Error::from_raw_os_error(-fd),
            });
        }
        // SAFETY: a new fd we own.
        Ok(RunStats {
            _fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }
}
