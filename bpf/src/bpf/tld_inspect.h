/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Records the tld_inspect task iterator (tld_inspect.bpf.c) writes to its
 * seq_file, read by the Rust loader (src/inspect.rs) through the skeleton's
 * generated types. All fields native-endian. Each record starts with a u32
 * `kind`; a task's key records come before its task record.
 * Include vmlinux.h or <linux/types.h> first.
 */
#ifndef TLD_INSPECT_H
#define TLD_INSPECT_H

#define TLD_INSPECT_KIND_KEY 1
#define TLD_INSPECT_KIND_TASK 2
#define TLD_INSPECT_KIND_FULL 3

/* Bytes of a value copied out at most (longer values are truncated). */
#define TLD_INSPECT_VALUE_MAX 64
/* Bytes of the full value of the key full_key names, copied out at most. */
#define TLD_INSPECT_FULL_MAX 640
/* Bytes of a key name on the wire, NUL included (not always present). */
#define TLD_INSPECT_NAME_LEN 62
/* Key offsets saturate here (past any page). */
#define TLD_INSPECT_OFFSET_CAP 0x10000

/* Flags of struct tld_inspect_task. */
#define TLD_INSPECT_HAS_DATA 0x1	/* the data UPTR is set */
#define TLD_INSPECT_HAS_META 0x2	/* the meta UPTR is set */
#define TLD_INSPECT_CNT_CLAMPED 0x4	/* cnt exceeds the slot count: only the slots were read */
#define TLD_INSPECT_UNWRITTEN 0x8	/* the walk stopped at slot stop_slot, of size 0 */
#define TLD_INSPECT_STALE 0x10		/* the entry is from a replaced image: not walked */

/* One published metadata slot of one thread. */
struct tld_inspect_key {
	__u32 kind;			/* TLD_INSPECT_KIND_KEY */
	__s32 tid;			/* the thread (initial pid namespace) */
	__u16 slot;
	__u16 size;			/* the slot's size (never 0 here) */
	__u32 offset;			/* key offset, saturating at TLD_INSPECT_OFFSET_CAP */
	__u8 in_page;			/* data set and start + offset + size <= page size */
	__u8 value_len;			/* bytes of value[] filled (0 unless in_page) */
	char name[TLD_INSPECT_NAME_LEN];	/* raw bytes of the slot's name */
	__u8 value[TLD_INSPECT_VALUE_MAX];	/* first value_len bytes of the value */
};

/*
 * The value of the key the loader named in full_key, up to
 * TLD_INSPECT_FULL_MAX bytes; follows that key's record when the value lies
 * in the page (for `tld dump` to decode OpenTelemetry records).
 */
struct tld_inspect_full {
	__u32 kind;			/* TLD_INSPECT_KIND_FULL */
	__s32 tid;
	__u16 slot;
	__u16 len;			/* bytes of value[] filled */
	__u8 value[TLD_INSPECT_FULL_MAX];
};

/* One thread with a tld_data_map entry; follows its key records. */
struct tld_inspect_task {
	__u32 kind;			/* TLD_INSPECT_KIND_TASK */
	__s32 tid;			/* initial pid namespace */
	__s32 tgid;
	__u32 flags;			/* TLD_INSPECT_* flags */
	__u16 start;			/* `start` (map value, or data page for 16 bytes) */
	__u16 cnt;			/* metadata cnt, as the layout reads it */
	__u16 meta_size;		/* metadata size, raw */
	__u16 nr_keys;			/* slots walked (key records written if emit_keys) */
	__u16 stop_slot;		/* with TLD_INSPECT_UNWRITTEN: the slot of size 0 */
	__u16 max_slots;		/* slots in a metadata page */
	char comm[16];			/* task->comm */
};

#endif /* TLD_INSPECT_H */
