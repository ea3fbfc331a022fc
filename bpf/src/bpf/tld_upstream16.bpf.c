// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * tld_upstream16: reads task local data the way the BPF side of the task
 * local data library in the Linux tree does (DESIGN §2.4), so tests can check
 * that a process using tld is read correctly by consumers built on
 * upstream's header. Written from the layout facts, not from that code:
 *
 * - tld_data_map holds the 16-byte value {data, meta}, each a
 *   `struct X __uptr *` (a btf_type_tag on a pointer to a struct: clang 15 or
 *   newer; the build compiles this object with clang-19);
 * - `start` is the little-endian u64 at offset 0 of the page `data` points
 *   at; `cnt` is the u8 at offset 0 of the metadata page;
 * - a key's offset is the sum of round_up(size, 8) of the slots before the
 *   one whose name matches; the value is at data + start + offset, returned
 *   when start + offset < page size - the size asked.
 *
 * Unlike tld.bpf.h it neither stops at a slot of size 0 nor compares the
 * size asked with the slot's size: it reports the slot's size instead, for
 * the tests to check. Names come from the caller (read_keys's context), so
 * they are compared word by word rather than with bpf_strncmp (which needs a
 * constant string).
 *
 * The map's BTF gives both pages their full size (P bytes, DESIGN §2.5), so
 * programs built on tld.bpf.h with TLD_MAP_VALUE_16 load against this map.
 */
#define BPF_NO_KFUNC_PROTOTYPES
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#ifdef TLD_BPF_PAGE_SIZE
#define PAGE TLD_BPF_PAGE_SIZE
#else
#define PAGE 4096
#endif

#include "tld_upstream.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#ifndef ENODATA
#define ENODATA 61
#endif
#ifndef ESRCH
#define ESRCH 3
#endif

#define SLOTS (PAGE / 64 - 1)

struct up_slot {
	char name[TLD_UPSTREAM_NAME_LEN];
	__u16 size;
};

struct up_meta {
	__u8 cnt;
	__u8 cnt_hi;		/* upstream: padding */
	__u16 size;
	struct up_slot slots[SLOTS];
	__u8 tail[PAGE - 4 - SLOTS * 64];
};

struct up_data {
	__u64 start;
	__u8 data[PAGE - 8];
};

struct up_value {
	struct up_data __attribute__((btf_type_tag("uptr"))) *data;
	struct up_meta __attribute__((btf_type_tag("uptr"))) *meta;
	/* Full definitions of the pointees in BTF (see tld.bpf.h). */
	struct up_data __btf_data[0];
	struct up_meta __btf_meta[0];
};

_Static_assert(sizeof(struct up_value) == 16, "the 16-byte map value");
_Static_assert(sizeof(struct up_meta) == PAGE, "a full metadata page");
_Static_assert(sizeof(struct up_data) == PAGE, "a full data page");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct up_value);
} tld_data_map SEC(".maps");

extern struct task_struct *bpf_task_from_vpid(s32 vpid) __ksym __weak;
extern void bpf_task_release(struct task_struct *p) __ksym;

/* Whether slot @i's name equals @want (both 62 bytes, NUL padded). */
static __always_inline int name_equal(struct up_meta *meta, __u32 i, const char *want)
{
	const char *have = meta->slots[i].name;
	int j;

	for (j = 0; j < TLD_UPSTREAM_NAME_LEN / 2; j++)
		if (((const __u16 *)have)[j] != ((const __u16 *)want)[j])
			return 0;
	return 1;
}

/*
 * The keys of a read_keys call, in and out: entries 0..nr-1 (a context
 * cannot be indexed by a variable; the loader serializes calls).
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TLD_UPSTREAM_MAX_KEYS);
	__type(key, __u32);
	__type(value, struct tld_upstream_key);
} keys SEC(".maps");

static void lookup(struct up_value *v, struct tld_upstream_key *k)
{
	struct up_meta *meta = v->meta;
	struct up_data *data = v->data;
	__u64 start, off = 0, pos;
	__u32 cnt, size;
	int i, j;

	k->found = 0;
	k->name_matched = 0;
	k->value_len = 0;
	if (!meta || !data)
		return;
	start = data->start;
	cnt = meta->cnt;
	bpf_for(i, 0, cnt) {
		if (i >= SLOTS)
			break;
		size = meta->slots[i].size;
		if (name_equal(meta, i, k->name)) {
			k->name_matched = 1;
			k->slot = i;
			k->slot_size = size;
			pos = start + off;
			k->page_off = pos;
			if (start >= PAGE || pos >= PAGE - k->size || k->size > PAGE)
				return;
			k->found = 1;
			size = k->size < TLD_UPSTREAM_VALUE_MAX ? k->size : TLD_UPSTREAM_VALUE_MAX;
			k->value_len = size;
			bpf_for(j, 0, size) {
				__u64 p = pos + j;

				barrier_var(p);
				if (p >= PAGE || j >= TLD_UPSTREAM_VALUE_MAX)
					break;
				k->value[j] = ((__u8 *)data)[p];
			}
			return;
		}
		off += (size + 7) & ~7;
		if (off > 2 * PAGE)
			off = 2 * PAGE;
	}
}

SEC("syscall")
int read_keys(struct upstream_ctx *ctx)
{
	struct task_struct *task = 0;
	struct tld_upstream_key *k;
	struct up_value *v;
	__u32 nr = ctx->nr;
	int n;

	ctx->err = 0;
	if (ctx->tid) {
		task = bpf_task_from_vpid(ctx->tid);
		if (!task) {
			ctx->err = -ESRCH;
			return 0;
		}
		v = bpf_task_storage_get(&tld_data_map, task, 0, 0);
	} else {
		v = bpf_task_storage_get(&tld_data_map, bpf_get_current_task_btf(), 0, 0);
	}
	if (!v || !v->meta) {
		ctx->err = -ENODATA;
		goto out;
	}
	ctx->cnt = v->meta->cnt;
	ctx->start = v->data ? (v->data->start < PAGE ? v->data->start : PAGE) : 0;
	bpf_for(n, 0, nr) {
		__u32 idx = n;

		k = bpf_map_lookup_elem(&keys, &idx);
		if (!k)
			break;
		lookup(v, k);
	}
out:
	if (task)
		bpf_task_release(task);
	return 0;
}
