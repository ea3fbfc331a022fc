// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * tld_top: the BPF side of `tld top PID --by KEY`. On every context switch
 * (tp_btf/sched_switch) it charges the slice that just ended, if its task
 * belongs to the target process, to the value the task's key KEY holds at
 * that moment, read through tld.bpf.h (tld_object_init() + tld_get_data(),
 * with the key cache) as any consumer would. The loader sets the
 * target, the key's name and size in .rodata before loading. With by_field
 * it charges to a field of the thread's OpenTelemetry record instead
 * (tld_otel_record(), tld_otel_attr()): its span id, its trace id, or the
 * value of one attribute (its first TLD_TOP_VALUE_MAX bytes).
 *
 * A thread is charged when it leaves the CPU: a thread that changes its
 * value in the middle of a slice has the whole slice charged to the value it
 * holds at the end.
 *
 * The build compiles this file twice: tld_top (24-byte map value) and
 * tld_top16 (TLD_MAP_VALUE_16); the loader picks by the pinned map's value
 * size.
 */
#include "tld_prog.h"
#include "tld_top.h"

struct tld_keys {
	tld_key_t by;
};

/* Set by the loader before load. Initial pid namespace. */
const volatile int target_tgid = 0;
/* The key's name, NUL padded (a constant string for bpf_strncmp). */
const volatile char key_name[TLD_NAME_LEN] = {};
/* The key's size in bytes, as published (1..page). */
const volatile __u32 key_size = 1;
/* 0: charge every slice to TLD_TOP_NO_DATA without reading TLD (the
 * benchmark's baseline: what the program costs without tld). */
const volatile int read_tld = 1;
/* TLD_TOP_BY_*: a plain key, or a field of the OpenTelemetry record. */
const volatile int by_field = TLD_TOP_BY_KEY;

/*
 * With TLD_TOP_BY_ATTR: the attribute's key-index, written by user space
 * once the name is in the process context's attribute key map (its own
 * section, so that the write does not touch `dropped`).
 */
__u32 attr_index SEC(".data.attr") = TLD_TOP_NO_INDEX;

/* Buckets that did not fit TLD_TOP_MAX_BUCKETS. */
__u64 dropped = 0;

/* When each task of the target last got the CPU (ns), 0 = unknown. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} slice_start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TLD_TOP_MAX_BUCKETS);
	__type(key, struct tld_top_key);
	__type(value, struct tld_top_time);
} top_time SEC(".maps");

/* Fill @k with the OpenTelemetry field by_field of @task's record. */
static __always_inline void read_otel(struct tld_object *tld, struct tld_top_key *k)
{
	struct tld_otel_record *rec;
	int n;

	if (by_field == TLD_TOP_BY_ATTR) {
		n = tld_otel_attr(tld, by, __tld_read_once(attr_index), k->value, TLD_TOP_VALUE_MAX);
		if (n == -ENODATA) {
			k->status = TLD_TOP_NO_RECORD;
		} else if (n < 0) {
			k->status = TLD_TOP_NO_ATTR;
		} else {
			k->status = TLD_TOP_VALUE;
			k->len = n < TLD_TOP_VALUE_MAX ? n : TLD_TOP_VALUE_MAX;
			k->full_len = n;
		}
		return;
	}
	rec = tld_otel_record(tld, by);
	if (!rec) {
		k->status = TLD_TOP_NO_RECORD;
		return;
	}
	k->status = TLD_TOP_VALUE;
	if (by_field == TLD_TOP_BY_SPAN_ID) {
		__builtin_memcpy(k->value, rec->span_id, 8);
		k->len = 8;
	} else {
		__builtin_memcpy(k->value, rec->trace_id, 16);
		k->len = 16;
	}
}

/* Fill @k with what @task's key holds now. */
static __always_inline void read_value(struct task_struct *task, struct tld_top_key *k)
{
	struct tld_object tld;
	__u8 *p;
	__u32 n;

	k->status = TLD_TOP_NO_DATA;
	if (!read_tld || tld_object_init(task, &tld))
		return;
	if (by_field != TLD_TOP_BY_KEY) {
		read_otel(&tld, k);
		return;
	}
	p = tld_get_data(&tld, by, (const char *)key_name, key_size);
	k->status = TLD_TOP_NO_KEY;
	if (!p)
		return;
	k->status = TLD_TOP_VALUE;
	/* Values are 8-byte aligned; the common sizes are one load. */
	if (key_size == 8) {
		*(__u64 *)k->value = *(__u64 *)p;
		k->len = 8;
	} else if (key_size == 4) {
		*(__u32 *)k->value = *(__u32 *)p;
		k->len = 4;
	} else if (key_size == 2) {
		*(__u16 *)k->value = *(__u16 *)p;
		k->len = 2;
	} else if (key_size == 1) {
		k->value[0] = *p;
		k->len = 1;
	} else {
		n = key_size < TLD_TOP_VALUE_MAX ? key_size : TLD_TOP_VALUE_MAX;
		bpf_probe_read_kernel(k->value, n, p);
		k->len = n;
	}
}

static __always_inline void charge(struct task_struct *task, __u64 now)
{
	struct tld_top_key k = {};
	struct tld_top_time *t, init;
	__u64 *start, delta;

	start = bpf_task_storage_get(&slice_start, task, 0, 0);
	if (!start || !*start)
		return;
	delta = now - *start;
	*start = 0;

	k.tid = task->pid;
	read_value(task, &k);
	t = bpf_map_lookup_elem(&top_time, &k);
	if (!t) {
		init.ns = delta;
		init.slices = 1;
		if (!bpf_map_update_elem(&top_time, &k, &init, BPF_NOEXIST))
			return;
		/* Lost a race with another CPU creating it, or the map is full. */
		t = bpf_map_lookup_elem(&top_time, &k);
		if (!t) {
			__sync_fetch_and_add(&dropped, 1);
			return;
		}
	}
	__sync_fetch_and_add(&t->ns, delta);
	__sync_fetch_and_add(&t->slices, 1);
}

SEC("tp_btf/sched_switch")
int BPF_PROG(tld_top_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	__u64 now = bpf_ktime_get_ns();
	__u64 *start;

	if (prev->tgid == target_tgid)
		charge(prev, now);
	if (next->tgid == target_tgid) {
		start = bpf_task_storage_get(&slice_start, next, 0,
					     BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (start)
			*start = now;
	}
	return 0;
}
