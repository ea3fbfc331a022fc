/* SPDX-License-Identifier: MIT OR Apache-2.0 */
#ifndef TLD_BPF_H
#define TLD_BPF_H

/*
 * tld.bpf.h - read task local data (TLD) from a BPF program.
 *
 * A process publishes small per-thread values under string keys (for
 * example "priority" or "in_critical_section"). User space writes them
 * through an ordinary pointer; the kernel pins the pages holding them and a
 * BPF program finds them through the task storage map tld_data_map, whose
 * value carries two user pointers (UPTRs, Linux 6.13+): the metadata page of
 * the process (key names and sizes) and the page holding the calling
 * thread's data block.
 *
 * This header has the same names and semantics as the BPF side of the task
 * local data library in the Linux BPF selftests (task_local_data.bpf.h, the
 * revision with a 16-bit key count and `start` in the map value), so a BPF
 * program written against that API builds unchanged against this one.
 *
 *
 * USAGE
 *
 * Before including this header, include vmlinux.h (or the kernel UAPI
 * headers) and, if the target does not use 4 KiB pages, define __PAGE_SIZE.
 * Define struct tld_keys, with one tld_key_t member per value the program
 * reads; it is the value of tld_key_map, the per-task cache of key offsets:
 *
 *	struct tld_keys {
 *		tld_key_t prio;
 *		tld_key_t in_cs;
 *	};
 *
 *	SEC("struct_ops")
 *	void BPF_PROG(enqueue, struct task_struct *p, u64 enq_flags)
 *	{
 *		struct tld_object tld;
 *		int *prio;
 *
 *		if (tld_object_init(p, &tld))
 *			return;		// p never published TLD
 *		prio = tld_get_data(&tld, prio, "priority", sizeof(int));
 *		if (prio)
 *			... use *prio, as a hint ...
 *	}
 *
 *
 * SECURITY
 *
 * TLD values are untrusted hints. Whoever can write tld_data_map (any
 * process holding a writable fd of it, for instance through a pinned path
 * with a permissive mode) can set the values of any task, including tasks of
 * other processes and users, and the owning process can change them at any
 * moment, even while the program reads them. Never let a TLD value grant a
 * privilege, size a buffer or index memory without a bounds check; use it to
 * steer behaviour (scheduling priority, sampling, tracing), nothing more.
 * This header only guarantees that the pointers it returns stay inside the
 * pinned page.
 *
 *
 * WIRE LAYOUT (shared with the user-space runtime; P = page size)
 *
 * Metadata page (one per process, P-aligned):
 *	u16 cnt @0		keys claimed (slots 0..cnt-1)
 *	u16 size @2		data bytes every thread block holds
 *	slot i @4+64*i		char name[62], NUL padded; u16 size, 0 while the
 *				slot is claimed but not yet published
 * Thread block: an 8-byte header, then the data area. The key of slot i is
 * the sum of round_up(size_j, 8) for j < i: its value lives at
 * data + start + key, where `data` is the page-aligned page holding the
 * block and `start` (from the map value) the offset of the data area in it.
 */

#include <bpf/bpf_helpers.h>

/*
 * BPF needs the page size at compile time (the UPTR pointee types below are
 * one page long, and the verifier bounds every access with their size). It
 * must match the page size of the kernel the program runs on: 4096 on
 * x86_64, 4096/16384/65536 on arm64. User space reads it at run time.
 *
 * To build for another page size, #define __PAGE_SIZE after including
 * vmlinux.h and before this header: the vmlinux.h of recent kernels
 * declares an enumerator of that name (enum page_size_enum), which a
 * definition on the command line would break and which the preprocessor
 * cannot see, so without a macro this header assumes 4096.
 */
#ifndef __PAGE_SIZE
#define __PAGE_SIZE 4096
#endif

/* Size of a key name including its NUL. Must match user space (62). */
#ifndef TLD_NAME_LEN
#define TLD_NAME_LEN 62
#endif

/* How often tld_object_init() retries creating the tld_key_map entry. */
#ifndef TLD_KEY_MAP_CREATE_RETRY
#define TLD_KEY_MAP_CREATE_RETRY 10
#endif

/* Linux errno values (asm-generic), for programs built without errno.h. */
#ifndef ENOMEM
#define ENOMEM 12
#endif
#ifndef ENODATA
#define ENODATA 61
#endif

/* Marks a pointer member of a map value as a user pointer (UPTR). */
#ifndef __uptr
#define __uptr __attribute__((btf_type_tag("uptr")))
#endif

/*
 * A key: the offset of a value in a thread's data area, or -errno. In
 * tld_key_map the same type caches lookups (see tld_get_data()).
 */
typedef struct {
	__s16 off;
} tld_key_t;

/* One slot of the metadata page: 64 bytes at the default TLD_NAME_LEN. */
struct tld_metadata {
	char name[TLD_NAME_LEN];
	__u16 size;	/* written last by user space; 0 = not published yet */
};

/* Number of metadata slots in a page: __PAGE_SIZE / 64 - 1 (63 on 4 KiB). */
#define TLD_MAX_DATA_CNT (__PAGE_SIZE / sizeof(struct tld_metadata) - 1)

/* The metadata page, as the `meta` UPTR sees it. */
struct tld_meta_u {
	__u16 cnt;	/* slots claimed; only ever grows */
	__u16 size;	/* data bytes per thread block */
	struct tld_metadata metadata[TLD_MAX_DATA_CNT];
};

/*
 * The page holding the thread's block, as the `data` UPTR sees it. Only its
 * size matters: the value of a key is at (void *)data + start + key.
 */
struct tld_data_u {
	__u64 unused;
	char data[__PAGE_SIZE - sizeof(__u64)];
};

/*
 * The UPTR members point at these typedefs rather than at the structs
 * directly: clang 14 drops a btf_type_tag on a pointer to a struct, but
 * keeps it on a pointer to a typedef. The C types are the same.
 */
typedef struct tld_data_u __tld_data_u_t;
typedef struct tld_meta_u __tld_meta_u_t;

/* Value of tld_data_map, written by user space (24 bytes). */
struct tld_map_value {
	__tld_data_u_t __uptr *data;	/* page-aligned page of the block */
	__tld_meta_u_t __uptr *meta;	/* metadata page of the process */
	__u16 start;			/* data area offset in that page */
	/*
	 * Zero bytes, never used. clang describes a struct reached only
	 * through pointers as a forward declaration in BTF, and the kernel
	 * then rejects the map (a UPTR must point at a sized struct) or the
	 * verifier treats the UPTR as a scalar. Arrays make clang emit the
	 * full definitions wherever the map itself is described, whether or
	 * not the program calls the functions below.
	 */
	struct tld_data_u __btf_data[0];
	struct tld_meta_u __btf_meta[0];
};

_Static_assert(sizeof(struct tld_map_value) == 24, "tld_map_value is 24 bytes");
_Static_assert(sizeof(struct tld_data_u) == __PAGE_SIZE, "tld_data_u is one page");
_Static_assert(sizeof(struct tld_meta_u) <= __PAGE_SIZE, "tld_meta_u fits a page");
#if TLD_NAME_LEN == 62
_Static_assert(sizeof(struct tld_metadata) == 64, "a metadata slot is 64 bytes");
_Static_assert(__builtin_offsetof(struct tld_meta_u, metadata) == 4,
	       "slot 0 starts at offset 4");
#endif

/* Defined by the program: one tld_key_t member per value it reads. */
struct tld_keys;

/*
 * A program's handle on the TLD of one task, kept on the stack. Fill it with
 * tld_object_init(); do not touch its members.
 */
struct tld_object {
	struct tld_map_value *data_map;
	struct tld_keys *key_map;
};

/* Per-task registration, created and updated by user space only. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct tld_map_value);
} tld_data_map SEC(".maps");

/* Per-task cache of the keys this program looked up. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct tld_keys);
} tld_key_map SEC(".maps");

#define __tld_read_once(x) (*(volatile __typeof__(x) *)&(x))
#define __tld_round_up8(x) (((x) + 7) & ~7)

/*
 * Largest key offset a tld_key_t cache entry can hold. Keys beyond it exist
 * only with pages larger than 32 KiB; they still work, just uncached.
 */
#define __TLD_CACHE_MAX 0x7ffe

/**
 * tld_object_init() - Prepare to read the task local data of a task.
 *
 * @task: the task whose data to read; a trusted task_struct pointer (a
 *	program argument, bpf_get_current_task_btf(), bpf_task_from_pid()...)
 * @obj: a struct tld_object on the caller's stack, filled on success
 *
 * Looks up the task's entry in tld_data_map without creating one, then gets
 * or creates the task's entry in tld_key_map, retrying the creation up to
 * TLD_KEY_MAP_CREATE_RETRY times (it can fail transiently: the kernel
 * refuses to re-enter task storage code on a CPU already inside it, and the
 * allocation can fail).
 *
 * Return: 0 on success; -ENODATA if the task never published task local
 * data (no tld_data_map entry: the thread made no TLD access yet, it exited,
 * or its runtime did not attach this map); -ENOMEM if the tld_key_map entry
 * could not be created.
 *
 * Context: any program type that may call bpf_task_storage_get(). @obj is
 * only valid within the current program invocation; do not store it.
 */
__attribute__((unused))
static int tld_object_init(struct task_struct *task, struct tld_object *obj)
{
	int i;

	obj->key_map = 0;
	obj->data_map = bpf_task_storage_get(&tld_data_map, task, 0, 0);
	if (!obj->data_map)
		return -ENODATA;

	for (i = 0; i < TLD_KEY_MAP_CREATE_RETRY; i++) {
		obj->key_map = bpf_task_storage_get(&tld_key_map, task, 0,
						    BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (obj->key_map)
			return 0;
	}
	return -ENOMEM;
}

/*
 * Search the metadata page for @name, comparing names from slot @first on
 * (slots before it were searched by an earlier call and did not match),
 * and record the outcome in the cache entry @key.
 *
 * Return: the key offset of @name plus one (so that it is > 0) when found;
 * otherwise 0 or less. The cache then holds either that positive value or
 * -n, n being the number of slots known not to hold @name.
 *
 * Not inlined: only cache misses call it, and each tld_get_data() site would
 * otherwise carry a copy of the loop.
 *
 * The scan stops at the first slot whose size is still 0: user space stores
 * a slot's size last, so a zero size means the name may be half written and
 * the offsets of later slots are unknown yet. Offsets only grow with the
 * slot index, so once they pass the page no later key can be valid.
 */
__attribute__((unused, noinline))
static int __tld_fetch_key(struct tld_meta_u *meta, const char *name, int first,
			   tld_key_t *key)
{
	/*
	 * 64-bit on purpose: with a 32-bit offset clang bounds-checks a
	 * zero-extended copy, the verifier never sees the offset itself
	 * bounded, and the loop's states stop converging.
	 */
	__u64 off = 0;
	__u32 size;
	int i, cnt;

	cnt = __tld_read_once(meta->cnt);
	if (cnt > TLD_MAX_DATA_CNT)
		cnt = TLD_MAX_DATA_CNT;

	bpf_for(i, 0, cnt) {
		if (i >= TLD_MAX_DATA_CNT)
			break;
		size = __tld_read_once(meta->metadata[i].size);
		if (!size) {
			key->off = -i;
			return 0;
		}
		/*
		 * Read the name only after the size. This compiler barrier
		 * is enough on x86, where loads are not reordered with
		 * loads. On weakly ordered CPUs a search racing with the
		 * creation of the very key it looks for could read a stale
		 * name and cache a miss; BPF load-acquire needs compilers
		 * and kernels (6.15+) newer than this header targets.
		 */
		asm volatile("" ::: "memory");
		if (i >= first && !bpf_strncmp(meta->metadata[i].name, TLD_NAME_LEN, name)) {
			/* Too big to cache: the next search starts at this slot. */
			key->off = off <= __TLD_CACHE_MAX ? (__s16)(off + 1) : -i;
			return off + 1;
		}
		off += __tld_round_up8(size);
		if (off >= __PAGE_SIZE)
			break;
	}
	key->off = -cnt;
	return 0;
}

/* Implementation of tld_get_data(); @size is a compile-time constant. */
static __always_inline void *__tld_get_data(struct tld_object *obj, tld_key_t *key,
					    const char *name, __u32 size)
{
	struct tld_map_value *value = obj->data_map;
	struct tld_meta_u *meta;
	struct tld_data_u *page;
	__u64 pos;	/* 64-bit for the verifier, as in __tld_fetch_key() */
	int k;

	page = value->data;
	if (!page || size > __PAGE_SIZE)
		return 0;

	k = key->off;
	if (k <= 0) {
		meta = value->meta;
		/* Nothing to do unless slots were added since the last search. */
		if (!meta || -k >= __tld_read_once(meta->cnt))
			return 0;
		k = __tld_fetch_key(meta, name, -k, key);
		if (k <= 0)
			return 0;
	}

	pos = (__u64)value->start + (__u64)(k - 1);
	barrier_var(pos);
	if (pos > __PAGE_SIZE - size)
		return 0;
	return (void *)page + pos;
}

/**
 * tld_get_data() - Get a pointer to a task local data value.
 *
 * @obj: a struct tld_object * filled by a successful tld_object_init()
 * @key: the name of the struct tld_keys member caching this key
 * @name: the key name, a string literal (at most TLD_NAME_LEN - 1 bytes)
 * @size: the size of the value in bytes; must be a compile-time constant
 *
 * The first call for a task searches the metadata page for @name and caches
 * the outcome in the task's tld_key_map entry. Once found, later calls use
 * the cached key with no search. While not found, the cache holds how many
 * slots were searched, so a later call returns at once when no key was
 * added, and otherwise compares only the names of the slots added since. A
 * slot still being created (size 0) ends the search: its key and every later
 * one count as not created yet.
 *
 * The cache holds the offset of the key within the data area, not within
 * the page, so it stays right when the thread re-registers its block at
 * another place. It belongs to the task, and a process only ever appends
 * keys, so it stays right for the life of the process image (after an exec
 * the task keeps its cache; the new image normally creates its keys in the
 * same order).
 *
 * Return: a pointer to @size bytes inside the page holding the task's
 * block, to read (or write) with plain loads; NULL when @name is not
 * published yet, when the task's data page is not registered, or when the
 * value would not lie entirely inside that page. The value is an untrusted
 * hint that user space may change concurrently (see SECURITY above).
 *
 * Context: the same program invocation that called tld_object_init().
 */
#define tld_get_data(obj, key, name, size) \
	__tld_get_data((obj), &(obj)->key_map->key, (name), (size))

#endif /* TLD_BPF_H */
