//! Lock-free key creation (DESIGN §3) and the per-thread data budget.
//!
//! A key is published in three steps: claim slot `cnt` with a compare-and-swap
//! on `cnt`, write the name, store the size with release order. Readers (other
//! creators, BPF, the inspector) wait for a non-zero size before they trust a
//! slot. Offsets are never stored: slot `i` starts at the sum of the rounded
//! sizes of slots `0..i`, so a winner of the CAS on `cnt` owns its range.
//!
//! This module only touches the metadata through [`MetaSlots`], so the same
//! code runs on the real metadata page and in the loom model (whose build
//! leaves out the runtime, hence the `dead_code` allowance there).
#![cfg_attr(loom, allow(dead_code))]

use crate::abi::{round_up8, NAME_LEN};
use crate::sync::{AtomicU16, AtomicU64, Ordering};

/// Access to the metadata page's counter and slots.
pub(crate) trait MetaSlots {
    fn cnt(&self) -> &AtomicU16;
    fn slot_size(&self, i: usize) -> &AtomicU16;
    /// The name bytes of slot `i` (NUL padded).
    fn slot_name(&self, i: usize) -> [u8; NAME_LEN];
    /// Writes slot `i`'s name. Only the winner of slot `i` calls it, before publishing its size.
    fn write_slot_name(&self, i: usize, name: &[u8]);
    fn max_slots(&self) -> usize;
    /// Enters a creation: waits while a fork is being prepared, and records
    /// which slot this thread is about to claim (DESIGN §5.3, §5.6).
    fn begin_creation(&self) -> Result<Creation<'_>, CreateError> {
        Ok(Creation::untracked())
    }
    /// Whether slot `i` was claimed by a creation of this very thread that a
    /// signal handler interrupted: waiting for it would wait forever.
    fn claimed_by_this_thread(&self, _i: usize) -> bool {
        false
    }
    /// Whether slot `i` may be claimed at all (a 16-byte map caps the count at 255).
    fn may_claim(&self, _i: usize) -> bool {
        true
    }
}

/// A key creation in progress. It announces the slot it is about to claim
/// (thread id and slot, in a process-wide record) until dropped, so a fork
/// waits for it and a signal handler on the same thread knows not to wait.
pub(crate) struct Creation<'a> {
    record: Option<&'a std::sync::atomic::AtomicU64>,
    tid: u64,
}

impl<'a> Creation<'a> {
    /// A creation nothing else needs to know about (the loom model, tests).
    pub(crate) fn untracked() -> Self {
        Creation { record: None, tid: 0 }
    }

    /// A creation holding `record` for thread `tid`.
    pub(crate) fn tracked(record: &'a std::sync::atomic::AtomicU64, tid: u32) -> Self {
        Creation { record: Some(record), tid: tid as u64 }
    }

    /// Announces that this thread is about to claim `slot` (before the CAS,
    /// so a signal handler interrupting right after a won CAS knows), or,
    /// with `None`, that it claims nothing (after a lost CAS).
    fn announce(&self, slot: Option<usize>) {
        if let Some(r) = self.record {
            let slot = slot.map_or(0, |s| s as u64 + 1);
            r.store(self.tid << 32 | slot, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

impl Drop for Creation<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.record {
            r.store(0, std::sync::atomic::Ordering::Release);
        }
    }
}

/// A published key: its slot, its offset in the data area and its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    pub slot: u16,
    pub offset: u16,
    pub size: u16,
}

/// How creation failed, before it is given a name in [`crate::Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CreateError {
    Exists(KeyInfo),
    TooBig { available: usize },
    NoSpace,
    /// A signal handler re-entered a creation of its own thread (`EDEADLK`).
    Reentered,
}

/// Static keys grow the data size while no block exists; dynamic keys must fit what is there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Static,
    Dynamic,
}

/// Waits for a claimed slot's size. A claimer writes it right after its CAS;
/// the only claimer that cannot is this thread itself, interrupted by the
/// signal handler now waiting.
pub(crate) fn wait_size<M: MetaSlots>(meta: &M, i: usize) -> Result<u16, CreateError> {
    loop {
        let sz = meta.slot_size(i).load(Ordering::Acquire);
        if sz != 0 {
            return Ok(sz);
        }
        if meta.claimed_by_this_thread(i) {
            return Err(CreateError::Reentered);
        }
        crate::sync::yield_now();
    }
}

fn name_matches(field: &[u8; NAME_LEN], name: &[u8]) -> bool {
    field[..name.len()] == *name && field[name.len()] == 0
}

/// Looks a name up among the published slots.
pub(crate) fn find<M: MetaSlots>(meta: &M, name: &[u8]) -> Result<Option<KeyInfo>, CreateError> {
    let cnt = (meta.cnt().load(Ordering::Acquire) as usize).min(meta.max_slots());
    let mut off = 0usize;
    for i in 0..cnt {
        let sz = wait_size(meta, i)?;
        if name_matches(&meta.slot_name(i), name) {
            return Ok(Some(KeyInfo { slot: i as u16, offset: off as u16, size: sz }));
        }
        off += round_up8(sz as usize);
    }
    Ok(None)
}

/// Creates a key (strict: an existing name is an error). `name` and `size` are already checked.
pub(crate) fn create<M: MetaSlots>(
    meta: &M,
    budget: &Budget,
    name: &[u8],
    size: u16,
    kind: KeyKind,
) -> Result<KeyInfo, CreateError> {
    let creation = meta.begin_creation()?;
    let max = meta.max_slots();
    let need = round_up8(size as usize);
    let mut scanned = 0usize; // slots already compared
    let mut off = 0usize; // their total rounded size
    let mut grown = false;
    loop {
        let cnt = (meta.cnt().load(Ordering::Acquire) as usize).min(max);
        while scanned < cnt {
            let sz = wait_size(meta, scanned)?;
            if name_matches(&meta.slot_name(scanned), name) {
                let info = KeyInfo { slot: scanned as u16, offset: off as u16, size: sz };
                return Err(CreateError::Exists(info));
            }
            off += round_up8(sz as usize);
            scanned += 1;
        }
        if cnt >= max || !meta.may_claim(cnt) {
            return Err(CreateError::NoSpace);
        }
        if kind == KeyKind::Static && !grown {
            // A static key brings its own bytes: the reserve stays whole.
            grown = budget.grow_static(need);
        }
        // Marking "keys exist" before the fit check is what makes a concurrent
        // shrink of the reserve impossible once this check has passed.
        let mut capacity = budget.mark_keys_exist().capacity();
        if kind == KeyKind::Static && grown && off + need > capacity && budget.grow_static_to(off + need) {
            // A concurrent key took the bytes this one grew: grow again by
            // what is missing, so a static key never fails for space another
            // key took (DESIGN §3.4).
            capacity = budget.load().capacity();
        }
        if off + need > capacity {
            return Err(CreateError::TooBig { available: capacity.saturating_sub(off) });
        }
        creation.announce(Some(cnt));
        let claimed = meta
            .cnt()
            .compare_exchange(cnt as u16, cnt as u16 + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if claimed {
            meta.write_slot_name(cnt, name);
            meta.slot_size(cnt).store(size, Ordering::Release);
            return Ok(KeyInfo { slot: cnt as u16, offset: off as u16, size });
        }
        // Another creator took slot `cnt`: compare its name, then try the next slot.
        creation.announce(None);
    }
}

/// The data size every thread block holds, as one atomic word so that growth,
/// the reserve and freezing are linearizable:
/// bits 0..16 static bytes, 16..32 dynamic reserve, bit 62 keys exist, bit 63 frozen.
#[repr(C)]
pub struct Budget {
    state: AtomicU64,
    max_data: u64,
}

/// A snapshot of [`Budget`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetState(u64);

const FROZEN: u64 = 1 << 63;
const KEYS_EXIST: u64 = 1 << 62;
const FIELD: u64 = 0xffff;

impl BudgetState {
    pub fn static_size(self) -> usize {
        (self.0 & FIELD) as usize
    }
    pub fn reserve(self) -> usize {
        ((self.0 >> 16) & FIELD) as usize
    }
    pub fn capacity(self) -> usize {
        self.static_size() + self.reserve()
    }
    pub fn frozen(self) -> bool {
        self.0 & FROZEN != 0
    }
    pub fn keys_exist(self) -> bool {
        self.0 & KEYS_EXIST != 0
    }
    fn with(self, static_size: usize, reserve: usize) -> u64 {
        (self.0 & (FROZEN | KEYS_EXIST)) | static_size as u64 | (reserve as u64) << 16
    }
}

/// Why the reserve could not be changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReserveError {
    /// A thread block exists: the size is frozen.
    Frozen,
    /// Keys exist and the new reserve is smaller: they might not fit any more.
    KeysExist,
    /// More than a block can hold.
    TooLarge { max: usize },
}

impl Budget {
    pub fn new(reserve: usize, max_data: usize) -> Self {
        let reserve = reserve.min(max_data);
        Budget { state: AtomicU64::new((reserve as u64) << 16), max_data: max_data as u64 }
    }

    pub fn load(&self) -> BudgetState {
        BudgetState(self.state.load(Ordering::Acquire))
    }

    fn update(&self, mut f: impl FnMut(BudgetState) -> Option<u64>) -> Result<BudgetState, BudgetState> {
        self.state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| f(BudgetState(s)))
            .map(BudgetState)
            .map_err(BudgetState)
    }

    /// Adds `bytes` of static data unless frozen or past a block's limit. Returns whether it grew.
    fn grow_static(&self, bytes: usize) -> bool {
        let max = self.max_data as usize;
        self.update(|s| {
            let grown = s.static_size() + bytes;
            (!s.frozen() && grown + s.reserve() <= max).then(|| s.with(grown, s.reserve()))
        })
        .is_ok()
    }

    /// Grows the static data until the capacity reaches `target` bytes,
    /// unless frozen or past a block's limit. Returns whether it reaches it.
    fn grow_static_to(&self, target: usize) -> bool {
        let max = self.max_data as usize;
        self.update(|s| {
            if s.capacity() >= target {
                return Some(s.0);
            }
            let grown = s.static_size() + (target - s.capacity());
            (!s.frozen() && grown + s.reserve() <= max).then(|| s.with(grown, s.reserve()))
        })
        .is_ok()
    }

    fn mark_keys_exist(&self) -> BudgetState {
        BudgetState(self.state.fetch_or(KEYS_EXIST, Ordering::AcqRel) | KEYS_EXIST)
    }

    /// Sets the dynamic reserve. It may grow until the first block exists and
    /// shrink only while no key exists.
    pub(crate) fn set_reserve(&self, reserve: usize) -> Result<BudgetState, ReserveError> {
        let max = self.max_data as usize;
        let mut why = ReserveError::Frozen;
        self.update(|s| {
            if s.frozen() {
                why = ReserveError::Frozen;
                None
            } else if s.keys_exist() && reserve < s.reserve() {
                why = ReserveError::KeysExist;
                None
            } else if s.static_size() + reserve > max {
                why = ReserveError::TooLarge { max: max - s.static_size() };
                None
            } else {
                Some(s.with(s.static_size(), reserve))
            }
        })
        .map_err(|_| why)
    }

    /// Freezes the size (the first block is about to exist) and returns the final state.
    pub fn freeze(&self) -> BudgetState {
        BudgetState(self.state.fetch_or(FROZEN, Ordering::AcqRel) | FROZEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::UnsafeCell;

    /// An in-memory metadata table for the unit tests and the loom model.
    pub(crate) struct Table {
        cnt: AtomicU16,
        sizes: Vec<AtomicU16>,
        names: Vec<UnsafeCell<[u8; NAME_LEN]>>,
    }
    unsafe impl Sync for Table {}
    impl Table {
        fn new(n: usize) -> Self {
            Table {
                cnt: AtomicU16::new(0),
                sizes: (0..n).map(|_| AtomicU16::new(0)).collect(),
                names: (0..n).map(|_| UnsafeCell::new([0; NAME_LEN])).collect(),
            }
        }
    }
    impl MetaSlots for Table {
        fn cnt(&self) -> &AtomicU16 {
            &self.cnt
        }
        fn slot_size(&self, i: usize) -> &AtomicU16 {
            &self.sizes[i]
        }
        fn slot_name(&self, i: usize) -> [u8; NAME_LEN] {
            unsafe { *self.names[i].get() }
        }
        fn write_slot_name(&self, i: usize, name: &[u8]) {
            let field = unsafe { &mut *self.names[i].get() };
            field[..name.len()].copy_from_slice(name);
        }
        fn max_slots(&self) -> usize {
            self.sizes.len()
        }
    }

    #[cfg(not(loom))]
    #[test]
    fn offsets_are_the_sum_of_rounded_sizes() {
        let t = Table::new(8);
        let b = Budget::new(64, 4088);
        let a = create(&t, &b, b"a", 4, KeyKind::Dynamic).unwrap();
        let c = create(&t, &b, b"c", 9, KeyKind::Dynamic).unwrap();
        let d = create(&t, &b, b"d", 1, KeyKind::Dynamic).unwrap();
        assert_eq!((a.offset, c.offset, d.offset), (0, 8, 24));
        assert_eq!(find(&t, b"c"), Ok(Some(c)));
        assert_eq!(find(&t, b"x"), Ok(None));
        assert_eq!(create(&t, &b, b"a", 4, KeyKind::Dynamic), Err(CreateError::Exists(a)));
    }

    #[cfg(not(loom))]
    #[test]
    fn dynamic_keys_fit_the_reserve() {
        let t = Table::new(63);
        let b = Budget::new(64, 4088);
        for i in 0..8 {
            create(&t, &b, format!("k{i}").as_bytes(), 4, KeyKind::Dynamic).unwrap();
        }
        assert_eq!(create(&t, &b, b"k8", 4, KeyKind::Dynamic), Err(CreateError::TooBig { available: 0 }));
    }

    #[cfg(not(loom))]
    #[test]
    fn static_keys_grow_until_frozen() {
        let t = Table::new(63);
        let b = Budget::new(8, 4088);
        create(&t, &b, b"s", 100, KeyKind::Static).unwrap();
        assert_eq!(b.load().capacity(), 104 + 8);
        create(&t, &b, b"d", 8, KeyKind::Dynamic).unwrap();
        assert_eq!(b.freeze().capacity(), 112);
        assert_eq!(
            create(&t, &b, b"s2", 4, KeyKind::Static),
            Err(CreateError::TooBig { available: 0 })
        );
    }

    /// A dynamic key that takes the bytes a static creator grew does not make
    /// the static key fail: it grows again at its new offset.
    #[cfg(not(loom))]
    #[test]
    fn static_growth_taken_by_a_dynamic_key_is_grown_again() {
        let t = Table::new(63);
        let b = Budget::new(0, 4088);
        // What a static creator of "s" (8 bytes) does before its CAS...
        assert!(b.grow_static(8));
        // ...then a dynamic key wins the slot and takes those 8 bytes...
        assert_eq!(create(&t, &b, b"d", 8, KeyKind::Dynamic).unwrap().offset, 0);
        // ...and the static creator's next attempt, at offset 8, grows again.
        assert!(b.grow_static_to(16));
        let s = create(&t, &b, b"s", 8, KeyKind::Static).unwrap();
        assert_eq!((s.slot, s.offset), (1, 8));
    }

    #[cfg(not(loom))]
    #[test]
    fn no_space_after_the_last_slot() {
        let t = Table::new(2);
        let b = Budget::new(64, 4088);
        create(&t, &b, b"a", 1, KeyKind::Dynamic).unwrap();
        create(&t, &b, b"b", 1, KeyKind::Dynamic).unwrap();
        assert_eq!(create(&t, &b, b"c", 1, KeyKind::Dynamic), Err(CreateError::NoSpace));
    }

    #[cfg(not(loom))]
    #[test]
    fn reserve_rules() {
        let t = Table::new(4);
        let b = Budget::new(64, 4088);
        b.set_reserve(0).unwrap();
        b.set_reserve(32).unwrap();
        create(&t, &b, b"a", 8, KeyKind::Dynamic).unwrap();
        assert_eq!(b.set_reserve(16), Err(ReserveError::KeysExist));
        b.set_reserve(48).unwrap();
        assert_eq!(b.set_reserve(5000), Err(ReserveError::TooLarge { max: 4088 }));
        b.freeze();
        assert_eq!(b.set_reserve(64), Err(ReserveError::Frozen));
    }

    /// Model check (`RUSTFLAGS="--cfg loom" cargo test -p tld --lib --release loom`):
    /// concurrent creators of the same and of different names, with one slot
    /// too few and a key too large for what is left, never overlap, never lose
    /// a key, and agree on the one winner of each name.
    #[cfg(loom)]
    #[test]
    fn loom_concurrent_creation() {
        use loom::sync::Arc;
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.max_branches = 100_000;
        builder.check(|| {
            // Three slots and 24 bytes: "c" fits only if it comes before "b" and no
            // fourth key can ever be claimed.
            let table = Arc::new(Table::new(3));
            let budget = Arc::new(Budget::new(24, 4088));
            let plans: [&[(&[u8], u16)]; 2] = [&[(b"a", 4), (b"b", 8), (b"d", 1)], &[(b"a", 4), (b"c", 16), (b"b", 8)]];
            let handles: Vec<_> = plans
                .iter()
                .map(|plan| {
                    let (table, budget) = (table.clone(), budget.clone());
                    let plan: Vec<(Vec<u8>, u16)> = plan.iter().map(|(n, s)| (n.to_vec(), *s)).collect();
                    loom::thread::spawn(move || {
                        plan.iter()
                            .map(|(n, s)| (n.clone(), create(&*table, &budget, n, *s, KeyKind::Dynamic)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let results: Vec<_> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();

            // The table as published.
            let cnt = table.cnt.load(Ordering::Acquire) as usize;
            let mut published = Vec::new();
            let mut off = 0usize;
            for i in 0..cnt {
                let size = table.sizes[i].load(Ordering::Acquire);
                assert_ne!(size, 0, "slot {i} claimed but never written");
                let name = table.slot_name(i);
                let len = name.iter().position(|&b| b == 0).unwrap();
                published.push((name[..len].to_vec(), KeyInfo { slot: i as u16, offset: off as u16, size }));
                off += round_up8(size as usize);
            }
            assert!(off <= 24, "keys overflow the data area: {off}");
            // One winner per name: no name twice in the table.
            for (i, (n, _)) in published.iter().enumerate() {
                assert!(published[i + 1..].iter().all(|(m, _)| m != n), "{n:?} published twice");
            }
            for (name, result) in &results {
                let entry = published.iter().find(|(n, _)| n == name).map(|(_, k)| *k);
                match result {
                    Ok(k) => assert_eq!(Some(*k), entry, "a winner's key is what the table says"),
                    Err(CreateError::Exists(k)) => assert_eq!(Some(*k), entry, "losers see the winner"),
                    Err(CreateError::NoSpace) => assert_eq!(cnt, 3),
                    Err(CreateError::TooBig { available }) => {
                        assert!(entry.is_none());
                        assert!(*available < 16)
                    }
                    Err(CreateError::Reentered) => panic!("no signal handler here"),
                }
            }
            // Nothing lost: every name someone created successfully is in the table.
            for (name, result) in &results {
                if result.is_ok() {
                    assert!(published.iter().any(|(n, _)| n == name));
                }
            }
        });
    }
}
