//! Raw system calls. Everything here is async-signal-safe (the fork child
//! handler uses it) and returns `Err(errno)` on failure.

use std::ffi::CStr;
use std::mem::size_of;
use std::os::fd::RawFd;

pub type SysResult<T> = Result<T, i32>;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// `PIDFD_THREAD` (Linux 6.9): a pidfd naming one thread, not its process.
const PIDFD_THREAD: libc::c_int = libc::O_EXCL;

/// `BPF_FS_MAGIC` from `linux/magic.h`.
pub const BPF_FS_MAGIC: i64 = 0xcafe4a11;
/// `BPF_MAP_TYPE_TASK_STORAGE`.
pub const BPF_MAP_TYPE_TASK_STORAGE: u32 = 29;
/// `BPF_F_RDONLY`: user space may not write the map.
pub const BPF_F_RDONLY: u32 = 1 << 3;

const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
const BPF_MAP_DELETE_ELEM: libc::c_int = 3;
const BPF_OBJ_GET: libc::c_int = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_int = 15;
const BPF_ANY: u64 = 0;

pub fn gettid() -> i32 {
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

pub fn getpid() -> i32 {
    unsafe { libc::syscall(libc::SYS_getpid) as i32 }
}

pub fn page_size() -> usize {
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

pub fn close(fd: RawFd) {
    unsafe { libc::syscall(libc::SYS_close, fd) };
}

/// A pidfd of thread `tid` of this process, checked to belong to this
/// process (so a thread id reused by another process is never touched):
/// `Ok(None)` when no such thread of ours exists any more.
pub fn pidfd_of_own_thread(tid: i32) -> SysResult<Option<RawFd>> {
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, tid, PIDFD_THREAD) };
    if fd < 0 {
        return match errno() {
            libc::ESRCH | libc::EINVAL => Ok(None),
            e => Err(e),
        };
    }
    let fd = fd as RawFd;
    match pidfd_tgid(fd) {
        Some(tgid) if tgid == getpid() => Ok(Some(fd)),
        Some(_) => {
            close(fd);
            Ok(None)
        }
        // A kernel without PIDFD_GET_INFO: /proc/self/task lists our threads.
        None => {
            let path = format!("/proc/self/task/{tid}\0");
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            if unsafe { libc::stat(path.as_ptr().cast(), &mut st) } == 0 {
                Ok(Some(fd))
            } else {
                close(fd);
                Ok(None)
            }
        }
    }
}

/// The thread group of the task behind a pidfd (`PIDFD_GET_INFO`, Linux 6.13).
fn pidfd_tgid(pidfd: RawFd) -> Option<i32> {
    #[repr(C)]
    struct PidfdInfo {
        mask: u64,
        cgroupid: u64,
        pid: u32,
        tgid: u32,
        rest: [u32; 10],
    }
    const PIDFD_INFO_PID: u64 = 1;
    // _IOWR(0xFF, 11, struct pidfd_info) with the 64-byte first version.
    const PIDFD_GET_INFO: libc::c_ulong = (3 << 30) | (64 << 16) | (0xFF << 8) | 11;
    let mut info = PidfdInfo { mask: PIDFD_INFO_PID, cgroupid: 0, pid: 0, tgid: 0, rest: [0; 10] };
    let r = unsafe { libc::ioctl(pidfd, PIDFD_GET_INFO, &mut info as *mut PidfdInfo) };
    (r == 0 && info.mask & PIDFD_INFO_PID != 0).then_some(info.tgid as i32)
}

/// The address-space stamp of this process image (DESIGN §5.5): `mm->arg_start`,
/// field 48 of `/proc/self/stat`. `None` when it cannot be read.
pub fn exec_stamp() -> Option<u64> {
    let stat = std::fs::read("/proc/self/stat").ok()?;
    // Fields after the command name, which may contain spaces and parentheses.
    let after = &stat[stat.iter().rposition(|&b| b == b')')? + 1..];
    let field = std::str::from_utf8(after).ok()?.split_ascii_whitespace().nth(48 - 3)?;
    field.parse().ok().filter(|&v: &u64| v != 0)
}

/// Whether `fd` was opened for writing (`O_RDWR`/`O_WRONLY`).
pub fn fd_writable(fd: RawFd) -> SysResult<bool> {
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(errno());
    }
    Ok(flags & libc::O_ACCMODE != libc::O_RDONLY)
}

/// A pidfd for the calling thread (`pidfd_open(gettid(), PIDFD_THREAD)`).
pub fn pidfd_self_thread() -> SysResult<RawFd> {
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, gettid(), PIDFD_THREAD) };
    if fd < 0 {
        Err(errno())
    } else {
        Ok(fd as RawFd)
    }
}

fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> SysResult<i64> {
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size_of::<T>() as u32) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `BPF_MAP_UPDATE_ELEM` with `BPF_ANY`.
pub fn map_update<K, V>(map_fd: RawFd, key: &K, value: &V) -> SysResult<()> {
    let mut attr = ElemAttr {
        map_fd: map_fd as u32,
        _pad: 0,
        key: key as *const K as u64,
        value: value as *const V as u64,
        flags: BPF_ANY,
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// `BPF_MAP_DELETE_ELEM`.
pub fn map_delete<K>(map_fd: RawFd, key: &K) -> SysResult<()> {
    #[repr(C)]
    struct DeleteAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
    }
    let mut attr = DeleteAttr { map_fd: map_fd as u32, _pad: 0, key: key as *const K as u64 };
    bpf(BPF_MAP_DELETE_ELEM, &mut attr).map(drop)
}

/// `BPF_OBJ_GET`: opens a pinned object, read-write, close-on-exec by the kernel's default.
pub fn obj_get(path: &CStr) -> SysResult<RawFd> {
    #[repr(C)]
    struct ObjAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        _pad: u32,
    }
    let mut attr = ObjAttr { pathname: path.as_ptr() as u64, bpf_fd: 0, file_flags: 0, path_fd: 0, _pad: 0 };
    bpf(BPF_OBJ_GET, &mut attr).map(|fd| fd as RawFd)
}

/// The start of `struct bpf_map_info`, up to the BTF ids we check.
#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
pub struct MapInfo {
    pub map_type: u32,
    pub id: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub name: [u8; 16],
    pub ifindex: u32,
    pub btf_vmlinux_value_type_id: u32,
    pub netns_dev: u64,
    pub netns_ino: u64,
    pub btf_id: u32,
    pub btf_key_type_id: u32,
    pub btf_value_type_id: u32,
    pub _pad: u32,
}

/// `BPF_OBJ_GET_INFO_BY_FD` for a map.
pub fn map_info(fd: RawFd) -> SysResult<MapInfo> {
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut info = MapInfo::default();
    let mut attr =
        InfoAttr { bpf_fd: fd as u32, info_len: size_of::<MapInfo>() as u32, info: &mut info as *mut _ as u64 };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).map(|_| info)
}

/// What kind of BPF object (or other file) an fd refers to, from its anon inode name.
pub fn fd_kind(fd: RawFd) -> String {
    let link = format!("/proc/self/fd/{fd}");
    match std::fs::read_link(link) {
        Ok(target) => target.to_string_lossy().into_owned(),
        Err(_) => String::from("unknown"),
    }
}

/// `fcntl(F_DUPFD_CLOEXEC)`.
pub fn dup_cloexec(fd: RawFd) -> SysResult<RawFd> {
    let r = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

/// Anonymous private read-write pages anywhere.
pub fn mmap_anon(len: usize) -> SysResult<*mut u8> {
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        Err(errno())
    } else {
        Ok(p as *mut u8)
    }
}

/// Maps `len` bytes of `fd` privately at exactly `addr`, failing with `EEXIST`
/// when anything is mapped there (`MAP_FIXED_NOREPLACE`, Linux 4.17).
pub fn mmap_fixed_noreplace(addr: usize, len: usize, fd: RawFd) -> SysResult<*mut u8> {
    // The raw system call: a sanitizer's mmap interceptor (ThreadSanitizer)
    // rewrites hints outside its application ranges, and this is not a hint.
    let p = unsafe {
        // Every argument a full register wide: the variadic call would leave
        // the upper half of a 32-bit one undefined.
        libc::syscall(
            libc::SYS_mmap,
            addr as libc::c_long,
            len as libc::c_long,
            (libc::PROT_READ | libc::PROT_WRITE) as libc::c_long,
            (libc::MAP_PRIVATE | libc::MAP_FIXED_NOREPLACE) as libc::c_long,
            fd as libc::c_long,
            0 as libc::c_long,
        )
    } as *mut libc::c_void;
    if p == libc::MAP_FAILED {
        return Err(errno());
    }
    if p as usize != addr {
        // A kernel older than 4.17 took the flag as a hint and mapped elsewhere.
        unsafe { libc::munmap(p, len) };
        return Err(libc::EEXIST);
    }
    Ok(p as *mut u8)
}

/// A sealed-size memory file holding `contents`, so a mapping of it appears
/// with those contents in one step.
pub fn memfd_with(contents: &[u8], len: usize) -> SysResult<RawFd> {
    let fd = unsafe { libc::memfd_create(c"tld-runtime".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(errno());
    }
    let ok = unsafe {
        libc::ftruncate(fd, len as libc::off_t) == 0
            && libc::pwrite(fd, contents.as_ptr().cast(), contents.len(), 0) == contents.len() as isize
    };
    if !ok {
        let e = errno();
        close(fd);
        return Err(e);
    }
    Ok(fd)
}

/// Reads `buf.len()` bytes at `addr` of this process without faulting:
/// `EFAULT` when the memory is not readable.
pub fn read_own_memory(addr: usize, buf: &mut [u8]) -> SysResult<()> {
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: buf.len() };
    let n = unsafe { libc::process_vm_readv(getpid(), &local, 1, &remote, 1, 0) };
    if n == buf.len() as isize {
        Ok(())
    } else if n < 0 {
        Err(errno())
    } else {
        Err(libc::EFAULT)
    }
}
