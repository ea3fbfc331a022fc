//! Attaching `tld_data_map`s: by pinned path or by fd, validated before use.

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::abi::{MAP_KEY_SIZE, MAP_VALUE16_SIZE, MAP_VALUE_SIZE};
use crate::error::{Error, MapProblem, MapSource, Result};
use crate::runtime::{self, register};
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

/// Checks that `fd` is a map tld can register threads with (DESIGN §2.5,
/// §6): a task-storage map with an `int` key, a 24- or 16-byte value, BTF,
/// writable by user space through this fd.
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
    let value_size = info.value_size as usize;
    if info.key_size as usize != MAP_KEY_SIZE || (value_size != MAP_VALUE_SIZE && value_size != MAP_VALUE16_SIZE) {
        return Err(fail(MapProblem::WrongLayout { key_size: info.key_size, value_size: info.value_size }));
    }
    if info.btf_id == 0 || info.btf_value_type_id == 0 {
        return Err(fail(MapProblem::NoBtf));
    }
    if info.map_flags & sys::BPF_F_RDONLY != 0 {
        return Err(fail(MapProblem::ReadOnly { why: "the map is read-only for user space (BPF_F_RDONLY)" }));
    }
    match sys::fd_writable(fd) {
        Ok(true) => {}
        Ok(false) => return Err(fail(MapProblem::ReadOnly { why: "the map fd is open read-only" })),
        Err(errno) => return Err(fail(MapProblem::Os { op: "fcntl(F_GETFL)", errno })),
    }
    Ok(info)
}

/// Validates `fd` (ours: kept when attached, closed otherwise) and adds it to
/// the table. Returns the entry.
fn attach_owned(fd: RawFd, how: u32, user_fd: RawFd, path: Option<&CStr>, source: &MapSource) -> Result<usize> {
    let result = validate(fd, source).and_then(|info| {
        let shared = runtime::runtime()?;
        let new = register::NewMap { fd, id: info.id, value_size: info.value_size, how, user_fd, path, source };
        register::attach(shared, new)
    });
    match result {
        Ok((i, true)) => Ok(i),
        Ok((i, false)) => {
            sys::close(fd); // attached before: the first fd stays
            Ok(i)
        }
        Err(e) => {
            sys::close(fd);
            Err(e)
        }
    }
}

/// Opens and attaches the map pinned at `path`; the map then follows the pin (DESIGN §8.4).
pub(crate) fn attach_path(path: &Path) -> Result<()> {
    let source = MapSource::Path(path.to_path_buf());
    let cpath = CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::Map {
        source: source.clone(),
        problem: MapProblem::Os { op: "path contains a NUL byte", errno: libc::EINVAL },
    })?;
    let fd = open_pinned(&cpath, &source)?;
    attach_owned(fd, register::BY_PATH, -1, Some(&cpath), &source)?;
    runtime::watch::ensure_started(runtime::runtime()?);
    Ok(())
}

fn open_pinned(path: &CStr, source: &MapSource) -> Result<RawFd> {
    sys::obj_get(path).map_err(|errno| Error::Map { source: source.clone(), problem: open_problem(path, errno) })
}

/// Our own duplicate of the caller's `fd`.
fn dup_caller_fd(fd: RawFd) -> Result<RawFd> {
    let source = MapSource::Fd(fd);
    if fd < 0 {
        return Err(Error::Map { source, problem: MapProblem::NotAMap { kind: "negative file descriptor".into() } });
    }
    sys::dup_cloexec(fd).map_err(|errno| Error::Map {
        source,
        problem: if errno == libc::EBADF {
            MapProblem::NotAMap { kind: "not an open file descriptor".into() }
        } else {
            MapProblem::Os { op: "fcntl(F_DUPFD_CLOEXEC)", errno }
        },
    })
}

/// Validates and attaches the map behind the caller's `fd` (duplicated: the caller keeps its fd).
pub(crate) fn attach_fd(fd: RawFd) -> Result<()> {
    let own = dup_caller_fd(fd)?;
    attach_owned(own, register::BY_FD, -1, None, &MapSource::Fd(fd)).map(drop)
}

/// The map `tld_get_data(map_fd, ..)` names (DESIGN §8.2). A thread about to
/// get its block checks which map `map_fd` is now (one system call); other
/// slow paths trust an fd number already seen.
pub(crate) fn attach_for_get_data(map_fd: RawFd, allocating: bool) -> Result<()> {
    let shared = runtime::runtime()?;
    if let Some(i) = shared.maps.by_user_fd(map_fd) {
        if !allocating || sys::map_info(map_fd).is_ok_and(|info| shared.maps.id_of(i) == info.id) {
            return Ok(());
        }
    }
    let own = dup_caller_fd(map_fd)?;
    let i = attach_owned(own, register::BY_GET_DATA, map_fd, None, &MapSource::Fd(map_fd))?;
    register::follow_user_fd(shared, i, map_fd)
}

/// Checks every map attached by path against its pin (DESIGN §8.4): a pin
/// that names another map now is followed: the new map is attached, every
/// live thread registered with it, and the old one detached. A missing pin
/// changes nothing (the consumer may pin again).
pub(crate) fn refresh() -> Result<()> {
    let shared = runtime::runtime()?;
    for (i, id, path) in register::pinned(shared) {
        let source = MapSource::Path(path.clone());
        let Ok(cpath) = CString::new(path.as_os_str().as_bytes()) else { continue };
        let Ok(fd) = sys::obj_get(&cpath) else { continue };
        match sys::map_info(fd) {
            Ok(info) if info.id == id => {
                sys::close(fd);
                continue;
            }
            Err(_) => {
                sys::close(fd);
                continue;
            }
            Ok(_) => {}
        }
        let j = attach_owned(fd, register::BY_PATH, -1, Some(&cpath), &source)?;
        register::register_all_live(shared, j)?;
        register::drop_path(shared, i)?;
    }
    Ok(())
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
