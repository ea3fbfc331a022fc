//! The pinned map: bpffs, validation (the core's rules), pin and unpin, and
//! the failures every command reports with its exit code.

use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tld::abi::MAP_KEY_SIZE;
use tld_bpf::Layout;

const BPF_FS_MAGIC: i64 = 0xcafe4a11;
const BPF_MAP_TYPE_TASK_STORAGE: u32 = 29;

/// Why a command failed; each has its exit code (see `tld --help`).
#[derive(Debug)]
pub enum Fail {
    /// 1: anything else.
    Other(String),
    /// 3: no such process or thread.
    NoProcess(String),
    /// 4: the process has no thread registered in the map.
    NotUsingTld {
        pid: i32,
        comm: String,
        path: PathBuf,
    },
    /// 5: nothing pinned at the path.
    NoMap(PathBuf),
    /// 6: the path is not on a bpffs.
    NoBpffs { path: PathBuf, checked: PathBuf },
    /// 7: missing privilege, for what.
    NoPrivilege(String),
    /// 8: the pinned object is not a tld_data_map.
    Incompatible { path: PathBuf, reason: String },
    /// 9: the kernel cannot create the map.
    Unsupported(String),
}

impl Fail {
    pub fn code(&self) -> u8 {
        match self {
            Fail::Other(_) => 1,
            Fail::NoProcess(_) => 3,
            Fail::NotUsingTld { .. } => 4,
            Fail::NoMap(_) => 5,
            Fail::NoBpffs { .. } => 6,
            Fail::NoPrivilege(_) => 7,
            Fail::Incompatible { .. } => 8,
            Fail::Unsupported(_) => 9,
        }
    }

    /// Maps a loader error, `doing` naming the operation.
    pub fn from_bpf(doing: &str, err: tld_bpf::Error) -> Fail {
        use tld_bpf::Error as E;
        match err {
            E::PermissionDenied => {
                Fail::NoPrivilege(format!("{doing} needs root (or CAP_BPF and CAP_PERFMON)"))
            }
            E::Unsupported(_) | E::PageSizeMismatch { .. } => {
                Fail::Unsupported(format!("{doing}: {err}"))
            }
            E::Bpf { ref source, .. }
                if source.kind() == libbpf_rs::ErrorKind::PermissionDenied =>
            {
                Fail::NoPrivilege(format!("{doing}: {err}"))
            }
            other => Fail::Other(format!("{doing}: {other}")),
        }
    }
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fail::Other(msg) | Fail::NoProcess(msg) | Fail::NoPrivilege(msg) | Fail::Unsupported(msg) => {
                f.write_str(msg)
            }
            Fail::NotUsingTld { pid, comm, path } => write!(
                f,
                "process {pid} ({comm}) does not use tld: none of its threads is registered in {}",
                path.display()
            ),
            Fail::NoMap(path) => write!(
                f,
                "no map pinned at {} (create it with `tld pin`, or set --path / TLD_MAP_PATH)",
                path.display()
            ),
            Fail::NoBpffs { path, checked } => write!(
                f,
                "bpffs is not mounted at {} (needed for {}; mount it with `mount -t bpf bpf /sys/fs/bpf`)",
                checked.display(),
                path.display()
            ),
            Fail::Incompatible { path, reason } => {
                write!(f, "{} is not a tld_data_map: {reason}", path.display())
            }
        }
    }
}

fn c_path(path: &Path) -> Result<CString, Fail> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Fail::Other(format!("{} contains a NUL byte", path.display())))
}

/// Whether `path` (which must exist) lies on a bpffs.
pub fn on_bpffs(path: &Path) -> bool {
    let Ok(c) = c_path(path) else { return false };
    // SAFETY: a zeroed statfs is a valid out buffer; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}

/// The nearest existing ancestor of `path` (or `path` itself).
fn existing_ancestor(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    while !p.exists() {
        match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => p = parent.to_path_buf(),
            _ => return PathBuf::from("/"),
        }
    }
    p
}

/// Fails with [`Fail::NoBpffs`] unless `path`, or the directory it would be
/// created in, is on a bpffs.
pub fn require_bpffs(path: &Path) -> Result<(), Fail> {
    let near = existing_ancestor(path);
    if on_bpffs(&near) {
        return Ok(());
    }
    // Name the directory where bpffs should be: the first missing one
    // below `near`, or the path's own directory.
    let checked = if near == path {
        path.parent().unwrap_or(path).to_path_buf()
    } else {
        near
    };
    Err(Fail::NoBpffs {
        path: path.to_path_buf(),
        checked,
    })
}

/// What `BPF_OBJ_GET` found at a path, before validation.
pub struct Pinned {
    pub fd: OwnedFd,
}

/// Facts about a pin file: mode and owner.
pub fn describe_file(path: &Path) -> String {
    match std::fs::metadata(path) {
        Ok(meta) => format!(
            "mode {:04o}, owner {}:{}",
            meta.permissions().mode() & 0o7777,
            user_name(meta.uid()),
            group_name(meta.gid())
        ),
        Err(e) => format!("({e})"),
    }
}

fn user_name(uid: u32) -> String {
    // SAFETY: getpwuid returns NULL or a pointer valid until the next call.
    let pw = unsafe { libc::getpwuid(uid) };
    if pw.is_null() {
        return uid.to_string();
    }
    unsafe { std::ffi::CStr::from_ptr((*pw).pw_name) }
        .to_string_lossy()
        .into_owned()
}

fn group_name(gid: u32) -> String {
    // SAFETY: as getpwuid.
    let gr = unsafe { libc::getgrgid(gid) };
    if gr.is_null() {
        return gid.to_string();
    }
    unsafe { std::ffi::CStr::from_ptr((*gr).gr_name) }
        .to_string_lossy()
        .into_owned()
}

/// Opens the object pinned at `path` (read-only is enough to inspect it).
/// Fails with the cause: no bpffs, nothing pinned, no privilege.
pub fn obj_get(path: &Path) -> Result<Pinned, Fail> {
    require_bpffs(path)?;
    if std::fs::symlink_metadata(path).is_err() {
        return Err(Fail::NoMap(path.to_path_buf()));
    }
    let c = c_path(path)?;
    // BPF_F_RDONLY: inspecting needs no write access.
    let opts = libbpf_rs::libbpf_sys::bpf_obj_get_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_obj_get_opts>() as _,
        file_flags: libbpf_rs::libbpf_sys::BPF_F_RDONLY,
        ..Default::default()
    };
    // SAFETY: a NUL-terminated path and a valid opts struct.
    let fd = unsafe { libbpf_rs::libbpf_sys::bpf_obj_get_opts(c.as_ptr(), &opts) };
    if fd < 0 {
        let errno = -fd;
        return Err(match errno {
            libc::ENOENT => Fail::NoMap(path.to_path_buf()),
            libc::EPERM | libc::EACCES => Fail::NoPrivilege(format!(
                "opening the pin {} was denied ({}): run as root or as its owner",
                path.display(),
                describe_file(path)
            )),
            _ => Fail::Incompatible {
                path: path.to_path_buf(),
                reason: format!(
                    "it cannot be opened as a BPF object ({})",
                    std::io::Error::from_raw_os_error(errno)
                ),
            },
        });
    }
    // SAFETY: a new fd we own.
    Ok(Pinned {
        fd: unsafe { OwnedFd::from_raw_fd(fd) },
    })
}

/// A validated `tld_data_map`.
#[derive(Debug, Clone, Copy)]
pub struct MapId {
    pub id: u32,
    pub layout: Layout,
}

/// How a layout is named to users.
pub fn layout_name(layout: Layout) -> String {
    format!("{}-byte value", layout.value_size())
}

/// The core's rules for a `tld_data_map`: task storage, key 4, value 24 or
/// 16 (DESIGN §2.5), BTF.
pub fn validate(path: &Path, pinned: &Pinned) -> Result<MapId, Fail> {
    use std::os::fd::AsRawFd;
    let bad = |reason: String| Fail::Incompatible {
        path: path.to_path_buf(),
        reason,
    };
    let link = std::fs::read_link(format!("/proc/self/fd/{}", pinned.fd.as_raw_fd()))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !link.contains("bpf-map") {
        let kind = link.strip_prefix("anon_inode:").unwrap_or(&link);
        return Err(bad(format!("it is a {kind}, not a BPF map")));
    }
    let info = libbpf_rs::MapInfo::new(pinned.fd.as_fd())
        .map_err(|e| Fail::Other(format!("reading the map info of {}: {e}", path.display())))?;
    let info = info.info;
    if info.type_ != BPF_MAP_TYPE_TASK_STORAGE {
        return Err(bad(format!(
            "map type {} (\"{}\"), not task storage ({BPF_MAP_TYPE_TASK_STORAGE})",
            info.type_,
            c_chars(&info.name)
        )));
    }
    let layout = Layout::from_value_size(info.value_size);
    if info.key_size as usize != MAP_KEY_SIZE || layout.is_none() {
        return Err(bad(format!(
            "key size {} and value size {}, not {MAP_KEY_SIZE} and 24 (or 16)",
            info.key_size, info.value_size
        )));
    }
    if info.btf_id == 0 || info.btf_value_type_id == 0 {
        return Err(bad(
            "it has no BTF describing its value (the UPTRs need it)".into(),
        ));
    }
    Ok(MapId {
        id: info.id,
        layout: layout.expect("checked above"),
    })
}

fn c_chars(raw: &[libc::c_char]) -> String {
    let bytes: Vec<u8> = raw
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Opens and validates the map pinned at `path`.
pub fn open_map(path: &Path) -> Result<MapId, Fail> {
    let pinned = obj_get(path)?;
    validate(path, &pinned)
}

fn resolve_group(group: &str) -> Result<u32, Fail> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let c = CString::new(group).map_err(|_| Fail::Other(format!("bad group name {group:?}")))?;
    // SAFETY: NUL-terminated name; the result is read at once.
    let gr = unsafe { libc::getgrnam(c.as_ptr()) };
    if gr.is_null() {
        return Err(Fail::Other(format!("no group named {group}")));
    }
    Ok(unsafe { (*gr).gr_gid })
}

fn apply_owner_mode(path: &Path, mode: Option<u32>, gid: Option<u32>) -> Result<(), Fail> {
    if let Some(gid) = gid {
        let c = c_path(path)?;
        // SAFETY: NUL-terminated path; uid -1 keeps the owner.
        if unsafe { libc::chown(c.as_ptr(), u32::MAX, gid) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(Fail::Other(format!(
                "setting the group of {} to {gid}: {e}",
                path.display()
            )));
        }
    }
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| {
            Fail::Other(format!(
                "setting the mode of {} to {mode:04o}: {e}",
                path.display()
            ))
        })?;
    }
    Ok(())
}

/// Creates `dir` and its missing ancestors with mode 0755 whatever the
/// umask: the pin's own mode decides who may use the map, so the
/// directories must let every user reach it.
fn create_dirs(dir: &Path) -> Result<(), Fail> {
    if dir.as_os_str().is_empty() || dir.exists() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| Fail::Other(format!("setting the mode of {}: {e}", dir.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(Fail::NoPrivilege(
            format!("creating {}: {e}", dir.display()),
        )),
        Err(e) => Err(Fail::Other(format!("creating {}: {e}", dir.display()))),
    }
}

/// An existing pin of another layout than the one asked for.
fn check_layout(path: &Path, found: MapId, want: Option<Layout>) -> Result<(), Fail> {
    match want {
        Some(want) if want != found.layout => Err(Fail::Incompatible {
            path: path.to_path_buf(),
            reason: format!(
                "it is a tld_data_map with the {}, not the {} asked for (unpin it first to replace it)",
                layout_name(found.layout),
                layout_name(want)
            ),
        }),
        _ => Ok(()),
    }
}

/// `tld pin`. `layout`: None keeps any existing map and creates the
/// 24-byte layout.
pub fn pin(
    path: &Path,
    mode: Option<u32>,
    group: Option<&str>,
    layout: Option<Layout>,
) -> Result<(), Fail> {
    let gid = group.map(resolve_group).transpose()?;
    require_bpffs(path)?;
    if std::fs::symlink_metadata(path).is_ok() {
        let map = open_map(path)?;
        check_layout(path, map, layout)?;
        apply_owner_mode(path, mode, gid)?;
        println!(
            "already pinned: {} (map id {}, {}, {})",
            path.display(),
            map.id,
            layout_name(map.layout),
            describe_file(path)
        );
        return Ok(());
    }
    if !tld_bpf::has_bpf_privileges() {
        return Err(Fail::NoPrivilege(
            "creating tld_data_map needs root (or CAP_BPF and CAP_PERFMON)".into(),
        ));
    }
    if let Some(dir) = path.parent() {
        create_dirs(dir)?;
    }
    let new_layout = layout.unwrap_or_default();
    if let Err(err) = tld_bpf::inspect::create_pinned_map(path, new_layout) {
        // Lost a race with another `tld pin`: fine if what won is compatible.
        if let tld_bpf::Error::Bpf { ref op, .. } = err {
            if op.starts_with("pinning") && std::fs::symlink_metadata(path).is_ok() {
                check_layout(path, open_map(path)?, layout)?;
                apply_owner_mode(path, mode, gid)?;
                println!(
                    "already pinned: {} ({})",
                    path.display(),
                    describe_file(path)
                );
                return Ok(());
            }
            if op.starts_with("creating") {
                return Err(Fail::Unsupported(format!(
                    "the kernel refused to create tld_data_map ({err}); UPTRs in task storage need Linux 6.13+"
                )));
            }
        }
        return Err(Fail::from_bpf("creating and pinning tld_data_map", err));
    }
    if let Err(e) = apply_owner_mode(path, mode, gid) {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    let map = open_map(path)?;
    println!(
        "pinned: {} (map id {}, {}, {})",
        path.display(),
        map.id,
        layout_name(map.layout),
        describe_file(path)
    );
    Ok(())
}

/// `tld unpin`.
pub fn unpin(path: &Path) -> Result<(), Fail> {
    open_map(path)?;
    std::fs::remove_file(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            Fail::NoPrivilege(format!("removing {}: {e}", path.display()))
        } else {
            Fail::Other(format!("removing {}: {e}", path.display()))
        }
    })?;
    println!("unpinned: {}", path.display());
    Ok(())
}
