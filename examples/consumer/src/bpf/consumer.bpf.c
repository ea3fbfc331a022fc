// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * A BPF consumer of task local data, small enough to copy: a task iterator
 * that prints, for every thread of one process, the values of two keys its
 * application publishes, "priority" (an int) and "request_id" (a u64):
 *
 *	tid priority request_id
 *
 * with '-' for a key the thread has not published. Everything tld-specific
 * is tld.bpf.h's API: declare the keys you read in struct tld_keys, call
 * tld_object_init() for the task, then tld_get_data() per key.
 *
 * The map: tld.bpf.h defines tld_data_map; the loader (src/main.rs) makes it
 * reuse the map pinned by `tld pin`, so it reads the values of applications
 * attached to that pin, including after this consumer restarts.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "tld.bpf.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* One member per key this program reads: its entry in the key cache. */
struct tld_keys {
	tld_key_t priority;
	tld_key_t request_id;
};

/* The process to report, set by the loader before loading. */
const volatile int target_tgid = 0;

SEC("iter/task")
int dump_hints(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	struct tld_object tld;
	int *prio;
	__u64 *req;

	if (!task || task->tgid != target_tgid)
		return 0;
	if (tld_object_init(task, &tld))
		return 0;	/* the thread publishes nothing (yet) */

	prio = tld_get_data(&tld, priority, "priority", sizeof(int));
	req = tld_get_data(&tld, request_id, "request_id", sizeof(__u64));

	/* Values are hints the application may change at any moment. */
	if (prio && req)
		BPF_SEQ_PRINTF(seq, "%d %d %llu\n", task->pid, *prio, *req);
	else if (prio)
		BPF_SEQ_PRINTF(seq, "%d %d -\n", task->pid, *prio);
	else if (req)
		BPF_SEQ_PRINTF(seq, "%d - %llu\n", task->pid, *req);
	else
		BPF_SEQ_PRINTF(seq, "%d - -\n", task->pid);
	return 0;
}
