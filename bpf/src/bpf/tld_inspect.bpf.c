// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * tld_inspect: a task iterator that reports the task local data of every
 * thread registered in tld_data_map (reused from its pinned path by the
 * loader), for the `tld` command-line tool. Generic: no key name is
 * compiled in; it walks the metadata page and the data page through the
 * UPTRs of each thread's map value and writes struct tld_inspect_key /
 * struct tld_inspect_task records (tld_inspect.h) with bpf_seq_write().
 *
 * It reads memory that an untrusted process controls, so every count, size
 * and offset read is bounded before use: a cnt beyond the slot count is
 * clamped (and flagged), a slot of size 0 (still being written) ends the
 * walk (and is flagged), a value running past the data page is reported
 * without its bytes. Nothing outside the two pinned pages is ever read.
 */
#define BPF_NO_KFUNC_PROTOTYPES
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

/* The build passes the target's page size (see tld.bpf.h on __PAGE_SIZE). */
#ifdef TLD_BPF_PAGE_SIZE
#define __PAGE_SIZE TLD_BPF_PAGE_SIZE
#endif

#include "../../tld.bpf.h"
#include "tld_inspect.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* tld.bpf.h's tld_key_map needs a value type; this program never uses it. */
struct tld_keys {
	tld_key_t unused;
};

/* Set by the loader before load. 0 = any. Initial pid namespace ids. */
const volatile int target_tgid = 0;
const volatile int target_tid = 0;
/* Write key records (else only task records, for counting). */
const volatile int emit_keys = 1;

/*
 * Scratch space for one key record (too big for the stack). The task member
 * is unused: it puts struct tld_inspect_task in the object's BTF, so the
 * Rust skeleton generates it.
 */
struct inspect_scratch {
	struct tld_inspect_key key;
	struct tld_inspect_task task;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct inspect_scratch);
} inspect_scratch SEC(".maps");

/* Copy up to TLD_INSPECT_VALUE_MAX bytes of the value at @pos of @page. */
static __u32 copy_value(struct tld_inspect_key *k, struct tld_data_u *page, __u64 pos,
			__u32 len)
{
	__u64 p;
	int j;

	if (len > TLD_INSPECT_VALUE_MAX)
		len = TLD_INSPECT_VALUE_MAX;
	bpf_for(j, 0, len) {
		if (j >= TLD_INSPECT_VALUE_MAX)
			break;
		/* The caller checked the range; this check is for the verifier. */
		p = pos + j;
		barrier_var(p);
		if (p >= __PAGE_SIZE)
			break;
		k->value[j] = ((__u8 *)page)[p];
	}
	return len;
}

SEC("iter/task")
int tld_inspect(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	struct tld_inspect_task t = {};
	struct inspect_scratch *scratch;
	struct tld_inspect_key *k;
	struct tld_map_value *v;
	struct tld_meta_u *meta;
	struct tld_data_u *page;
	__u64 off = 0, pos; /* 64-bit: see __tld_fetch_key() in tld.bpf.h */
	__u32 start, size, n, zero = 0;
	int i;

	if (!task)
		return 0;
	if (target_tgid && task->tgid != target_tgid)
		return 0;
	if (target_tid && task->pid != target_tid)
		return 0;
	v = bpf_task_storage_get(&tld_data_map, task, 0, 0);
	if (!v)
		return 0;
	scratch = bpf_map_lookup_elem(&inspect_scratch, &zero);
	if (!scratch)
		return 0;
	k = &scratch->key;

	t.kind = TLD_INSPECT_KIND_TASK;
	t.tid = task->pid;
	t.tgid = task->tgid;
	t.max_slots = TLD_MAX_DATA_CNT;
	bpf_probe_read_kernel_str(t.comm, sizeof(t.comm), task->comm);

	start = v->start;
	t.start = start;
	page = v->data;
	meta = v->meta;
	if (page)
		t.flags |= TLD_INSPECT_HAS_DATA;
	if (!meta)
		goto out;
	t.flags |= TLD_INSPECT_HAS_META;

	n = __tld_read_once(meta->cnt);
	t.cnt = n;
	t.meta_size = __tld_read_once(meta->size);
	if (n > TLD_MAX_DATA_CNT) {
		n = TLD_MAX_DATA_CNT;
		t.flags |= TLD_INSPECT_CNT_CLAMPED;
	}

	bpf_for(i, 0, n) {
		if (i >= TLD_MAX_DATA_CNT)
			break;
		size = __tld_read_once(meta->metadata[i].size);
		if (!size) {
			t.flags |= TLD_INSPECT_UNWRITTEN;
			t.stop_slot = i;
			break;
		}
		asm volatile("" ::: "memory"); /* name after size, see tld.bpf.h */
		t.nr_keys = i + 1;

		if (emit_keys) {
			k->kind = TLD_INSPECT_KIND_KEY;
			k->tid = t.tid;
			k->slot = i;
			k->size = size;
			k->offset = off;
			__builtin_memcpy(k->name, meta->metadata[i].name, TLD_INSPECT_NAME_LEN);
			pos = start + off;
			/* off <= 0x10000, start <= 0xffff, size <= 0xffff: no overflow. */
			k->in_page = page && pos + size <= __PAGE_SIZE;
			k->value_len = 0;
			if (page && pos + size <= __PAGE_SIZE)
				k->value_len = copy_value(k, page, pos, size);
			bpf_seq_write(seq, k, sizeof(*k));
		}

		/* Saturate: past the page no offset is valid anyway. */
		off += __tld_round_up8(size);
		if (off > TLD_INSPECT_OFFSET_CAP)
			off = TLD_INSPECT_OFFSET_CAP;
	}
out:
	bpf_seq_write(seq, &t, sizeof(t));
	return 0;
}
