// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * Reads a thread's OTEP 4947 record the way a BPF consumer does: through
 * tld_data_map and the key "otel.thread_ctx_v1", with tld.bpf.h. The record
 * is a hint written by an untrusted process: every offset is bounded by the
 * page before a byte is read.
 */
#define BPF_NO_KFUNC_PROTOTYPES
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define __PAGE_SIZE OTEL_READ_PAGE_SIZE
#include "../../../../bpf/tld.bpf.h"
#include "otel_read.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define ESRCH 3
#define ENOENT 2
#define EAGAIN 11
/* Offset of `valid` in the record; the header is 28 bytes. */
#define OTEL_VALID 24
#define OTEL_HEADER 28

/*
 * The bytes read, in .bss: a context may not be written at a variable
 * offset. One reader at a time per loaded object.
 */
struct {
	__u8 record_bytes[OTEL_READ_MAX];
	/* read_helper's copy of attrs-data: at OTEL_READ_MAX in .bss. */
	__u8 helper_attrs[TLD_OTEL_ATTRS_MAX];
} bytes_out;

struct tld_keys {
	tld_key_t record;
	tld_key_t otel;
};

extern struct task_struct *bpf_task_from_vpid(s32 vpid) __ksym __weak;
extern struct task_struct *bpf_task_from_pid(s32 pid) __ksym __weak;
extern void bpf_task_release(struct task_struct *p) __ksym;

SEC("syscall")
int read_record(struct otel_read_ctx *ctx)
{
	struct task_struct *task;
	struct tld_object tld;
	struct tld_cached_key key = {};
	__u8 *page, *header;
	__u64 pos, i, size;
	int err;

	ctx->copied = 0;
	ctx->valid = 0;
	task = bpf_task_from_vpid ? bpf_task_from_vpid(ctx->tid) : bpf_task_from_pid(ctx->tid);
	if (!task) {
		ctx->err = -ESRCH;
		return 0;
	}
	err = tld_object_init(task, &tld);
	if (err) {
		ctx->err = err;
		goto out;
	}
	header = tld_get_data(&tld, record, "otel.thread_ctx_v1", OTEL_HEADER);
	if (!header) {
		ctx->err = -ENOENT;
		goto out;
	}
	/* The key's offset, from the cache the lookup just filled (a test reader's shortcut). */
	if (!__tld_cache_load(&tld, __tld_key_index(record), &key) || key.off <= 0) {
		ctx->err = -EAGAIN;
		goto out;
	}
	ctx->err = 0;
	/* The helper a consumer would write: the record, or nothing unless valid. */
	ctx->valid = header[OTEL_VALID] == 1;

	page = (__u8 *)tld.data_map->data;
	if (!page)
		goto out;
	pos = (__u64)tld.data_map->start + (__u64)(key.off - 1);
	ctx->offset = key.off - 1;
	size = ctx->size;
	if (size > OTEL_READ_MAX)
		size = OTEL_READ_MAX;
	for (i = 0; i < OTEL_READ_MAX; i++) {
		__u64 at = pos + i;

		if (i >= size)
			break;
		barrier_var(at);
		if (at >= __PAGE_SIZE)
			break;
		bytes_out.record_bytes[i] = page[at];
		ctx->copied = i + 1;
	}
out:
	bpf_task_release(task);
	return 0;
}

/*
 * The consumer's way: tld_otel_record() gives the valid record or NULL,
 * tld_otel_attr() one attribute by key-index. The attrs-data bytes are
 * copied out too (bounded by the slot the record claims), for the test to
 * compare with what the API set.
 */
SEC("syscall")
int read_helper(struct otel_helper_ctx *ctx)
{
	__u8 value[OTEL_HELPER_VALUE_MAX] = {};
	struct tld_otel_record *rec;
	struct task_struct *task;
	struct tld_object tld;
	__u32 n;
	int err;

	ctx->found = 0;
	ctx->attrs_copied = 0;
	ctx->attr_ret = 0;
	task = bpf_task_from_vpid ? bpf_task_from_vpid(ctx->tid) : bpf_task_from_pid(ctx->tid);
	if (!task) {
		ctx->err = -ESRCH;
		return 0;
	}
	err = tld_object_init(task, &tld);
	ctx->err = err;
	if (err)
		goto out;
	/* Into the stack: a helper may not write a syscall program's context. */
	ctx->attr_ret = tld_otel_attr(&tld, otel, ctx->attr_index, value, OTEL_HELPER_VALUE_MAX);
	__builtin_memcpy(ctx->attr_value, value, OTEL_HELPER_VALUE_MAX);
	rec = tld_otel_record(&tld, otel);
	if (!rec)
		goto out;
	ctx->found = 1;
	__builtin_memcpy(ctx->trace_id, rec->trace_id, 16);
	__builtin_memcpy(ctx->span_id, rec->span_id, 8);
	ctx->trace_flags = rec->trace_flags;
	n = rec->attrs_data_size;
	ctx->attrs_data_size = n;
	if (n > TLD_OTEL_ATTRS_MAX)
		n = TLD_OTEL_ATTRS_MAX;
	if (!bpf_probe_read_kernel(bytes_out.helper_attrs, n, rec->attrs_data))
		ctx->attrs_copied = n;
out:
	bpf_task_release(task);
	return 0;
}
