/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Context of read_record (otel_read.bpf.c), mirrored by `ReadCtx` in
 * src/bpf.rs (a test compares the size).
 */
#ifndef OTEL_READ_H
#define OTEL_READ_H

/* Bytes of a record at most (OTEP 4947's recommendation, tld's limit). */
#define OTEL_READ_MAX 640

struct otel_read_ctx {
	__s32 tid;		/* in: thread id in the caller's pid namespace */
	__u32 size;		/* in: bytes to copy, at most OTEL_READ_MAX */
	__s32 err;		/* out: 0, -ESRCH, -ENODATA (not registered), -ENOENT (no record key) */
	__u32 copied;		/* out: bytes of bytes[] filled */
	__u32 offset;		/* out: the record key's offset in the data area */
	__u8 valid;		/* out: what a consumer's helper decides: record present and valid == 1 */
	__u8 reserved[3];
	/* out: the record as BPF read it is bytes_out.record_bytes (.bss) */
};


/* Bytes of an attribute value read_helper copies at most. */
#define OTEL_HELPER_VALUE_MAX 64

/*
 * Context of read_helper: what a consumer learns from tld_otel_record()
 * and tld_otel_attr() (tld.bpf.h); mirrored by `HelperCtx` in src/bpf.rs.
 */
struct otel_helper_ctx {
	__s32 tid;		/* in: thread id in the caller's pid namespace */
	__u32 attr_index;	/* in: the key-index tld_otel_attr() looks for */
	__s32 err;		/* out: 0, -ESRCH, -ENODATA (no registration) */
	__u8 found;		/* out: tld_otel_record() returned a record */
	__u8 trace_flags;	/* out: the record's fields */
	__u16 attrs_data_size;
	__u8 trace_id[16];
	__u8 span_id[8];
	__s32 attr_ret;		/* out: tld_otel_attr()'s return */
	__u32 attrs_copied;	/* out: bytes of helper_attrs filled */
	__u8 attr_value[OTEL_HELPER_VALUE_MAX];	/* out: the value it copied */
	/* out: the record's attrs-data is the global helper_attrs (.bss) */
};

#endif
