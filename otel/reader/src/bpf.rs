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

impl RecordReader {
    /// Loads the program and creates its `tld_data_map`.
    pub fn load() -> Result<RecordReader, String> {
        let open = ObjectBuilder::default().open_memory(OBJECT).map_err(|e| format!("opening otel_read: {e}"))?;
        let object = open.load().map_err(|e| format!("loading otel_read (see the libbpf log above): {e}"))?;
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
    }
}
