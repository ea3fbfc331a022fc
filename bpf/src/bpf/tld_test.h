/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Structures shared by the test BPF programs (tld_test.bpf.c) and their Rust
 * loader (src/lib.rs reads them through the skeleton's generated types, so
 * there is no hand-written Rust mirror to drift). Uses the kernel's __u8..
 * __s32 types: include vmlinux.h or <linux/types.h> first.
 */
#ifndef TLD_TEST_H
#define TLD_TEST_H

/* Entries of the `dumps` results map: one per concurrent dump_task call. */
#define TLD_TEST_DUMP_SLOTS 1024
/* Slots dump_task reports at most (63 exist on 4 KiB pages). */
#define TLD_TEST_DUMP_MAX_KEYS 64
/* Bytes of each value dump_task copies out at most. */
#define TLD_TEST_VALUE_MAX 64
/* Bytes of a key name on the wire, NUL included. */
#define TLD_TEST_NAME_LEN 62
/* Key offsets dump_task reports saturate here (past any page). */
#define TLD_TEST_OFFSET_CAP 0x10000

/* Context of read_basic: all written by the program. */
struct basic_ctx {
	__s32 init_err;		/* tld_object_init() result */
	__s32 static_int;	/* "test_static_int", if found */
	__s32 dyn_int;		/* "test_dyn_int", if found */
	__u8 found_static_int;
	__u8 found_dyn_int;
	__u8 found_dyn_struct;
	__u8 found_never_created;
	__u64 dyn_struct[4];	/* "test_dyn_struct" (32 bytes), if found */
	__u8 found_too_big;	/* "test_dyn_int" (4 bytes) found asking 8 (never) */
	__u8 found_dyn_int_as_8; /* the same through dyn_int's cached key (never) */
	__u8 reserved[6];
};

/* Context of dump_task. */
struct dump_ctx {
	__s32 tid;		/* in: thread id in the caller's pid namespace; 0 = caller */
	__u32 slot;		/* in: index into `dumps` receiving the result */
	__s32 err;		/* out: 0, -ESRCH (no such task) or -E2BIG (bad slot) */
	__u32 reserved;
};

/* One metadata slot as dump_task saw it. */
struct tld_test_key_dump {
	char name[TLD_TEST_NAME_LEN];	/* raw bytes of the slot's name */
	__u16 size;			/* the slot's size (never 0 here) */
	__u32 offset;			/* key offset, saturating at TLD_TEST_OFFSET_CAP */
	__u8 in_page;			/* start + offset + size <= page size */
	__u8 value_len;			/* bytes of value[] filled */
	__u16 reserved;
	__u8 value[TLD_TEST_VALUE_MAX];	/* first value_len bytes of the value */
};

/* What dump_task found for one task; only nr_keys entries of keys[] are set. */
struct task_dump {
	__u8 registered;		/* the task has a tld_data_map entry */
	__u8 has_data;			/* its data UPTR is set */
	__u8 has_meta;			/* its meta UPTR is set */
	__u8 stopped_at_unwritten;	/* the walk ended at a slot of size 0 */
	__u16 start;			/* `start` (map value, or data page for 16 bytes) */
	__u16 cnt;			/* metadata cnt as read (may exceed the slot count) */
	__u16 meta_size;		/* metadata size */
	__u16 nr_keys;			/* keys[] entries filled */
	__u8 stale;			/* the entry is from a replaced image: not walked */
	__u8 reserved[3];
	struct tld_test_key_dump keys[TLD_TEST_DUMP_MAX_KEYS];
};

#endif /* TLD_TEST_H */
