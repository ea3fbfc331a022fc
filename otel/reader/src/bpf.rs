//! The BPF reader: `read_record` (src/bpf/otel_read.bpf.c) run with
//! `BPF_PROG_TEST_RUN` for a thread of any process.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use libbpf_rs::{MapCore, MapFlags, Object, ObjectBuilder, ProgramInput};

/// Bytes of a record at most (`OTEL_READ_MAX`).
pub const READ_MAX: usize = 640;

/// `struct otel_read_ctx` (src/bpf/otel_read.h).
#[repr(C)]
#[derive(Clone, Copy)]
struct ReadCtx {
    tid: i32,
    size: u32,
    err: i32,
    copied: u32,
    offset: u32,
    valid: u8,
    reserved: [u8; 3],
}

/// `struct otel_helper_ctx` (src/bpf/otel_read.h).
#[repr(C)]
#[derive(Clone, Copy)]
struct HelperCtx {
    tid: i32,
    attr_index: u32,
    err: i32,
    found: u8,
    trace_flags: u8,
    attrs_data_size: u16,
    trace_id: [u8; 16],
    span_id: [u8; 8],
    attr_ret: i32,
    attrs_copied: u32,
    attr_value: [u8; 64],
}

/// A record's fields as `tld_otel_record()` gave them: (trace id, span id,
/// trace flags, attrs-data).
pub type HelperFields = ([u8; 16], [u8; 8], u8, Vec<u8>);

/// What tld.bpf.h's `tld_otel_record()` and `tld_otel_attr()` gave a BPF
/// program for one thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelperRecord {
    /// `tld_otel_record()`'s record (None: it returned NULL).
    pub record: Option<HelperFields>,
    /// `tld_otel_attr()`: the value (its first 64 bytes) and full length,
    /// or its `-errno` (`ENODATA`: no valid record, `ENOENT`: no such attribute).
    pub attr: Result<(Vec<u8>, usize), i32>,
}

/// Which compiler built the object a [`RecordReader`] loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compiler {
    /// `clang` (14 on the reference system; `CLANG` overrides it).
    Clang,
    /// `clang-19` (`CLANG_UPSTREAM` overrides it).
    Clang19,
}

/// What BPF read of one thread's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BpfRecord {
    /// The record's offset in the thread's data area.
    pub offset: u32,
    /// What a consumer's helper decides: the record is there and `valid == 1`.
    pub valid: bool,
    /// The bytes as BPF read them.
    pub bytes: Vec<u8>,
}

/// The loaded BPF object with its own `tld_data_map`, pinned for the
/// process under test to attach.
pub struct RecordReader {
    object: Object,
    pin: Option<PathBuf>,
}

const OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/otel_read.bpf.o"));
const OBJECT_CLANG19: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/otel_read_clang19.bpf.o"));

impl RecordReader {
    /// Loads the program and creates its `tld_data_map`.
    pub fn load() -> Result<RecordReader, String> {
        Self::load_with(Compiler::Clang, None)
    }

    /// Loads the object `compiler` built, sharing `share`'s `tld_data_map`
    /// (a new one when None).
    pub fn load_with(compiler: Compiler, share: Option<&RecordReader>) -> Result<RecordReader, String> {
        let bytes = match compiler {
            Compiler::Clang => OBJECT,
            Compiler::Clang19 => OBJECT_CLANG19,
        };
        let mut open = ObjectBuilder::default().open_memory(bytes).map_err(|e| format!("opening otel_read: {e}"))?;
        if let Some(other) = share {
            let fd = other.data_map_fd();
            let mut map = open.maps_mut().find(|m| m.name() == "tld_data_map").expect("otel_read has tld_data_map");
            // SAFETY: the fd belongs to `other`'s object, alive during this call; libbpf dups it.
            map.reuse_fd(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })
                .map_err(|e| format!("sharing tld_data_map: {e}"))?;
        }
        let object = open.load().map_err(|e| format!("loading otel_read ({compiler:?}; see the libbpf log above): {e}"))?;
        Ok(RecordReader { object, pin: None })
    }

    fn data_map_fd(&self) -> RawFd {
        let map = self.object.maps().find(|m| m.name() == "tld_data_map").expect("otel_read has tld_data_map");
        map.as_fd().as_raw_fd()
    }

    /// Pins `tld_data_map` at `dir/tld_data_map` (removed again on drop) and returns the path.
    pub fn pin(&mut self, dir: &Path) -> Result<PathBuf, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let path = dir.join("tld_data_map");
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL in the pin path");
        let fd = self.data_map_fd();
        let mut attr = [0u64; 3];
        attr[0] = c.as_ptr() as u64;
        attr[1] = fd as u64;
        let r = unsafe { libc::syscall(libc::SYS_bpf, 6 /* BPF_OBJ_PIN */, attr.as_mut_ptr(), 24) };
        if r != 0 {
            return Err(format!("pinning tld_data_map at {}: {}", path.display(), std::io::Error::last_os_error()));
        }
        self.pin = Some(path.clone());
        Ok(path)
    }

    /// Reads `size` bytes of thread `tid`'s record; `Err` carries the
    /// program's `-errno` (`ESRCH`, `ENODATA`, `ENOENT`).
    pub fn read(&self, tid: i32, size: usize) -> Result<BpfRecord, i32> {
        let mut ctx = ReadCtx {
            tid,
            size: size as u32,
            err: 0,
            copied: 0,
            offset: 0,
            valid: 0,
            reserved: [0; 3],
        };
        // SAFETY: ReadCtx is plain data without padding.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut((&mut ctx as *mut ReadCtx).cast::<u8>(), std::mem::size_of::<ReadCtx>())
        };
        let prog = self.object.progs_mut().find(|p| p.name() == "read_record").expect("otel_read has read_record");
        let input = ProgramInput { context_in: Some(bytes), ..Default::default() };
        prog.test_run(input).map_err(|e| {
            eprintln!("running read_record: {e}");
            -libc::EIO
        })?;
        if ctx.err != 0 {
            return Err(ctx.err);
        }
        let bss = self.object.maps().find(|m| m.name().to_string_lossy().ends_with(".bss")).expect("otel_read has .bss");
        let global = bss
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(|_| -libc::EIO)?
            .ok_or(-libc::EIO)?;
        Ok(BpfRecord { offset: ctx.offset, valid: ctx.valid != 0, bytes: global[..ctx.copied as usize].to_vec() })
    }
}

impl RecordReader {
    /// Runs `read_helper` for thread `tid`, `tld_otel_attr()` looking for
    /// key-index `attr_index`; `Err` carries `-errno` (`ESRCH`, `ENODATA`).
    pub fn read_helper(&self, tid: i32, attr_index: u32) -> Result<HelperRecord, i32> {
        // SAFETY: HelperCtx is plain data; all zero is a valid value.
        let mut ctx: HelperCtx = unsafe { std::mem::zeroed() };
        ctx.tid = tid;
        ctx.attr_index = attr_index;
        // SAFETY: HelperCtx is plain data without padding.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut((&mut ctx as *mut HelperCtx).cast::<u8>(), std::mem::size_of::<HelperCtx>())
        };
        let prog = self.object.progs_mut().find(|p| p.name() == "read_helper").expect("otel_read has read_helper");
        let input = ProgramInput { context_in: Some(bytes), ..Default::default() };
        prog.test_run(input).map_err(|e| {
            eprintln!("running read_helper: {e}");
            -libc::EIO
        })?;
        if ctx.err != 0 {
            return Err(ctx.err);
        }
        let record = if ctx.found != 0 {
            let bss = self.object.maps().find(|m| m.name().to_string_lossy().ends_with(".bss")).expect("otel_read has .bss");
            let global = bss.lookup(&0u32.to_ne_bytes(), MapFlags::ANY).map_err(|_| -libc::EIO)?.ok_or(-libc::EIO)?;
            // helper_attrs follows record_bytes (READ_MAX bytes) in .bss.
            let attrs = global[READ_MAX..READ_MAX + ctx.attrs_copied as usize].to_vec();
            Some((ctx.trace_id, ctx.span_id, ctx.trace_flags, attrs))
        } else {
            None
        };
        let attr = if ctx.attr_ret < 0 {
            Err(ctx.attr_ret)
        } else {
            let n = (ctx.attr_ret as usize).min(ctx.attr_value.len());
            Ok((ctx.attr_value[..n].to_vec(), ctx.attr_ret as usize))
        };
        Ok(HelperRecord { record, attr })
    }
}

impl Drop for RecordReader {
    fn drop(&mut self) {
        if let Some(path) = &self.pin {
            let _ = std::fs::remove_file(path);
            if let Some(dir) = path.parent() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ctx_size_matches_the_c_struct() {
        // 5 words, then the flag and its padding.
        assert_eq!(std::mem::size_of::<super::ReadCtx>(), 24);
        assert_eq!(std::mem::size_of::<super::HelperCtx>(), 112);
    }
}
