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
 * local data library in the Linux BPF selftests (task_local_data.bpf.h), so a
 * BPF program written against that API builds unchanged against this one. It
 * reads either map layout (see WIRE LAYOUT): the 24-byte map value by
 * default, the 16-byte value of the Linux tree when the program defines
 * TLD_MAP_VALUE_16 before including it:
 *
 *	#define TLD_MAP_VALUE_16	// read maps of upstream's 16-byte layout
 *	#include "tld.bpf.h"
 *
 * A tld application registers with maps of either layout, so a consumer
 * built either way reads it; a process using upstream's user-space library
 * registers 16-byte values only, so its consumers define TLD_MAP_VALUE_16.
 *
 * COMPILERS: clang 14 or newer builds either layout. The UPTR members point
 * at typedefs because clang 14 drops a btf_type_tag on a pointer to a struct;
 * with clang >= 15 that detour is harmless. Nothing here needs clang >= 15.
 * The program must be built with vmlinux.h (task_struct, mm_struct: the exec
 * check reads task->mm->arg_start) and loaded with CAP_BPF + CAP_PERFMON (as
 * every tracing or sched_ext program is).
 *
 *
 * USAGE
 *
 * Before including this header, include vmlinux.h and, if the target does
 * not use 4 KiB pages, define __PAGE_SIZE. Define struct tld_keys (before or
 * after the include), with one tld_key_t member per value the program reads
 * (at most TLD_KEY_CACHE_MAX); each member names an entry of tld_key_map, the
 * cache of key offsets (per CPU and process):
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
 * pinned page, cover no more than the key's slot, and belong to the task's
 * current image.
 *
 *
 * WIRE LAYOUT (DESIGN.md §2; shared with the user-space runtime; P = page
 * size, all integers little-endian)
 *
 * Metadata page (one per process, P-aligned, P bytes):
 *	u16 cnt @0		keys claimed (slots 0..cnt-1); a 16-byte map's
 *				readers take only its low byte (u8), as upstream
 *	u16 size @2		data bytes every thread block holds
 *	slot i @4+64*i		char name[62], NUL padded; u16 size, 0 while the
 *				slot is claimed but not yet published (stored
 *				last, with release order)
 *	u64 stamp_magic @P-16	"TLDSTMP1" (0x31504d5453444c54) when stamped
 *	u64 exec_stamp @P-8	mm->arg_start of the image that owns the page
 *
 * The key of slot i is the sum of round_up(size_j, 8) for j < i; a value
 * lives at data + start + key, where `data` is the page-aligned page holding
 * the thread's block and `start` the offset of its data area in that page.
 *
 * 24-byte map value (the default):
 *	__uptr data @0, __uptr meta @8, u16 start @16, 6 zero bytes
 * 16-byte map value (upstream's layout, with TLD_MAP_VALUE_16):
 *	__uptr data @0, __uptr meta @8; `start` is the u64 at offset 0 of the
 *	page `data` points at (a page block's header: 8 for tld)
 *
 * A map's BTF describes both pages as P bytes (full-page pointee types), so
 * the verifier lets a reader check the stamp at P-16. A 16-byte map created
 * by upstream's BPF header describes a shorter metadata type: programs built
 * on this header do not load against it (create the map with
 * `tld pin --layout 16`, or let this header create it).
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

/*
 * Accepted for source compatibility with upstream's header; unused: the key
 * cache is per CPU and never created.
 */
#ifndef TLD_KEY_MAP_CREATE_RETRY
#define TLD_KEY_MAP_CREATE_RETRY 10
#endif

/*
 * Entries of the per-CPU key cache, one per process at a time (by tgid,
 * modulo). Processes whose tgids collide on a CPU evict each other's keys
 * (they are found again by a search); more entries, fewer collisions.
 */
#ifndef TLD_KEY_CACHE_WAYS
#define TLD_KEY_CACHE_WAYS 64
#endif

/*
 * Members struct tld_keys may have (the key cache holds one entry
 * per member; tld_get_data() refuses to compile for a member past it).
 */
#ifndef TLD_KEY_CACHE_MAX
#define TLD_KEY_CACHE_MAX 32
#endif

/* Linux errno values (asm-generic), for programs built without errno.h. */
#ifndef ENOMEM
#define ENOMEM 12
#endif
#ifndef ENODATA
#define ENODATA 61
#endif
#ifndef ENOENT
#define ENOENT 2
#endif

/* Marks a pointer member of a map value as a user pointer (UPTR). */
#ifndef __uptr
#define __uptr __attribute__((btf_type_tag("uptr")))
#endif

/* stamp_magic of a stamped metadata page: the bytes "TLDSTMP1". */
#define TLD_STAMP_MAGIC 0x31504d5453444c54ULL

/*
 * A key: the offset of a value in a thread's data area, or -errno. Programs
 * declare one tld_key_t member of struct tld_keys per key they read.
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

/* The metadata page, as the `meta` UPTR sees it: the whole page. */
struct tld_meta_u {
	__u16 cnt;	/* slots claimed; only ever grows (u8 for 16-byte maps) */
	__u16 size;	/* data bytes per thread block */
	struct tld_metadata metadata[TLD_MAX_DATA_CNT];
	__u8 __reserved[__PAGE_SIZE - 4 - TLD_MAX_DATA_CNT * sizeof(struct tld_metadata) - 16];
	__u64 stamp_magic;	/* TLD_STAMP_MAGIC, or 0: no stamp, skip the check */
	__u64 exec_stamp;	/* mm->arg_start of the owning image */
};

/*
 * The page holding the thread's block, as the `data` UPTR sees it. For a
 * 16-byte map, its first u64 is `start`; for a 24-byte map only the size
 * matters. A value is at (void *)data + start + key.
 */
struct tld_data_u {
	__u64 start;
	char data[__PAGE_SIZE - sizeof(__u64)];
};

/*
 * The UPTR members point at these typedefs rather than at the structs
 * directly: clang 14 drops a btf_type_tag on a pointer to a struct, but
 * keeps it on a pointer to a typedef. The C types are the same.
 */
typedef struct tld_data_u __tld_data_u_t;
typedef struct tld_meta_u __tld_meta_u_t;

/* Value of tld_data_map, written by user space. */
struct tld_map_value {
	__tld_data_u_t __uptr *data;	/* page-aligned page of the block */
	__tld_meta_u_t __uptr *meta;	/* metadata page of the process */
#ifndef TLD_MAP_VALUE_16
	__u16 start;			/* data area offset in that page */
#endif
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

#ifdef TLD_MAP_VALUE_16
_Static_assert(sizeof(struct tld_map_value) == 16, "the 16-byte tld_map_value");
#else
_Static_assert(sizeof(struct tld_map_value) == 24, "the 24-byte tld_map_value");
#endif
_Static_assert(sizeof(struct tld_data_u) == __PAGE_SIZE, "tld_data_u is one page");
_Static_assert(sizeof(struct tld_meta_u) == __PAGE_SIZE, "tld_meta_u is one page");
_Static_assert(__builtin_offsetof(struct tld_meta_u, stamp_magic) == __PAGE_SIZE - 16,
	       "the stamp sits at the end of the metadata page");
#if TLD_NAME_LEN == 62
_Static_assert(sizeof(struct tld_metadata) == 64, "a metadata slot is 64 bytes");
_Static_assert(__builtin_offsetof(struct tld_meta_u, metadata) == 4,
	       "slot 0 starts at offset 4");
#endif

/* Defined by the program: one tld_key_t member per value it reads. */
struct tld_keys;

/*
 * One cached key: off > 0 is the key plus one, found in a slot of `size`
 * bytes; off <= 0 means the first -off slots were searched in vain.
 */
struct tld_cached_key {
	__s16 off;
	__u16 size;
};

/*
 * Value of tld_key_map: the keys this program's lookups found for one
 * registration, indexed by the position of their member in struct tld_keys,
 * and which registration that is: its metadata page, exec stamp and
 * process. Keys are per process (one metadata page), so the threads of a
 * process share an entry on each CPU.
 *
 * Programs on one CPU may interleave (a program preempted by another, or
 * interrupted by one in NMI context), so an entry is read and written like a
 * seqcount: `seq` is odd while one program writes, which it claims with a
 * compare-and-swap from even to odd (BPF_CMPXCHG, which clang 14 emits at
 * every -mcpu level); a reader takes what it read only when `seq` was even
 * and unchanged around it; a program that finds the entry claimed neither
 * waits nor writes: it searches, uncached.
 */
struct tld_key_cache {
	__u64 seq;
	__u64 meta;		/* kernel address of the metadata page, 0 = empty */
	__u64 stamp;		/* its exec_stamp when stamped, else 0 */
	__u64 start_time;	/* the process's start (its leader's), ns since boot */
	struct tld_cached_key keys[TLD_KEY_CACHE_MAX];
};

/*
 * A program's handle on the TLD of one task, kept on the stack. Fill it with
 * tld_object_init(); do not touch its members.
 */
struct tld_object {
	struct tld_map_value *data_map;
	struct tld_key_cache *key_map;	/* this CPU's entry for the process */
	__u64 meta;			/* the registration: as in tld_key_cache */
	__u64 stamp;
	__u64 start_time;
};

/* Per-task registration, created and updated by user space only. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct tld_map_value);
} tld_data_map SEC(".maps");

/* Per-CPU cache of the keys this program looked up. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TLD_KEY_CACHE_WAYS);
	__type(key, __u32);
	__type(value, struct tld_key_cache);
} tld_key_map SEC(".maps");

#define __tld_read_once(x) (*(volatile __typeof__(x) *)&(x))
#define __tld_round_up8(x) (((x) + 7) & ~7)

/*
 * The metadata cnt as this layout's readers take it: a 16-byte map's
 * readers read a u8 (upstream's field), a 24-byte map's the u16.
 */
#ifdef TLD_MAP_VALUE_16
#define __tld_meta_cnt(meta) ((__u32)__tld_read_once(*(__u8 *)&(meta)->cnt))
#else
#define __tld_meta_cnt(meta) ((__u32)__tld_read_once((meta)->cnt))
#endif

/*
 * __tld_slot_name() - The name of slot @i, ordered after the load of its
 * @size (DESIGN §2.1: a reader reads a name only after it saw the size
 * non-zero, with acquire order).
 *
 * User space stores the size with release order after the name. On x86
 * loads are not reordered with loads, but on arm64 a plain load of the name
 * could be satisfied before the load of the size and return stale bytes: a
 * search would then cache a permanent miss for a key that exists. BPF has a
 * load-acquire instruction only with LLVM 21+ and Linux 6.15+; instead the
 * address of the name is made to depend on the value of the size (the size
 * AND 0, hidden from the compiler in an asm statement). CPUs order a load
 * after the load its address depends on (every architecture Linux runs BPF
 * on; the JITs emit the AND as a real instruction), which is the acquire
 * order the walk needs, for free.
 */
static __always_inline const char *__tld_slot_name(struct tld_meta_u *meta, __u32 i, __u64 size)
{
	__u64 dep = size;

	asm volatile("%[dep] &= 0" : [dep] "+r"(dep));
	return (const char *)meta->metadata[i].name + dep;
}

/*
 * __tld_stamp() - The exec stamp of @task's registration with metadata
 * page @meta, in @stamp (0 for an unstamped page); -1 when the page is
 * stamped by an image @task has since replaced with execve (DESIGN §5.5):
 * its stamp is not the task's current mm->arg_start. An unstamped page
 * (magic 0: upstream's library, or a stamp user space could not read) is
 * never stale.
 */
static __always_inline int __tld_stamp(struct task_struct *task, struct tld_meta_u *meta,
				       __u64 *stamp)
{
	struct mm_struct *mm;

	*stamp = 0;
	if (__tld_read_once(meta->stamp_magic) != TLD_STAMP_MAGIC)
		return 0;
	*stamp = __tld_read_once(meta->exec_stamp);
	mm = task->mm;
	/* A task without an address space (exiting) has no current image. */
	return mm && *stamp == mm->arg_start ? 0 : -1;
}

/*
 * The data area's offset in the data page: the map value's `start`, or for
 * a 16-byte map the u64 at offset 0 of the page. Anything at or past the
 * page is returned as is; callers bound it.
 */
static __always_inline __u64 __tld_data_start(struct tld_map_value *value, struct tld_data_u *page)
{
#ifdef TLD_MAP_VALUE_16
	return __tld_read_once(page->start);
#else
	return value->start;
#endif
}

/*
 * A cache entry for a name whose slot is smaller than the size asked: a
 * permanent miss (a name is unique, and a slot's size never changes), never
 * searched again, so that even a page with duplicate names (garbage) gives
 * the same answer every time.
 */
#define __TLD_KEY_TOO_SMALL (-0x8000)

/*
 * Largest key offset a cache entry can hold. Keys beyond it exist only with
 * pages larger than 32 KiB; they still work, just uncached.
 */
#define __TLD_CACHE_MAX 0x7ffe

/**
 * tld_object_init() - Prepare to read the task local data of a task.
 *
 * @task: the task whose data to read; a trusted task_struct pointer (a
 *	program argument, bpf_get_current_task_btf(), bpf_task_from_pid()...)
 * @obj: a struct tld_object on the caller's stack, filled on success
 *
 * Looks up the task's entry in tld_data_map without creating one, checks
 * that it belongs to the task's current image, and finds this CPU's key
 * cache entry for the task's process: one task-storage lookup in all.
 *
 * Return: 0 on success; -ENODATA if the task has no task local data for
 * this program: no tld_data_map entry (the thread made no TLD access yet, it
 * exited, or its runtime did not attach this map), no metadata page, or an
 * entry left by an image the task replaced with execve (DESIGN §5.5);
 * -ENOMEM never (kept from upstream's API: its per-task cache could fail to
 * be created).
 *
 * Context: any program type that may call bpf_task_storage_get() and read
 * task->mm and task->group_leader. @obj is only valid within the current
 * program invocation; do not store it.
 */
__attribute__((unused))
static __always_inline int tld_object_init(struct task_struct *task, struct tld_object *obj)
{
	struct tld_meta_u *meta;
	__u32 way;

	obj->key_map = 0;
	obj->data_map = bpf_task_storage_get(&tld_data_map, task, 0, 0);
	if (!obj->data_map)
		return -ENODATA;
	meta = obj->data_map->meta;
	if (!meta || __tld_stamp(task, meta, &obj->stamp))
		return -ENODATA;
	obj->meta = (__u64)meta;
	/*
	 * A metadata page's address alone could be another process's page
	 * reused; with the process's start time it cannot.
	 */
	obj->start_time = task->group_leader->start_time;
	way = (__u32)task->tgid % TLD_KEY_CACHE_WAYS;
	obj->key_map = bpf_map_lookup_elem(&tld_key_map, &way);
	return obj->key_map ? 0 : -ENOMEM;
}

/* Whether cache entry @c was learnt from @obj's registration. */
static __always_inline int __tld_cache_is(struct tld_key_cache *c, struct tld_object *obj)
{
	return __tld_read_once(c->meta) == obj->meta && __tld_read_once(c->stamp) == obj->stamp &&
	       __tld_read_once(c->start_time) == obj->start_time;
}

/*
 * __tld_cache_load() - The cached key @idx of @obj's registration, in
 * @out. Return: 1 when @out holds what this CPU learnt for the
 * registration; 0 when nothing can be trusted (another registration's entry,
 * or a program on this CPU is writing it): search from slot 0.
 */
static __always_inline int __tld_cache_load(struct tld_object *obj, __u32 idx,
					    struct tld_cached_key *out)
{
	struct tld_key_cache *c = obj->key_map;
	__u64 seq = __tld_read_once(c->seq);

	if ((seq & 1) || !__tld_cache_is(c, obj))
		return 0;
	*(__u32 *)out = __tld_read_once(*(__u32 *)&c->keys[idx]);
	barrier();
	return __tld_read_once(c->seq) == seq;
}

/*
 * __tld_cache_store() - Records @key as the cached key @idx of @obj's
 * registration, emptying the entry first if it held another one. Skipped
 * when another program on this CPU is writing the entry.
 */
static __always_inline void __tld_cache_store(struct tld_object *obj, __u32 idx,
					      struct tld_cached_key key)
{
	struct tld_key_cache *c = obj->key_map;
	__u64 seq = __tld_read_once(c->seq);

	if ((seq & 1) || __sync_val_compare_and_swap(&c->seq, seq, seq + 1) != seq)
		return;
	barrier();
	if (!__tld_cache_is(c, obj)) {
		__builtin_memset(c->keys, 0, sizeof(c->keys));
		c->meta = obj->meta;
		c->stamp = obj->stamp;
		c->start_time = obj->start_time;
	}
	*(__u32 *)&c->keys[idx] = *(__u32 *)&key;
	barrier();
	__tld_read_once(c->seq) = seq + 2;
}

/*
 * Search the metadata page for @name, comparing names from slot @first on
 * (slots before it were searched by an earlier call and did not match),
 * and record the outcome in the cache entry @key.
 *
 * Return: the key offset of @name plus one (so that it is > 0) when found in
 * a slot of at least @size bytes; otherwise 0. The cache then holds either
 * that positive value with the slot's size, __TLD_KEY_TOO_SMALL, or -n, n
 * being the number of slots known not to hold @name.
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
			   struct tld_cached_key *key, __u32 want)
{
	/*
	 * 64-bit on purpose: with a 32-bit offset clang bounds-checks a
	 * zero-extended copy, the verifier never sees the offset itself
	 * bounded, and the loop's states stop converging.
	 */
	__u64 off = 0;
	const char *slot_name;
	__u32 size;
	int i, cnt;

	cnt = __tld_meta_cnt(meta);
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
		slot_name = __tld_slot_name(meta, i, size);
		/*
		 * The first byte first: a helper call per slot is most of the
		 * cost. A volatile read: @name may be a `const volatile` array
		 * set before load, whose initializer the compiler must not use.
		 */
		if (i >= first && slot_name[0] == *(const volatile char *)name &&
		    !bpf_strncmp(slot_name, TLD_NAME_LEN, name)) {
			if (size < want) {
				key->off = __TLD_KEY_TOO_SMALL;
				return 0;
			}
			/* Too big to cache: the next search starts at this slot. */
			key->size = size;
			if (off <= __TLD_CACHE_MAX)
				key->off = (__s16)(off + 1);
			else
				key->off = -i;
			return off + 1;
		}
		off += __tld_round_up8(size);
		if (off >= __PAGE_SIZE)
			break;
	}
	key->off = -cnt;
	return 0;
}

/*
 * Where __tld_get_data_at() found a value: the data page, the value's
 * offset in it and its slot's size (at least the size asked).
 */
struct __tld_at {
	struct tld_data_u *page;
	__u64 pos;
	__u32 slot;
};

/*
 * Implementation of tld_get_data(); @size is a compile-time constant. When
 * @at is not NULL it receives where the value lies (filled only on success).
 */
static __always_inline void *__tld_get_data_at(struct tld_object *obj, __u32 idx,
					       const char *name, __u32 size,
					       struct __tld_at *at)
{
	struct tld_map_value *value = obj->data_map;
	struct tld_cached_key key = {};
	struct tld_meta_u *meta;
	struct tld_data_u *page;
	__u64 pos;	/* 64-bit for the verifier, as in __tld_fetch_key() */
	int k;

	if (idx >= TLD_KEY_CACHE_MAX || !obj->key_map)
		return 0;
	page = value->data;
	if (!page || size > __PAGE_SIZE)
		return 0;

	__tld_cache_load(obj, idx, &key);
	k = key.off;
	if ((k > 0 && key.size < size) || k == __TLD_KEY_TOO_SMALL)
		return 0;
	if (k <= 0) {
		meta = value->meta;
		/* Nothing to do unless slots were added since the last search. */
		if (!meta || -k >= __tld_meta_cnt(meta))
			return 0;
		k = __tld_fetch_key(meta, name, -k, &key, size);
		__tld_cache_store(obj, idx, key);
		if (k <= 0)
			return 0;
	}

	pos = __tld_data_start(value, page);
	if (pos >= __PAGE_SIZE)
		return 0;
	pos += (__u64)(k - 1);
	barrier_var(pos);
	if (pos > __PAGE_SIZE - size)
		return 0;
	if (at) {
		at->page = page;
		at->pos = pos;
		at->slot = key.size;
	}
	return (void *)page + pos;
}

static __always_inline void *__tld_get_data(struct tld_object *obj, __u32 idx,
					    const char *name, __u32 size)
{
	return __tld_get_data_at(obj, idx, name, size, 0);
}

/*
 * The cache entry of member @key of struct tld_keys. Fails to compile when
 * struct tld_keys has more members than TLD_KEY_CACHE_MAX.
 */
#define __tld_key_index(key)							\
	(__builtin_offsetof(struct tld_keys, key) / sizeof(tld_key_t) +		\
	 0 * sizeof(char[__builtin_offsetof(struct tld_keys, key) /		\
			 sizeof(tld_key_t) < TLD_KEY_CACHE_MAX ? 1 : -1]))

/**
 * tld_get_data() - Get a pointer to a task local data value.
 *
 * @obj: a struct tld_object * filled by a successful tld_object_init()
 * @key: the name of the struct tld_keys member caching this key
 * @name: the key name, a string literal (at most TLD_NAME_LEN - 1 bytes)
 * @size: the size of the value in bytes; must be a compile-time constant
 *
 * The first call for a process on a CPU searches the metadata page for
 * @name and caches the outcome in this CPU's tld_key_map entry for the
 * process. Once found, later calls use the cached key with no search. While not found, the cache holds how many
 * slots were searched, so a later call returns at once when no key was
 * added, and otherwise compares only the names of the slots added since. A
 * slot still being created (size 0) ends the search: its key and every later
 * one count as not created yet. Use one member per (name, size).
 *
 * The cache holds the offset of the key within the data area, not within
 * the page, so it stays right for every thread of the process and when a
 * thread re-registers its block at another place; it starts over for
 * another metadata page, exec stamp or process.
 *
 * Return: a pointer to @size bytes inside the page holding the task's
 * block, to read (or write) with plain loads; NULL when @name is not
 * published yet, when its slot holds fewer than @size bytes, when the task's
 * data page is not registered, or when the value would not lie entirely
 * inside that page. The value is an untrusted hint that user space may
 * change concurrently (see SECURITY above).
 *
 * Context: the same program invocation that called tld_object_init().
 */
#define tld_get_data(obj, key, name, size) \
	__tld_get_data((obj), __tld_key_index(key), (name), (size))

/*
 * OPENTELEMETRY THREAD CONTEXT (DESIGN.md §10)
 *
 * A process using tld's OpenTelemetry crate (tld_otel, libtld's tld_otel.h)
 * publishes each thread's OTEP 4947 Thread-Local Context Record as the whole
 * value of the static key "otel.thread_ctx_v1" (28 to 640 bytes, 128 by
 * default). tld_otel_record() returns it when it is valid, tld_otel_attr()
 * copies one of its attributes. Attribute names are not in the record: a
 * record names them by index into the process context's
 * threadlocal.attribute_key_map (OTEP 4719), which user space reads and
 * hands to the program (an index never changes meaning in a process).
 *
 * Ordering. The thread writes its record with valid = 0, a release fence,
 * the fields, then valid = 1 with release order (DESIGN §10.2). Both helpers
 * load `valid` first and make every later load of the record depend on its
 * value (the address dependency of __tld_slot_name(): the acquire order a
 * reader on another CPU needs on arm64, free on x86). They do not load
 * `valid` again after the fields: the record has no sequence counter, so a
 * re-check cannot see a set that ran whole between the two loads (valid
 * 1, 0, 1), and a program reading the record of the task it runs on, or of
 * a task being switched out (sched_switch's prev), cannot race with its
 * writer at all (the OTEP's own readers observe stopped threads the same
 * way). A program reading another running thread's record (an iterator)
 * can see fields of two spans mixed: like every tld value, it is a hint.
 */

/* The record's key, and the bytes of its header. */
#define TLD_OTEL_KEY "otel.thread_ctx_v1"
#define TLD_OTEL_HEADER 28
/* The largest record (and so the most attrs-data bytes) tld publishes. */
#define TLD_OTEL_RECORD_MAX 640
#define TLD_OTEL_ATTRS_MAX (TLD_OTEL_RECORD_MAX - TLD_OTEL_HEADER)

/*
 * An OTEP 4947 Thread-Local Context Record, as it lies in the thread's data
 * page (byte-packed, host byte order). attrs_data holds attrs_data_size
 * bytes of entries: key-index u8, length u8, length bytes of UTF-8. Read
 * the attributes with tld_otel_attr(), which bounds every byte it reads by
 * the slot and the page (a plain load of attrs_data[i] does not pass the
 * verifier: the record's offset in the page is not known).
 */
struct tld_otel_record {
	__u8 trace_id[16];	/* W3C trace id; all zero: none */
	__u8 span_id[8];	/* W3C span id */
	__u8 valid;		/* 1: the record is valid (the helpers check it) */
	__u8 trace_flags;	/* W3C trace flags */
	__u16 attrs_data_size;	/* bytes of attrs_data */
	__u8 attrs_data[];
};

_Static_assert(sizeof(struct tld_otel_record) == TLD_OTEL_HEADER, "the OTEP 4947 header is 28 bytes");

/*
 * The task's valid record and where it lies, or NULL. The returned pointer
 * carries an address dependency on the load of `valid`.
 */
static __always_inline struct tld_otel_record *__tld_otel_record(struct tld_object *obj, __u32 idx,
								 struct __tld_at *at)
{
	struct tld_otel_record *rec;
	__u64 dep;

	rec = __tld_get_data_at(obj, idx, TLD_OTEL_KEY, TLD_OTEL_HEADER, at);
	if (!rec)
		return 0;
	dep = __tld_read_once(rec->valid);
	if (dep != 1)
		return 0;
	/* dep AND 0, hidden from the compiler: later loads depend on `valid`. */
	asm volatile("%[dep] &= 0" : [dep] "+r"(dep));
	return (void *)rec + dep;
}

/**
 * tld_otel_record() - The task's OpenTelemetry thread context record.
 *
 * @obj: a struct tld_object * filled by a successful tld_object_init()
 * @key: the name of the struct tld_keys member caching the record's key
 *	(one member per program, used by tld_otel_attr() as well)
 *
 * Finds the value of "otel.thread_ctx_v1" as tld_get_data() does (cached
 * per CPU and process) and checks the record's `valid` byte.
 *
 * Return: a pointer to the record's header in the task's data page, whose
 * trace_id, span_id, trace_flags and attrs_data_size can be read with plain
 * loads; NULL when the key is absent (the process does not publish
 * OpenTelemetry context through tld), its slot is smaller than the 28-byte
 * header, the header would not lie inside the page, or `valid` is not 1
 * (the thread never published a span context, or cleared it). The record is
 * an untrusted hint (see SECURITY, and the ordering notes above).
 *
 * Context: as tld_get_data().
 */
#define tld_otel_record(obj, key) __tld_otel_record((obj), __tld_key_index(key), 0)

/*
 * __tld_otel_find() - Walk attrs-data: @len bytes at offset @base of the
 * data page @page (the caller bounded both by the slot and the page), for
 * the last entry of key-index @index. Return: its length, its value's offset
 * in the page in @found; -ENOENT when there is none.
 *
 * A global function: the verifier checks it once, on its own, instead of
 * at every call site with the caller's state, so that a program calling
 * tld_otel_attr() inside a loop of its own stays far from the verifier's
 * limits. Weak, so that objects that each include this header link.
 */
__attribute__((noinline, weak)) int __tld_otel_find(struct tld_data_u *page, __u64 base, __u64 len,
						    __u32 index, __u64 *found)
{
	__u64 off = 0, p;
	__u32 k, l;
	int i, hit = -ENOENT;

	if (!page || !found || base > __PAGE_SIZE)
		return -ENOENT;
	if (len > TLD_OTEL_ATTRS_MAX)
		len = TLD_OTEL_ATTRS_MAX;
	if (len > __PAGE_SIZE - base)
		len = __PAGE_SIZE - base;
	/* Entries are at least 2 bytes: at most TLD_OTEL_ATTRS_MAX / 2 of them. */
	bpf_for(i, 0, TLD_OTEL_ATTRS_MAX / 2) {
		if (off + 2 > len)
			break;
		p = base + off;
		barrier_var(p);
		if (p > __PAGE_SIZE - 2)
			break;
		k = ((__u8 *)page)[p];
		l = ((__u8 *)page)[p + 1];
		/* An entry cut by the end of attrs-data ends the walk (OTEP). */
		if (off + 2 + l > len)
			break;
		/* The last entry of a repeated index wins (OTEP). */
		if (k == index) {
			*found = p + 2;
			hit = l;
		}
		off += 2 + l;
	}
	return hit;
}

/* Implementation of tld_otel_attr(); @size is a compile-time constant. */
static __always_inline int __tld_otel_attr(struct tld_object *obj, __u32 idx, __u32 index,
					   void *buf, __u32 size)
{
	struct __tld_at at = {};
	struct tld_otel_record *rec;
	__u64 len, found = 0, n;
	int hit;

	rec = __tld_otel_record(obj, idx, &at);
	if (!rec)
		return -ENODATA;
	/* The attrs-data bytes that lie in the slot (the walk bounds the page). */
	len = rec->attrs_data_size;
	if (len > at.slot - TLD_OTEL_HEADER)
		len = at.slot - TLD_OTEL_HEADER;
	hit = __tld_otel_find(at.page, at.pos + TLD_OTEL_HEADER, len, index, &found);
	if (hit < 0)
		return hit;
	n = (__u32)hit;
	if (n > size)
		n = size;
	/* Again, on the register the call takes: clang may bound a copy. */
	barrier_var(n);
	if (n > size || found > __PAGE_SIZE || n > __PAGE_SIZE - found)
		return -ENOENT;
	if (n && bpf_probe_read_kernel(buf, n, (void *)at.page + found))
		return -ENOENT;
	return hit;
}

/**
 * tld_otel_attr() - Copy one attribute of the task's OpenTelemetry record.
 *
 * @obj: a struct tld_object * filled by a successful tld_object_init()
 * @key: the struct tld_keys member caching the record's key (as for
 *	tld_otel_record())
 * @index: the attribute's key-index: its position in the process context's
 *	threadlocal.attribute_key_map (OTEP 4719), which user space resolves
 * @buf: where to copy the value (UTF-8, not NUL terminated)
 * @size: bytes of @buf, a compile-time constant (values are at most 255)
 *
 * Walks the valid record's attrs-data (at most TLD_OTEL_ATTRS_MAX bytes,
 * bounded by the key's slot and the data page; a bounded loop, Linux 6.4+
 * open-coded iterators as the key search uses, in the global function
 * __tld_otel_find()) and copies the first @size bytes of the value of the
 * last entry with key-index @index (bpf_probe_read_kernel()).
 *
 * Return: the value's full length (0 to 255; more than @size means @buf got
 * its first @size bytes); -ENODATA when tld_otel_record() would return NULL
 * (no valid record); -ENOENT when the valid record has no such attribute.
 *
 * Context: as tld_get_data().
 */
#define tld_otel_attr(obj, key, index, buf, size) \
	__tld_otel_attr((obj), __tld_key_index(key), (index), (buf), (size))

#endif /* TLD_BPF_H */
