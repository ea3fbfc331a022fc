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
__u8 record_bytes[OTEL_READ_MAX];

struct tld_keys {
	tld_key_t record;
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
		record_bytes[i] = page[at];
		ctx->copied = i + 1;
	}
out:
	bpf_task_release(task);
	return 0;
}
