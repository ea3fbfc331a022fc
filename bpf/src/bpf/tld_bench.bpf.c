// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * tld_bench: what a BPF program pays to read task local data, measured
 * inside the program: each syscall program runs its body `iters` times in a
 * bpf_for() loop on the calling thread and reports the loop's duration
 * (bpf_ktime_get_ns() around it). `empty` is the loop alone, to subtract.
 *
 * - hash: bpf_map_lookup_elem() of a hash map keyed by tid, the usual way
 *   to pass a per-thread hint without tld;
 * - init: tld_object_init();
 * - init_get: tld_object_init() + tld_get_data(), what a consumer pays per
 *   event;
 * - warm_get: tld_get_data() with a warm key cache (one init before the
 *   loop);
 * - storage1: the task-storage lookup tld_object_init() makes
 *   (tld_data_map), alone: the floor of init;
 * - cold_get: tld_get_data() with the key's cache entry emptied before each
 *   call: a name search over every slot up to the key's (the bench makes it
 *   the last of 1, 16 or 63 keys).
 *
 * - otel_record: tld_object_init() + tld_otel_record() of a valid record;
 * - otel_attr: tld_object_init() + tld_otel_attr() of the record's second
 *   attribute (key-index 1, after one of index 0).
 *
 * Run by `cargo bench -p tld-bpf --bench bpf_cost` (benches/bpf_cost.rs).
 */
#include "tld_prog.h"

struct tld_keys {
	tld_key_t hint;
	tld_key_t otel;
};

struct bench_ctx {
	__u32 iters;	/* in */
	__s32 err;	/* out: tld_object_init()'s result before the loop */
	__u64 ns;	/* out: the loop's duration */
	__u64 hits;	/* out: iterations that found the value (keeps the work) */
};

/* tid -> hint, filled by the bench. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, int);
	__type(value, __u64);
} tid_hints SEC(".maps");

#define BENCH(prog, setup, body)						\
SEC("syscall")									\
int prog(struct bench_ctx *ctx)							\
{										\
	struct task_struct *task = bpf_get_current_task_btf();			\
	int tid = bpf_get_current_pid_tgid();					\
	struct tld_object tld = {};						\
	__u64 t0, hits = 0, *v;							\
	__u32 n = ctx->iters;							\
	int i;									\
										\
	(void)tid; (void)v; (void)task;						\
	ctx->err = tld_object_init(task, &tld);					\
	setup;									\
	t0 = bpf_ktime_get_ns();						\
	bpf_for(i, 0, n) {							\
		body;								\
	}									\
	ctx->ns = bpf_ktime_get_ns() - t0;					\
	ctx->hits = hits;							\
	return 0;								\
}

BENCH(bench_empty, , { barrier_var(hits); hits++; })

BENCH(bench_hash, , {
	v = bpf_map_lookup_elem(&tid_hints, &tid);
	if (v)
		hits += *v;
})

BENCH(bench_init, , {
	if (!tld_object_init(task, &tld))
		hits++;
})

BENCH(bench_init_get, , {
	if (!tld_object_init(task, &tld)) {
		v = tld_get_data(&tld, hint, "bench_hint", sizeof(__u64));
		if (v)
			hits += *v;
	}
})

BENCH(bench_warm_get, if (ctx->err) return 0, {
	v = tld_get_data(&tld, hint, "bench_hint", sizeof(__u64));
	if (v)
		hits += *v;
})

BENCH(bench_cold_get, if (ctx->err) return 0, {
	/* Empty the key's cache entry: the next call searches the names. */
	tld.key_map->keys[0].off = 0;
	v = tld_get_data(&tld, hint, "bench_hint", sizeof(__u64));
	if (v)
		hits += *v;
})

BENCH(bench_storage1, , {
	if (bpf_task_storage_get(&tld_data_map, task, 0, 0))
		hits++;
})

#define OTEL_LOCALS struct tld_otel_record *rec = 0; __u8 buf[64] = {}; int r = 0; (void)rec; (void)buf; (void)r

BENCH(bench_otel_record, OTEL_LOCALS, {
	if (!tld_object_init(task, &tld)) {
		rec = tld_otel_record(&tld, otel);
		if (rec)
			hits += rec->span_id[0];
	}
})

BENCH(bench_otel_attr, OTEL_LOCALS, {
	if (!tld_object_init(task, &tld)) {
		r = tld_otel_attr(&tld, otel, 1, buf, sizeof(buf));
		if (r > 0)
			hits += r;
	}
})
