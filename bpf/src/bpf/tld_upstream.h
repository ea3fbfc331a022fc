/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Context and key records of read_keys (tld_upstream16.bpf.c), read and written by the Rust
 * loader (src/upstream.rs) through the generated skeleton types. Include
 * vmlinux.h or <linux/types.h> first.
 */
#ifndef TLD_UPSTREAM_H
#define TLD_UPSTREAM_H

/* Keys one read_keys call looks up at most. */
#define TLD_UPSTREAM_MAX_KEYS 16
/* Bytes of each value copied out at most. */
#define TLD_UPSTREAM_VALUE_MAX 64
/* Bytes of a key name on the wire, NUL included. */
#define TLD_UPSTREAM_NAME_LEN 62

/* One key to look up, and what was found. */
struct tld_upstream_key {
	/* in */
	char name[64];			/* NUL-padded; 4-byte aligned for word compares */
	__u32 size;			/* the size asked, as tld_get_data()'s */
	/* out */
	__u8 found;			/* name matched, value pointer valid */
	__u8 name_matched;		/* name matched (found may be 0: past the page) */
	__u8 slot;			/* its slot */
	__u8 value_len;			/* bytes of value[] filled */
	__u16 slot_size;		/* the slot's size */
	__u16 page_off;			/* start + key: the value's offset in the data page */
	__u8 value[TLD_UPSTREAM_VALUE_MAX];
};

struct upstream_ctx {
	__s32 tid;			/* in: 0 = the caller, else a tid of its pid namespace */
	__u32 nr;			/* in: entries of the keys map to look up */
	__s32 err;			/* out: 0, -ENODATA (no entry), -ESRCH (no such task) */
	__u32 start;			/* out: the u64 start of the data page, clamped */
	__u32 cnt;			/* out: the metadata cnt as a u8 */
	__u32 reserved;
};

#endif /* TLD_UPSTREAM_H */
