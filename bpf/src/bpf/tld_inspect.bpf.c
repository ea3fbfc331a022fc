// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * tld_inspect: a task iterator that reports the task local data of every
 * thread registered in tld_data_map (reused from its pinned path by the
 * loader), for the `tld` command-line tool. Generic: no key name is
 * compiled in; it walks the metadata page and the data page through the
 * UPTRs of each thread's map value and writes struct tld_inspect_key /
 * struct tld_inspect_task records (tld_inspect.h) with bpf_seq_write(),
 * and the whole value of one key the loader names (struct tld_inspect_full).
 *
 * It reads memory that an untrusted process controls, so every count, size
 * and offset read is bounded before use: a cnt beyond the slot count is
 * clamped (and flagged), a slot of size 0 (still being written) ends the
 * walk (and is flagged), a value running past the data page is reported
 * without its bytes. Nothing outside the two pinned pages is ever read.
 * The walk itself is tld_walk.h's, shared with dump_task (tld_test.bpf.c).
 * An entry left by an image the thread replaced with execve is reported as
 * stale, without its keys or values (DESIGN §5.5).
 *
 * The build compiles this file twice: tld_inspect reads maps with the
 * 24-byte value, tld_inspect16 (TLD_MAP_VALUE_16) those with the 16-byte
 * value; the loader picks by the pinned map's value size.
 */
#include "tld_prog.h"
#include "tld_inspect.h"
#include "tld_walk.h"

/* tld.bpf.h's tld_key_map needs a value type; this program never uses it. */
struct tld_keys {
	tld_key_t unused;
};

/* Set by the loader before load. 0 = any. Initial pid namespace ids. */
const volatile int target_tgid = 0;
const volatile int target_tid = 0;
/* Write key records (else only task records, for counting). */
const volatile int emit_keys = 1;
/* A key whose whole value (up to TLD_INSPECT_FULL_MAX bytes) is written too,
 * NUL padded; empty: none. */
const volatile char full_key[TLD_NAME_LEN] = {};

/*
 * Scratch space for one key record (too big for the stack). The task member
 * is unused: it puts struct tld_inspect_task in the object's BTF, so the
 * Rust skeleton generates it.
 */
struct inspect_scratch {
	struct tld_inspect_key key;
	struct tld_inspect_task task;
	struct tld_inspect_full full;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct inspect_scratch);
} inspect_scratch SEC(".maps");

/* The records document the walker's saturation. */
_Static_assert(TLD_INSPECT_OFFSET_CAP == TLD_WALK_OFFSET_CAP, "key offsets saturate alike");

SEC("iter/task")
int tld_inspect(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	struct tld_inspect_task t = {};
	struct inspect_scratch *scratch;
	struct tld_inspect_key *k;
	struct tld_map_value *v;
	struct tld_walk_key key;
	struct tld_walk w;
	__u32 zero = 0;
	int i, ret;

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

	ret = tld_walk_begin(&w, task, v, TLD_MAX_DATA_CNT);
	t.start = w.start;
	if (w.page)
		t.flags |= TLD_INSPECT_HAS_DATA;
	if (w.meta)
		t.flags |= TLD_INSPECT_HAS_META;
	if (w.stale)
		t.flags |= TLD_INSPECT_STALE;
	if (ret)
		goto out;
	t.cnt = w.cnt;
	t.meta_size = w.meta_size;
	if (w.cnt > TLD_MAX_DATA_CNT)
		t.flags |= TLD_INSPECT_CNT_CLAMPED;

	bpf_for(i, 0, w.nr) {
		ret = tld_walk_next(&w, i, TLD_MAX_DATA_CNT, &key);
		if (ret <= 0) {
			if (!ret) {
				t.flags |= TLD_INSPECT_UNWRITTEN;
				t.stop_slot = i;
			}
			break;
		}
		t.nr_keys = i + 1;

		if (emit_keys) {
			k->kind = TLD_INSPECT_KIND_KEY;
			k->tid = t.tid;
			k->slot = i;
			k->size = key.size;
			k->offset = key.offset;
			__builtin_memcpy(k->name, key.name, TLD_INSPECT_NAME_LEN);
			k->in_page = key.in_page;
			k->value_len = tld_walk_copy(k->value, TLD_INSPECT_VALUE_MAX, &w, &key);
			bpf_seq_write(seq, k, sizeof(*k));
			if (full_key[0] && key.in_page && key.name[0] == full_key[0] &&
			    !bpf_strncmp(key.name, TLD_NAME_LEN, (const char *)full_key)) {
				scratch->full.kind = TLD_INSPECT_KIND_FULL;
				scratch->full.tid = t.tid;
				scratch->full.slot = i;
				scratch->full.len = tld_walk_copy(scratch->full.value,
								  TLD_INSPECT_FULL_MAX, &w, &key);
				bpf_seq_write(seq, &scratch->full, sizeof(scratch->full));
			}
		}
	}
out:
	bpf_seq_write(seq, &t, sizeof(t));
	return 0;
}
