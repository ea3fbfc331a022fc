//! Every error of key creation, and after each failed call the keys and
//! values already published are unchanged as BPF sees them.

use tld::{Error, RawKey};
use tld_tests::{by_name, kernel, TestBpf};

fn snapshot(bpf: &TestBpf) -> impl PartialEq + std::fmt::Debug {
    let dump = bpf.dump_current().unwrap();
    assert!(dump.registered);
    (by_name(&dump), dump.cnt, tld::keys().unwrap())
}

#[test]
fn every_error_leaves_published_keys_alone() {
    let Some(bpf) = kernel() else { return };
    tld::set_dynamic_reserve(600).unwrap();
    tld::attach_fd(bpf.data_map_fd()).unwrap();
    let mut keys = Vec::new();
    for i in 0..10u8 {
        let k = RawKey::create(format!("err_{i}"), 8).unwrap();
        k.write(&[i + 1; 8]).unwrap();
        keys.push(k);
    }
    let before = snapshot(&bpf);
    let errno = |r: tld::Result<RawKey>| r.unwrap_err().errno();
    let check = |what: &str, r: tld::Result<RawKey>, want: i32| {
        let e = r.expect_err(what);
        assert_eq!(e.errno(), want, "{what}: {e}");
        assert_eq!(snapshot(&bpf), before, "{what} changed what BPF sees");
        e
    };

    let e = check("duplicate", RawKey::create("err_3", 8), libc::EEXIST);
    assert_eq!(e.to_string(), "key \"err_3\" already exists");
    check("duplicate with another size", RawKey::create("err_3", 16), libc::EEXIST);
    check("get-or-create with another size", RawKey::get_or_create("err_3", 4), libc::EEXIST);
    check("size 0", RawKey::create("err_zero", 0), libc::EINVAL);
    check("empty name", RawKey::create("", 4), libc::EINVAL);
    check("name with NUL", RawKey::create("err\0nul", 4), libc::EINVAL);
    let long = "n".repeat(62);
    let e = check("62-byte name", RawKey::create(&long, 4), libc::ENAMETOOLONG);
    assert!(e.to_string().contains("62 bytes"), "{e}");
    check("multi-byte name of 62 bytes", RawKey::create("é".repeat(31), 4), libc::ENAMETOOLONG);
    check("find a missing key", RawKey::find("err_missing"), libc::ENOENT);

    // E2BIG for a key one byte too large for what is left.
    let stats = tld::runtime_stats().unwrap();
    assert!(stats.frozen);
    let left = stats.data_size - 10 * 8;
    let e = check("one byte too large", RawKey::create("err_big", left + 1), libc::E2BIG);
    assert_eq!(e, Error::TooBig { name: "err_big".into(), size: left + 1, available: left });

    // Fill every remaining slot, then one more.
    let max = tld::abi::max_slots(stats.page_size);
    for i in 10..max {
        RawKey::create(format!("err_{i}"), 1).unwrap();
    }
    let before = snapshot(&bpf);
    let e = RawKey::create("err_one_too_many", 1).unwrap_err();
    assert_eq!(e, Error::NoSpace { name: "err_one_too_many".into(), max });
    assert_eq!(e.errno(), libc::ENOSPC);
    assert_eq!(snapshot(&bpf), before);
    assert_eq!(errno(RawKey::create("err_3", 8)), libc::EEXIST, "a taken name is still EEXIST when full");

    // The values written before all of this are still there for BPF.
    let dump = bpf.dump_current().unwrap();
    for (i, k) in keys.iter().enumerate() {
        let seen = dump.keys.iter().find(|d| d.name == format!("err_{i}")).unwrap();
        assert_eq!(seen.offset as usize, k.offset());
        assert_eq!(seen.value, vec![i as u8 + 1; 8]);
    }
}
