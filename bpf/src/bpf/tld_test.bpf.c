// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * Test programs for task local data. One object, so that every program
 * shares one tld_data_map:
 *
 * - read_basic: reads four fixed keys of the calling thread through the
 *   public tld.bpf.h API, as a real consumer would.
 *
 * The build compiles this file twice: tld_test (the 24-byte map value) and
 * tld_test16 (TLD_MAP_VALUE_16: upstream's 16-byte value).
 * - dump_task: walks the metadata of any thread with no key name compiled
 *   in, and reports what a BPF program sees, byte for byte. It reads memory
 *   that an untrusted process controls, so every count, size and offset it
 *   reads is bounded before use (the walk is tld_walk.h's, shared with the
 *   tld_inspect iterator).
 * - count_registered: a task iterator counting the threads of one process
 *   that have a tld_data_map entry.
 *
 * Two more maps exist only to be pinned by tests of the user-space attach
 * errors (no program uses them): wrong_value_map is a task-storage map like
 * tld_data_map but with an 8-byte value, plain_hash_map a hash map whose value
 * has tld_data_map's size (24 bytes), so only its type is wrong.
 */
#include "tld_prog.h"
#include "tld_test.h"
#include "tld_walk.h"

#ifndef ESRCH
#define ESRCH 3
#endif
#ifndef E2BIG
#define E2BIG 7
#endif

/* Not tld_data_maps: for the attach error tests (TestMap::WrongValue). */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} wrong_value_map SEC(".maps");

/* Same size as struct tld_map_value, so only the map type differs. */
struct plain_hash_value {
	__u64 a;
	__u64 b;
	__u64 c;
};

/* Not a tld_data_map (TestMap::PlainHash). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, int);
	__type(value, struct plain_hash_value);
} plain_hash_map SEC(".maps");

/* The key cache of read_basic: one member per key it reads. */
struct tld_keys {
	tld_key_t static_int;
	tld_key_t dyn_int;
	tld_key_t dyn_struct;
	tld_key_t missing;
	tld_key_t too_big;
};

/*
 * bpf_task_from_vpid() resolves a thread id in the caller's pid namespace,
 * which is what gettid() returned to the caller (Linux 6.13+). Older kernels
 * only have bpf_task_from_pid(), which resolves it in the initial namespace.
 */
extern struct task_struct *bpf_task_from_vpid(s32 vpid) __ksym __weak;
extern struct task_struct *bpf_task_from_pid(s32 pid) __ksym __weak;
extern void bpf_task_release(struct task_struct *p) __ksym;

SEC("syscall")
int read_basic(struct basic_ctx *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct tld_object tld;
	__u64 *words;
	int *value;
	int err;

	ctx->found_static_int = 0;
	ctx->found_dyn_int = 0;
	ctx->found_dyn_struct = 0;
	ctx->found_never_created = 0;
	ctx->found_too_big = 0;
	ctx->found_dyn_int_as_8 = 0;

	err = tld_object_init(task, &tld);
	ctx->init_err = err;
	if (err)
		return 0;

	value = tld_get_data(&tld, static_int, "test_static_int", sizeof(int));
	if (value) {
		ctx->found_static_int = 1;
		ctx->static_int = *value;
	}

	value = tld_get_data(&tld, dyn_int, "test_dyn_int", sizeof(int));
	if (value) {
		ctx->found_dyn_int = 1;
		ctx->dyn_int = *value;
	}

	/* Values are 8-byte aligned: copy in words (ctx stores must be aligned). */
	words = tld_get_data(&tld, dyn_struct, "test_dyn_struct", 32);
	if (words) {
		ctx->found_dyn_struct = 1;
		ctx->dyn_struct[0] = words[0];
		ctx->dyn_struct[1] = words[1];
		ctx->dyn_struct[2] = words[2];
		ctx->dyn_struct[3] = words[3];
	}

	value = tld_get_data(&tld, missing, "test_never_created", sizeof(int));
	if (value)
		ctx->found_never_created = 1;

	/* Larger than the slot: never a pointer, searched or cached. */
	if (tld_get_data(&tld, too_big, "test_dyn_int", sizeof(__u64)))
		ctx->found_too_big = 1;
	if (tld_get_data(&tld, dyn_int, "test_dyn_int", sizeof(__u64)))
		ctx->found_dyn_int_as_8 = 1;

	return 0;
}

/* Results of dump_task, one entry per concurrent caller (too big for ctx). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TLD_TEST_DUMP_SLOTS);
	__type(key, __u32);
	__type(value, struct task_dump);
} dumps SEC(".maps");

/* The records document the walker's saturation. */
_Static_assert(TLD_TEST_OFFSET_CAP == TLD_WALK_OFFSET_CAP, "key offsets saturate alike");

/* Fill @d from @task's tld_data_map entry; reads, never creates. */
static int fill_dump(struct task_struct *task, struct task_dump *d)
{
	struct tld_test_key_dump *k;
	struct tld_map_value *v;
	struct tld_walk_key key;
	struct tld_walk w;
	int i, ret;

	/* Set every header field: the entry may hold a previous result. */
	d->registered = 0;
	d->has_data = 0;
	d->has_meta = 0;
	d->stopped_at_unwritten = 0;
	d->start = 0;
	d->cnt = 0;
	d->meta_size = 0;
	d->nr_keys = 0;
	d->stale = 0;

	v = bpf_task_storage_get(&tld_data_map, task, 0, 0);
	if (!v)
		return 0;
	d->registered = 1;

	ret = tld_walk_begin(&w, task, v, TLD_TEST_DUMP_MAX_KEYS);
	d->start = w.start;
	d->has_data = w.page != 0;
	d->has_meta = w.meta != 0;
	d->stale = w.stale;
	if (ret)
		return 0;
	d->cnt = w.cnt;
	d->meta_size = w.meta_size;

	bpf_for(i, 0, w.nr) {
		ret = tld_walk_next(&w, i, TLD_TEST_DUMP_MAX_KEYS, &key);
		if (ret <= 0) {
			d->stopped_at_unwritten = !ret;
			break;
		}

		k = &d->keys[i];
		__builtin_memcpy(k->name, key.name, TLD_TEST_NAME_LEN);
		k->size = key.size;
		k->offset = key.offset;
		k->in_page = key.in_page;
		k->value_len = tld_walk_copy(k->value, TLD_TEST_VALUE_MAX, &w, &key);
		d->nr_keys = i + 1;
	}
	return 0;
}

SEC("syscall")
int dump_task(struct dump_ctx *ctx)
{
	struct task_struct *task;
	struct task_dump *d;
	__u32 slot = ctx->slot;
	int tid = ctx->tid;

	d = bpf_map_lookup_elem(&dumps, &slot);
	if (!d) {
		ctx->err = -E2BIG;
		return 0;
	}

	if (!tid) {
		ctx->err = fill_dump(bpf_get_current_task_btf(), d);
		return 0;
	}

	if (bpf_ksym_exists(bpf_task_from_vpid))
		task = bpf_task_from_vpid(tid);
	else
		task = bpf_task_from_pid(tid);
	if (!task) {
		ctx->err = -ESRCH;
		return 0;
	}
	ctx->err = fill_dump(task, d);
	bpf_task_release(task);
	return 0;
}

/* count_registered: set target_tgid, run the iterator, read the counters. */
int target_tgid;
__u64 registered_tasks;
__u64 total_tasks;

SEC("iter/task")
int count_registered(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;

	if (!task || task->tgid != target_tgid)
		return 0;
	total_tasks++;
	if (bpf_task_storage_get(&tld_data_map, task, 0, 0))
		registered_tasks++;
	return 0;
}
