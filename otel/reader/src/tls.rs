//! An out-of-process reader of OTEP 4947's TLS path: the objects of
//! /proc/PID/maps that define `otel_thread_ctx_v1` in `.dynsym`, where each
//! thread's copy of it lives, and the record it points at. It reads a thread
//! while the thread is stopped (ptrace), as the OTEP requires.
//!
//! Where a module's TLS block is, for a thread with thread pointer `tp`
//! (glibc, x86_64 and aarch64):
//! - a relocation `TLSDESC` against the symbol: its GOT pair is (resolver,
//!   argument); the argument is either the offset from `tp` (static TLS) or
//!   a pointer to `{module id, offset}` (dynamic TLS);
//! - `DTPMOD64`: the GOT holds the module id; `TPOFF64`: the offset from `tp`;
//! - no relocation (an executable, whose accesses were relaxed to
//!   local-exec): module 1;
//! - module `m`'s block is the DTV's entry `m` (16-byte entries; the DTV
//!   pointer is at `tp + 8` on x86_64, `tp + 0` on aarch64).

use crate::{maps, read_memory};

const SYMBOL: &[u8] = b"otel_thread_ctx_v1";

#[cfg(target_arch = "x86_64")]
mod arch {
    pub const R_TLSDESC: u32 = 36;
    pub const R_DTPMOD64: u32 = 16;
    pub const R_TPOFF64: u32 = 18;
    pub const DTV_AT: u64 = 8;
}
#[cfg(target_arch = "aarch64")]
mod arch {
    pub const R_TLSDESC: u32 = 1031;
    pub const R_DTPMOD64: u32 = 1028;
    pub const R_TPOFF64: u32 = 1030;
    pub const DTV_AT: u64 = 0;
}

/// How a module reaches its `otel_thread_ctx_v1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Relocation `TLSDESC` at this GOT address.
    Tlsdesc { got: u64 },
    /// Relocation `DTPMOD64` at this GOT address.
    DtpMod { got: u64 },
    /// Relocation `TPOFF64` at this GOT address.
    TpOff { got: u64 },
    /// No relocation: the executable's own TLS, module 1.
    Executable,
}

/// A loaded object that defines the symbol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSymbol {
    pub path: String,
    /// Load bias of the object.
    pub base: u64,
    /// The symbol's offset in the object's TLS block (`st_value`).
    pub offset: u64,
    pub access: Access,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

struct Section {
    kind: u32,
    offset: usize,
    size: usize,
    link: usize,
}

/// A TLS relocation against the symbol: its type and GOT offset.
type Reloc = (u32, u64);

/// Finds the symbol in an ELF64 file's `.dynsym` and its TLS relocation:
/// `(st_value, relocation, lowest PT_LOAD address)`.
fn find_symbol(elf: &[u8]) -> Option<(u64, Option<Reloc>, u64)> {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 {
        return None;
    }
    let (shoff, shnum) = (u64_at(elf, 0x28) as usize, u16_at(elf, 0x3c) as usize);
    let sections: Vec<Section> = (0..shnum)
        .filter_map(|i| {
            let s = elf.get(shoff + 64 * i..shoff + 64 * (i + 1))?;
            Some(Section {
                kind: u32_at(s, 4),
                offset: u64_at(s, 24) as usize,
                size: u64_at(s, 32) as usize,
                link: u32_at(s, 40) as usize,
            })
        })
        .collect();
    let (dynsym_index, dynsym) = sections.iter().enumerate().find(|(_, s)| s.kind == 11 /* SHT_DYNSYM */)?;
    let strtab = sections.get(dynsym.link)?;
    let syms = elf.get(dynsym.offset..dynsym.offset + dynsym.size)?;
    let strs = elf.get(strtab.offset..strtab.offset + strtab.size)?;
    let (sym_index, value) = syms.chunks_exact(24).enumerate().find_map(|(i, s)| {
        let name = strs.get(u32_at(s, 0) as usize..)?;
        let name = &name[..name.iter().position(|&c| c == 0)?];
        // STT_TLS (6), defined (st_shndx != 0).
        (name == SYMBOL && s[4] & 0xf == 6 && u16_at(s, 6) != 0).then(|| (i, u64_at(s, 8)))
    })?;
    let reloc = sections
        .iter()
        .filter(|s| s.kind == 4 /* SHT_RELA */ && s.link == dynsym_index)
        .filter_map(|s| elf.get(s.offset..s.offset + s.size))
        .flat_map(|r| r.chunks_exact(24))
        .find_map(|r| {
            let info = u64_at(r, 8);
            let kind = info as u32;
            ((info >> 32) as usize == sym_index && [arch::R_TLSDESC, arch::R_DTPMOD64, arch::R_TPOFF64].contains(&kind))
                .then(|| (kind, u64_at(r, 0)))
        });
    let (phoff, phnum) = (u64_at(elf, 0x20) as usize, u16_at(elf, 0x38) as usize);
    let first_load = (0..phnum)
        .filter_map(|i| elf.get(phoff + 56 * i..phoff + 56 * (i + 1)))
        .filter(|p| u32_at(p, 0) == 1 /* PT_LOAD */)
        .map(|p| u64_at(p, 16))
        .min()?;
    Some((value, reloc, first_load))
}

/// Every object mapped into `pid` that defines `otel_thread_ctx_v1` in `.dynsym`.
pub fn tls_symbols(pid: i32) -> Result<Vec<TlsSymbol>, String> {
    let mut out: Vec<TlsSymbol> = vec![];
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).map_err(|e| format!("/proc/{pid}/exe: {e}"))?;
    for m in maps(pid)? {
        if !m.name.starts_with('/') || m.file_offset != 0 || out.iter().any(|s| s.path == m.name) {
            continue;
        }
        // Through map_files the reader sees the very file mapped, even if it was replaced since.
        let file = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
        let Ok(elf) = std::fs::read(&file).or_else(|_| std::fs::read(&m.name)) else { continue };
        let Some((offset, reloc, first_load)) = find_symbol(&elf) else { continue };
        let base = m.start - (first_load & !0xfff);
        let access = match reloc {
            Some((k, got)) if k == arch::R_TLSDESC => Access::Tlsdesc { got: base + got },
            Some((k, got)) if k == arch::R_DTPMOD64 => Access::DtpMod { got: base + got },
            Some((_, got)) => Access::TpOff { got: base + got },
            None if std::path::Path::new(&m.name) == exe => Access::Executable,
            None => continue, // a library whose accesses we cannot place
        };
        out.push(TlsSymbol { path: m.name.clone(), base, offset, access });
    }
    Ok(out)
}

fn word(pid: i32, at: u64) -> Result<u64, String> {
    let mut b = [0u8; 8];
    read_memory(pid, at, &mut b)?;
    Ok(u64::from_ne_bytes(b))
}

/// The address of module `module`'s TLS block for the thread whose thread pointer is `tp`.
fn dtv_block(pid: i32, tp: u64, module: u64) -> Result<Option<u64>, String> {
    let dtv = word(pid, tp + arch::DTV_AT)?;
    let block = word(pid, dtv + 16 * module)?;
    // TLS_DTV_UNALLOCATED: the thread never touched that module's TLS.
    Ok((block != u64::MAX && block != 0).then_some(block))
}

/// The address of `sym`'s copy for the thread whose thread pointer is `tp`
/// (`None`: the thread has no block for that module yet).
pub fn slot_address(pid: i32, tp: u64, sym: &TlsSymbol) -> Result<Option<u64>, String> {
    match sym.access {
        Access::Executable => Ok(dtv_block(pid, tp, 1)?.map(|b| b + sym.offset)),
        Access::TpOff { got } => Ok(Some(tp.wrapping_add(word(pid, got)?))),
        Access::DtpMod { got } => {
            let offset = word(pid, got + 8)?;
            Ok(dtv_block(pid, tp, word(pid, got)?)?.map(|b| b + offset))
        }
        Access::Tlsdesc { got } => {
            let arg = word(pid, got + 8)?;
            // Dynamic TLS: the argument points at {module id, offset, generation}.
            let mut dynamic = [0u8; 16];
            if read_memory(pid, arg, &mut dynamic).is_ok() {
                let module = u64::from_ne_bytes(dynamic[..8].try_into().unwrap());
                let offset = u64::from_ne_bytes(dynamic[8..].try_into().unwrap());
                if offset == sym.offset && (1..1 << 20).contains(&module) {
                    return Ok(dtv_block(pid, tp, module)?.map(|b| b + offset));
                }
            }
            // Static TLS: the argument is the offset from the thread pointer.
            Ok(Some(tp.wrapping_add(arg)))
        }
    }
}

/// A thread stopped with ptrace (`PTRACE_SEIZE` + `PTRACE_INTERRUPT`),
/// resumed on drop. Create, use and drop it on one thread.
pub struct Stopped {
    tid: i32,
}

impl Stopped {
    pub fn new(tid: i32) -> Result<Stopped, String> {
        let err = |what: &str| format!("{what} of thread {tid}: {}", std::io::Error::last_os_error());
        if unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0) } != 0 {
            return Err(err("PTRACE_SEIZE"));
        }
        let stopped = Stopped { tid };
        if unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0) } != 0 {
            return Err(err("PTRACE_INTERRUPT"));
        }
        let mut status = 0;
        if unsafe { libc::waitpid(tid, &mut status, libc::__WALL) } != tid {
            return Err(err("waitpid"));
        }
        Ok(stopped)
    }

    /// The thread pointer: `fs_base` on x86_64, `tpidr_el0` on aarch64.
    pub fn thread_pointer(&self) -> Result<u64, String> {
        #[cfg(target_arch = "x86_64")]
        {
            let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
            if unsafe { libc::ptrace(libc::PTRACE_GETREGS, self.tid, 0, &mut regs) } != 0 {
                return Err(format!("PTRACE_GETREGS: {}", std::io::Error::last_os_error()));
            }
            Ok(regs.fs_base)
        }
        #[cfg(target_arch = "aarch64")]
        {
            const NT_ARM_TLS: libc::c_int = 0x401;
            let mut tp = 0u64;
            let mut iov = libc::iovec { iov_base: (&mut tp as *mut u64).cast(), iov_len: 8 };
            if unsafe { libc::ptrace(libc::PTRACE_GETREGSET, self.tid, NT_ARM_TLS, &mut iov) } != 0 {
                return Err(format!("PTRACE_GETREGSET NT_ARM_TLS: {}", std::io::Error::last_os_error()));
            }
            Ok(tp)
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        unsafe { libc::ptrace(libc::PTRACE_DETACH, self.tid, 0, 0) };
    }
}

/// What one thread's copy of one symbol held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotRead {
    pub path: String,
    /// Where the thread's copy of the variable is (0: no block for that
    /// module yet). Objects whose references bound to another object's
    /// definition (ELF interposition) show that object's address.
    pub address: u64,
    /// The pointer's value (0: NULL, or no block for that module yet).
    pub pointer: u64,
}

/// A thread as an OTEP 4947 reader sees it: every exported symbol's
/// pointer, and the record the non-NULL one points at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadView {
    pub slots: Vec<SlotRead>,
    /// The 28-byte header then `attrs-data-size` bytes, read while stopped.
    pub record: Option<Vec<u8>>,
}

/// Reads thread `tid` of process `pid` through every symbol in `symbols`,
/// with the thread stopped.
pub fn read_thread(pid: i32, tid: i32, symbols: &[TlsSymbol]) -> Result<ThreadView, String> {
    let stopped = Stopped::new(tid)?;
    let tp = stopped.thread_pointer()?;
    let mut view = ThreadView::default();
    for sym in symbols {
        let address = slot_address(pid, tp, sym)?.unwrap_or(0);
        let pointer = if address != 0 { word(pid, address)? } else { 0 };
        view.slots.push(SlotRead { path: sym.path.clone(), address, pointer });
        if pointer != 0 && view.record.is_none() {
            let mut header = [0u8; 28];
            read_memory(pid, pointer, &mut header)?;
            let size = u16::from_ne_bytes([header[26], header[27]]) as usize;
            let mut record = vec![0u8; 28 + size];
            read_memory(pid, pointer, &mut record)?;
            view.record = Some(record);
        }
    }
    drop(stopped);
    Ok(view)
}
