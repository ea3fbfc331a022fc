//! Property test of the metadata walkers against a model: random and
//! adversarial metadata and data pages, registered BY HAND (no runtime) in
//! maps of both layouts, read by the real BPF code (`dump_task`, the walker
//! tld_walk.h shared with the `tld` command's iterator, and `read_basic`,
//! tld.bpf.h's tld_object_init() + tld_get_data()), compared field by field
//! with what DESIGN.md §2.6 says a reader must return. Every run of the
//! verifier-checked programs is itself the proof that nothing outside the
//! two pages is read; the model checks that what is read is right: no
//! value claimed in the page that is not, no key past an unwritten slot, no
//! pointer larger than a slot, garbage counts clamped, loops ended.
//!
//! A seeded generator (xorshift) instead of a fuzzing crate: the cases are
//! the same on every run (TLD_WALKER_SEED picks others, TLD_WALKER_CASES
//! more of them). Root needed: skipped with a message without it, failed
//! instead under CI=true.

use std::io::Write;

use tld_bpf::hand::{exec_stamp, page_size, register, register16, Meta, Page, STAMP_MAGIC};
use tld_bpf::{has_bpf_privileges, BasicView, KeyDump, Layout, TestBpf, DUMP_MAX_KEYS};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const NAMES: [&str; 4] = ["test_static_int", "test_dyn_int", "test_dyn_struct", "test_never_created"];

/// One generated registration.
struct Case {
    meta: Vec<u8>,
    data: Vec<u8>,
    /// The 24-byte value's start (the 16-byte layout's is the data page's
    /// first u64).
    start: u16,
}

fn generate(rng: &mut Rng, layout: Layout) -> Case {
    let p = page_size();
    let slots = p / 64 - 1;
    let mut meta = vec![0u8; p];
    let mut data: Vec<u8> = (0..p).map(|_| rng.next() as u8).collect();
    let cnt: u16 = match rng.below(10) {
        0 => rng.next() as u16,
        1 => slots as u16 + rng.below(8) as u16,
        _ => rng.below(12) as u16,
    };
    meta[0..2].copy_from_slice(&cnt.to_le_bytes());
    meta[2..4].copy_from_slice(&(rng.next() as u16).to_le_bytes());
    let filled = usize::from(cnt).min(slots) + rng.below(3) as usize;
    for i in 0..filled.min(slots) {
        let at = 4 + 64 * i;
        let name: Vec<u8> = match rng.below(6) {
            0 => (0..62).map(|_| rng.next() as u8 | 1).collect(), // no NUL
            1 | 2 => NAMES[rng.below(NAMES.len() as u64) as usize].as_bytes().to_vec(),
            3 => {
                let mut n = NAMES[rng.below(3) as usize].as_bytes().to_vec();
                n.push(b'x'); // a longer name with the same start
                n
            }
            _ => (0..1 + rng.below(20)).map(|_| b'a' + rng.below(26) as u8).collect(),
        };
        meta[at..at + name.len()].copy_from_slice(&name);
        let size: u16 = match rng.below(12) {
            0 => 0,
            1 => rng.next() as u16,
            2 => 32,
            _ => 1 + rng.below(16) as u16,
        };
        meta[at + 62..at + 64].copy_from_slice(&size.to_le_bytes());
    }
    let start = match rng.below(6) {
        0 => rng.next() as u16,
        1 => (p - 8) as u16,
        _ => 8 + 8 * rng.below(64) as u16,
    };
    if layout == Layout::Value16 {
        let s: u64 = match rng.below(6) {
            0 => rng.next(),
            1 => p as u64 - 8,
            _ => 8,
        };
        data[0..8].copy_from_slice(&s.to_le_bytes());
    }
    match rng.below(8) {
        0 => {
            meta[p - 16..p - 8].copy_from_slice(&STAMP_MAGIC.to_le_bytes());
            meta[p - 8..].copy_from_slice(&exec_stamp().to_le_bytes());
        }
        1 => {
            meta[p - 16..p - 8].copy_from_slice(&STAMP_MAGIC.to_le_bytes());
            meta[p - 8..].copy_from_slice(&rng.next().to_le_bytes());
        }
        _ => {}
    }
    Case { meta, data, start }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// What DESIGN.md §2.6 says a reader sees.
struct Model {
    start: usize,
    cnt: usize,
    stale: bool,
    slots: usize,
}

impl Model {
    fn new(c: &Case, layout: Layout) -> Model {
        let p = page_size();
        let stale = u64_at(&c.meta, p - 16) == STAMP_MAGIC && u64_at(&c.meta, p - 8) != exec_stamp();
        let (start, cnt) = match layout {
            Layout::Value24 => (usize::from(c.start), usize::from(u16_at(&c.meta, 0))),
            Layout::Value16 => (
                u64_at(&c.data, 0).min(p as u64) as usize,
                usize::from(c.meta[0]),
            ),
        };
        Model {
            start: start.min(p),
            cnt,
            stale,
            slots: p / 64 - 1,
        }
    }

    fn slot(c: &Case, i: usize) -> (&[u8], u16) {
        let at = 4 + 64 * i;
        (&c.meta[at..at + 62], u16_at(&c.meta, at + 62))
    }

    /// dump_task: the keys, and whether the walk stopped at size 0.
    fn dump(&self, c: &Case) -> (Vec<KeyDump>, bool) {
        let p = page_size();
        let mut keys = Vec::new();
        let mut off = 0usize;
        for i in 0..self.cnt.min(self.slots).min(DUMP_MAX_KEYS) {
            let (raw, size) = Self::slot(c, i);
            if size == 0 {
                return (keys, true);
            }
            let name_end = raw.iter().position(|&b| b == 0).unwrap_or(62);
            let pos = self.start + off;
            let in_page = pos + usize::from(size) <= p;
            let n = usize::from(size).min(64);
            keys.push(KeyDump {
                slot: i,
                name: String::from_utf8_lossy(&raw[..name_end]).into_owned(),
                size,
                offset: off as i32,
                in_page,
                value: if in_page { c.data[pos..pos + n].to_vec() } else { Vec::new() },
            });
            off = (off + usize::from(size).next_multiple_of(8)).min(0x10000);
        }
        (keys, false)
    }

    /// tld_get_data(name, want): the value's bytes, or None.
    fn get(&self, c: &Case, name: &str, want: usize) -> Option<Vec<u8>> {
        let p = page_size();
        let mut off = 0usize;
        for i in 0..self.cnt.min(self.slots) {
            let (raw, size) = Self::slot(c, i);
            if size == 0 {
                return None;
            }
            let matches = raw.starts_with(name.as_bytes()) && raw[name.len()] == 0;
            if matches {
                let pos = self.start + off;
                if usize::from(size) < want || self.start >= p || pos + want > p {
                    return None;
                }
                return Some(c.data[pos..pos + want].to_vec());
            }
            off += usize::from(size).next_multiple_of(8);
            if off >= p {
                return None;
            }
        }
        None
    }

    fn basic(&self, c: &Case) -> BasicView {
        if self.stale {
            return BasicView {
                init_err: -libc::ENODATA,
                static_int: None,
                dyn_int: None,
                dyn_struct: None,
                never_created_found: false,
                too_big_found: false,
            };
        }
        let int = |name| self.get(c, name, 4).map(|b| i32::from_ne_bytes(b.try_into().unwrap()));
        BasicView {
            init_err: 0,
            static_int: int("test_static_int"),
            dyn_int: int("test_dyn_int"),
            dyn_struct: self.get(c, "test_dyn_struct", 32).map(|b| b.try_into().unwrap()),
            never_created_found: self.get(c, "test_never_created", 4).is_some(),
            // Legitimate when the slot holds 8 bytes or more.
            too_big_found: self.get(c, "test_dyn_int", 8).is_some(),
        }
    }
}

/// Registers `c` by hand on a thread of its own and compares. The pages
/// go to `keep`, alive until the test ends: a process never frees a
/// metadata page it registered (the key cache relies on it, DESIGN.md
/// §7.2), so no later case may get the same page back.
fn check(bpf: &TestBpf, c: &Case, seed: u64, case: usize, keep: &mut Vec<(Meta, Page)>) {
    let layout = bpf.layout();
    let meta = Meta::new();
    meta.page().write(0, &c.meta);
    let data = Page::new();
    data.write(0, &c.data);
    let model = Model::new(c, layout);
    std::thread::scope(|s| {
        s.spawn(|| {
            let _reg = match layout {
                Layout::Value24 => register(bpf.data_map_fd(), data.addr(), meta.addr(), c.start),
                Layout::Value16 => register16(bpf.data_map_fd(), data.addr(), meta.addr()),
            };
            let what = format!("seed {seed} case {case} ({layout:?})");
            let dump = bpf.dump_current().unwrap();
            assert!(dump.registered, "{what}");
            assert_eq!(dump.stale, model.stale, "{what}");
            if !model.stale {
                let (keys, stopped) = model.dump(c);
                assert_eq!(usize::from(dump.start), model.start, "{what}");
                assert_eq!(usize::from(dump.cnt), model.cnt, "{what}");
                assert_eq!(dump.stopped_at_unwritten, stopped, "{what}");
                assert_eq!(dump.keys, keys, "{what}");
            }
            // Twice: searched, then through the cache.
            for round in 0..2 {
                assert_eq!(bpf.read_basic().unwrap(), model.basic(c), "{what} round {round}");
            }
        });
    });
    keep.push((meta, data));
}

#[test]
fn walkers_match_the_model_on_random_pages() {
    if !has_bpf_privileges() {
        let need = "needs root/CAP_BPF (CAP_BPF + CAP_PERFMON)";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("walkers_match_the_model_on_random_pages {need}, and CI=true does not allow skipping it");
        }
        let _ = writeln!(std::io::stderr(), "walkers_match_the_model_on_random_pages: skipping: {need}");
        return;
    }
    let seed: u64 = std::env::var("TLD_WALKER_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_7e1d);
    let cases: usize = std::env::var("TLD_WALKER_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(150);
    for layout in [Layout::Value24, Layout::Value16] {
        let bpf = TestBpf::load_layout(layout).expect("loading the test programs");
        let mut rng = Rng(seed | 1);
        let mut keep = Vec::new();
        for case in 0..cases {
            let c = generate(&mut rng, layout);
            check(&bpf, &c, seed, case, &mut keep);
        }
    }
}
