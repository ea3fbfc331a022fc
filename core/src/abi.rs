//! The wire layout BPF programs read (DESIGN §2).
//!
//! Everything here is shared with `bpf/tld.bpf.h` and with every other copy of
//! the core in the process, so it changes only together with
//! [`RUNTIME_ABI_VERSION`](crate::RUNTIME_ABI_VERSION) and the BPF header.
//! The page size `P` is read at run time; nothing assumes 4096.

/// Bytes of a slot's name field, including the terminating NUL (`TLD_NAME_LEN`).
pub const NAME_LEN: usize = 62;
/// Longest name in bytes (the field keeps one NUL).
pub const MAX_NAME_BYTES: usize = NAME_LEN - 1;
/// Bytes of one metadata slot: `name[62]` then `u16 size`.
pub const SLOT_SIZE: usize = 64;
/// Bytes before slot 0 in the metadata page: `u16 cnt`, `u16 size`.
pub const META_HEADER_SIZE: usize = 4;
/// Bytes of a thread block's header; the data area follows it, so `start` is never 0.
pub const BLOCK_HEADER_SIZE: usize = 8;
/// Bytes of a `tld_data_map` value: `data`, `meta`, `start` and padding.
pub const MAP_VALUE_SIZE: usize = 24;
/// Bytes of the 16-byte value (upstream's Linux-tree layout): `data`, `meta`;
/// BPF reads `start` from offset 0 of the data page (DESIGN §2.4).
pub const MAP_VALUE16_SIZE: usize = 16;
/// `"TLDSTMP1"`: marks the metadata page's exec stamp as set (DESIGN §2.1).
pub const STAMP_MAGIC: u64 = u64::from_le_bytes(*b"TLDSTMP1");
/// Offset of the stamp magic from the end of the metadata page; the stamp follows it.
pub const STAMP_FROM_END: usize = 16;
/// Key size of `tld_data_map`: a pidfd (`int`).
pub const MAP_KEY_SIZE: usize = 4;
/// Values are 8-byte aligned inside the data area.
pub const VALUE_ALIGN: usize = 8;

/// One metadata slot (64 bytes), for layout checks: the runtime reaches
/// slots through atomics, never through a reference to this struct (other
/// threads write the bytes it spans). `size` is written last with release
/// order; 0 means claimed but not yet written.
#[repr(C)]
pub struct Slot {
    pub name: [u8; NAME_LEN],
    pub size: u16,
}

/// Start of the metadata page, for layout checks. Slots follow at [`META_HEADER_SIZE`].
#[repr(C)]
pub struct MetaHeader {
    /// Slots `0..cnt` are claimed (atomic).
    pub cnt: u16,
    /// Bytes of key data every thread block holds (static keys + dynamic reserve; atomic).
    pub size: u16,
}

/// The value stored in `tld_data_map` for one thread (keyed by its pidfd).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapValue {
    /// Page-aligned address of the page holding the thread's block (`__uptr`).
    pub data: u64,
    /// Address of the metadata page (`__uptr`).
    pub meta: u64,
    /// Offset within the data page of the thread's data area (block offset + 8).
    pub start: u16,
    pub _pad: [u8; 6],
}

/// The 16-byte value of `tld_data_map`: the thread's page block and the
/// metadata page (DESIGN §2.4).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapValue16 {
    /// Address of the thread's page block, whose first u64 is `start` (`__uptr`).
    pub data: u64,
    /// Address of the metadata page (`__uptr`).
    pub meta: u64,
}

/// Number of slots in a metadata page of `page_size` bytes (`P / 64 - 1`).
pub const fn max_slots(page_size: usize) -> usize {
    page_size / SLOT_SIZE - 1
}

/// Byte offset of slot `i` in the metadata page.
pub const fn slot_offset(i: usize) -> usize {
    META_HEADER_SIZE + SLOT_SIZE * i
}

/// Bytes of data area a thread block can ever hold: the block fits in one page
/// and key offsets are signed 16-bit.
pub const fn max_data_size(page_size: usize) -> usize {
    let limit = if page_size < 32768 { page_size } else { 32768 };
    limit - BLOCK_HEADER_SIZE
}

/// `x` rounded up to a multiple of 8: the space a value of `x` bytes takes.
pub const fn round_up8(x: usize) -> usize {
    (x + VALUE_ALIGN - 1) & !(VALUE_ALIGN - 1)
}

/// Size of the block that holds `data_size` bytes of data: the next power of
/// two of data plus header, so blocks tile a page without crossing it.
pub const fn block_size(data_size: usize) -> usize {
    let need = data_size + BLOCK_HEADER_SIZE;
    let min = 2 * BLOCK_HEADER_SIZE;
    let n = if need < min { min } else { need };
    n.next_power_of_two()
}

/// Checks a key name against DESIGN §3: 1 to 61 bytes, no NUL.
pub fn check_name(name: &[u8]) -> Result<(), NameProblem> {
    if name.is_empty() {
        Err(NameProblem::Empty)
    } else if name.len() > MAX_NAME_BYTES {
        Err(NameProblem::TooLong)
    } else if name.contains(&0) {
        Err(NameProblem::ContainsNul)
    } else {
        Ok(())
    }
}

/// Why a name was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameProblem {
    Empty,
    TooLong,
    ContainsNul,
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    fn struct_layouts_match_the_wire() {
        assert_eq!(size_of::<Slot>(), SLOT_SIZE);
        assert_eq!(offset_of!(Slot, name), 0);
        assert_eq!(offset_of!(Slot, size), 62);
        assert_eq!(size_of::<MetaHeader>(), META_HEADER_SIZE);
        assert_eq!(offset_of!(MetaHeader, cnt), 0);
        assert_eq!(offset_of!(MetaHeader, size), 2);
        assert_eq!(size_of::<MapValue>(), MAP_VALUE_SIZE);
        assert_eq!(offset_of!(MapValue, data), 0);
        assert_eq!(offset_of!(MapValue, meta), 8);
        assert_eq!(offset_of!(MapValue, start), 16);
        assert_eq!(align_of::<MapValue>(), 8);
        assert_eq!(size_of::<MapValue16>(), MAP_VALUE16_SIZE);
        assert_eq!(offset_of!(MapValue16, meta), 8);
        assert_eq!(&STAMP_MAGIC.to_le_bytes(), b"TLDSTMP1");
        // The stamp sits in the tail after the last slot, which BPF slot reads never reach.
        assert!(slot_offset(max_slots(4096)) <= 4096 - STAMP_FROM_END);
    }

    #[test]
    fn four_kib_pages() {
        assert_eq!(max_slots(4096), 63);
        assert_eq!(slot_offset(0), 4);
        assert_eq!(slot_offset(62), 4 + 64 * 62);
        // The last slot ends 60 bytes before the end of the page: the tail BPF never reads.
        assert_eq!(4096 - (slot_offset(62) + SLOT_SIZE), 60);
        assert_eq!(max_data_size(4096), 4088);
        assert_eq!(block_size(4088), 4096);
        assert_eq!(block_size(64), 128);
        assert_eq!(block_size(56), 64);
        assert_eq!(block_size(0), 16);
    }

    #[test]
    fn slot_count_follows_the_run_time_page_size() {
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        assert_eq!(max_slots(p), p / 64 - 1);
        assert!(slot_offset(max_slots(p) - 1) + SLOT_SIZE <= p);
        assert!(block_size(max_data_size(p)) <= p);
        assert_eq!(max_slots(65536), 1023);
        assert_eq!(max_data_size(65536), 32760);
    }

    #[test]
    fn names() {
        assert_eq!(check_name(b""), Err(NameProblem::Empty));
        assert_eq!(check_name(&[b'a'; 61]), Ok(()));
        assert_eq!(check_name(&[b'a'; 62]), Err(NameProblem::TooLong));
        assert_eq!(check_name(b"a\0b"), Err(NameProblem::ContainsNul));
    }

    #[test]
    fn rounding() {
        assert_eq!(round_up8(1), 8);
        assert_eq!(round_up8(8), 8);
        assert_eq!(round_up8(9), 16);
        assert_eq!(round_up8(32), 32);
    }
}
