//! Attaching `tld_data_map`s: by pinned path or by fd, validated before use.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::abi::{MAP_KEY_SIZE, MAP_VALUE_SIZE};
use crate::error::{Error, MapProblem, MapSource, Result};
use crate::runtime;
use crate::sys;

/// Where applications and BPF consumers meet unless told otherwise.
pub const DEFAULT_MAP_PATH: &str = "/sys/fs/bpf/tld/tld_data_map";
/// Environment variable overriding [`DEFAULT_MAP_PATH`].
pub const MAP_PATH_ENV: &str = "TLD_MAP_PATH";

/// The pinned map path in effect: `$TLD_MAP_PATH` if set and not empty, else [`DEFAULT_MAP_PATH`].
pub fn default_map_path() -> PathBuf {
    match std::env::var_os(MAP_PATH_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_MAP_PATH),
    }
}

/// Checks that `fd` is a map tld can register threads with.
pub(crate) fn validate(fd: RawFd, source: &MapSource) -> Result<sys::MapInfo> {
    let fail = |problem| Error::Map { source: source.clone(), problem };
    let kind = sys::fd_kind(fd);
    if !kind.contains("bpf-map") {
        return Err(fail(MapProblem::NotAMap { kind }));
    }
    let info = sys::map_info(fd).map_err(|errno| fail(MapProblem::Os { op: "BPF_OBJ_GET_INFO_BY_FD", errno }))?;
    if info.map_type != sys::BPF_MAP_TYPE_TASK_STORAGE {
        return Err(fail(MapProblem::WrongType { found: info.map_type }));
    }
    if info.key_size as usize != MAP_KEY_SIZE || info.value_size as usize != MAP_VALUE_SIZE {
        return Err(fail(MapProblem::WrongLayout { key_size: info.key_size, value_size: info.value_size }));
    }
    if info.btf_id == 0 || info.btf_value_type_id == 0 {
        return Err(fail(MapProblem::NoBtf));
    }
    Ok(info)
}

/// Opens and attaches the map pinned at `path`.
pub(crate) fn attach_path(path: &Path) -> Result<()> {
    let source = MapSource::Path(path.to_path_buf());
    let fail = |problem| Error::Map { source: source.clone(), problem };
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| fail(MapProblem::Os { op: "path contains a NUL byte", errno: libc::EINVAL }))?;
    let fd = match sys::obj_get(&cpath) {
        Ok(fd) => fd,
        Err(errno) => return Err(fail(open_problem(&cpath, errno))),
    };
    attach_owned(fd, -1, &source)
}

/// The attached map the caller knows as `fd`, attaching it on first sight.
/// The fd-number cache serves upstream `tld_get_data(map_fd, key)`, which
/// passes the fd on every call; like upstream, it trusts the caller not to
/// reuse the number for another map.
pub(crate) fn attached_fd(fd: RawFd) -> Result<usize> {
    if let Some(i) = runtime::runtime()?.map_by_user_fd(fd) {
        return Ok(i);
    }
    attach_fd(fd)
}

/// Validates and attaches the map behind the caller's `fd` (duplicated: the caller keeps its fd).
pub(crate) fn attach_fd(fd: RawFd) -> Result<usize> {
    let source = MapSource::Fd(fd);
    let fail = |problem| Error::Map { source: source.clone(), problem };
    let own = sys::dup_cloexec(fd).map_err(|errno| {
        fail(if errno == libc::EBADF {
            MapProblem::NotAMap { kind: "not an open file descriptor".into() }
        } else {
            MapProblem::Os { op: "fcntl(F_DUPFD_CLOEXEC)", errno }
        })
    })?;
    attach_owned(own, fd, &source)?;
    let shared = runtime::runtime()?;
    Ok(shared.map_by_user_fd(fd).unwrap_or(0))
}

/// Validates and adds `fd` (ours to keep or close).
fn attach_owned(fd: RawFd, user_fd: RawFd, source: &MapSource) -> Result<()> {
    let result = validate(fd, source).and_then(|info| {
        let shared = runtime::runtime()?;
        match shared.add_map(fd, info.id, user_fd) {
            Ok((_, true)) => Ok(()),
            Ok((_, false)) => {
                sys::close(fd); // attached before: keep the first fd
                Ok(())
            }
            Err(max) => Err(Error::Map { source: source.clone(), problem: MapProblem::TooManyMaps { max } }),
        }
    });
    if result.is_err() {
        sys::close(fd);
    }
    result
}

/// Turns a `BPF_OBJ_GET` failure into the cause a person can act on.
fn open_problem(path: &std::ffi::CStr, errno: i32) -> MapProblem {
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let on_bpffs = unsafe { libc::statfs(path.as_ptr(), &mut st) } == 0;
    let is_dir = std::fs::metadata(std::ffi::OsStr::from_bytes(path.to_bytes())).is_ok_and(|m| m.is_dir());
    match errno {
        libc::ENOENT => MapProblem::NotFound,
        _ if on_bpffs && st.f_type as i64 != sys::BPF_FS_MAGIC => MapProblem::NotBpffs,
        // The kernel says EACCES for a bpffs directory: not a pinned object, not a privilege problem.
        libc::EACCES if is_dir => MapProblem::NotAMap { kind: "a directory".into() },
        libc::EPERM | libc::EACCES => MapProblem::Permission { errno },
        libc::EINVAL if !on_bpffs => MapProblem::NotBpffs,
        _ => MapProblem::Os { op: "BPF_OBJ_GET", errno },
    }
}
