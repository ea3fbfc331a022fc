//! Out-of-process readers of the OpenTelemetry context a process publishes,
//! written from the proposals rather than from tld's writer (so that they
//! check it): OTEP 4719's process context ([`process`], with its own protobuf
//! decoder) and OTEP 4947's Thread-Local Context Record ([`record`]).
//! Shared by the `tld` command (`tld dump`, `tld top --by otel.*`) and the
//! tests of `tld-otel-reader` (DESIGN.md §10.7).

pub mod process;
pub mod record;

pub use process::{read_process_context, AnyValue, ProcessContext};
pub use record::ThreadRecord;

/// One line of /proc/PID/maps.
#[derive(Clone, Debug)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub file_offset: u64,
    pub name: String,
}

/// The mappings of `pid`.
pub fn maps(pid: i32) -> Result<Vec<Mapping>, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|e| format!("/proc/{pid}/maps: {e}"))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (range, _perms, offset) = (f.next()?, f.next()?, f.next()?);
            let (_dev, _inode) = (f.next()?, f.next()?);
            let name = f.collect::<Vec<_>>().join(" ");
            let (s, e) = range.split_once('-')?;
            Some(Mapping {
                start: u64::from_str_radix(s, 16).ok()?,
                end: u64::from_str_radix(e, 16).ok()?,
                file_offset: u64::from_str_radix(offset, 16).ok()?,
                name,
            })
        })
        .collect())
}

/// Reads `buf.len()` bytes at `addr` of process `pid` with
/// `process_vm_readv`, which fails cleanly on unmapped memory.
pub fn read_memory(pid: i32, addr: u64, buf: &mut [u8]) -> Result<(), String> {
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: buf.len() };
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n != buf.len() as isize {
        return Err(format!(
            "reading {} bytes at {addr:#x} of process {pid}: {}",
            buf.len(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

