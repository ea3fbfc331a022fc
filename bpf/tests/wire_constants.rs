//! The wire constants `tld_bpf::hand` writes pages with are the core's
//! (DESIGN.md §2): one list, compared here rather than trusted twice.

use tld::abi;
use tld_bpf::hand;

#[test]
fn hand_writes_the_cores_layout() {
    assert_eq!(hand::STAMP_MAGIC, abi::STAMP_MAGIC);
    assert_eq!(hand::NAME_LEN, abi::NAME_LEN);
    assert_eq!(hand::map_value(1, 2, 3).len(), abi::MAP_VALUE_SIZE);
    assert_eq!(hand::map_value16(1, 2).len(), abi::MAP_VALUE16_SIZE);
    assert_eq!(abi::STAMP_FROM_END, 16);
    assert_eq!(abi::slot_offset(1), 4 + 64);
    assert_eq!(tld_bpf::Layout::Value24.value_size() as usize, abi::MAP_VALUE_SIZE);
    assert_eq!(tld_bpf::Layout::Value16.value_size() as usize, abi::MAP_VALUE16_SIZE);
}
