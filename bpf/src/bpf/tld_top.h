/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Records of tld_top (tld_top.bpf.c), read by the Rust loader (src/top.rs)
 * through the generated skeleton types. Include vmlinux.h or
 * <linux/types.h> first.
 */
#ifndef TLD_TOP_H
#define TLD_TOP_H

/*
 * Bytes of a value that tell buckets apart (longer values: their start):
 * plain keys' values, and OpenTelemetry attribute values (up to 255 bytes).
 */
#define TLD_TOP_VALUE_MAX 64
/* Buckets (thread, status, value) kept at most; more are counted as dropped. */
#define TLD_TOP_MAX_BUCKETS 16384

/* Status of a bucket. */
#define TLD_TOP_VALUE 0		/* value[] holds the key's value */
#define TLD_TOP_NO_DATA 1	/* the thread had no (current) TLD registration */
#define TLD_TOP_NO_KEY 2	/* registered, but the key was not published (or too small) */
#define TLD_TOP_NO_RECORD 3	/* by an OpenTelemetry field: no valid record (tld_otel_record() NULL) */
#define TLD_TOP_NO_ATTR 4	/* by an attribute: a valid record without it (or its index unknown yet) */

/* What the time is charged to (rodata by_field). */
#define TLD_TOP_BY_KEY 0	/* the value of key key_name */
#define TLD_TOP_BY_SPAN_ID 1	/* the record's span id (8 bytes) */
#define TLD_TOP_BY_TRACE_ID 2	/* the record's trace id (16 bytes) */
#define TLD_TOP_BY_ATTR 3	/* the value of the attribute of key-index attr_index */

/* attr_index while the attribute's name is not in the process's key map. */
#define TLD_TOP_NO_INDEX 0xffffffffu

/* One bucket: a thread, and what its key held when a slice ended. */
struct tld_top_key {
	__s32 tid;			/* initial pid namespace */
	__u8 status;			/* TLD_TOP_* */
	__u8 len;			/* bytes of value[] set */
	__u16 full_len;			/* by an attribute: the value's whole length; else 0 */
	__u8 value[TLD_TOP_VALUE_MAX];	/* first bytes of the value, zero padded */
};

/* CPU time charged to a bucket. */
struct tld_top_time {
	__u64 ns;			/* on-CPU nanoseconds */
	__u64 slices;			/* slices charged */
};

#endif /* TLD_TOP_H */
