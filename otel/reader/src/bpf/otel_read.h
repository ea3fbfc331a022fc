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
	/* out: the record as BPF read it is the global record_bytes (.bss) */
};

#endif
