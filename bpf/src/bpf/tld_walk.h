/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * tld_walk.h: the one walker of a thread's raw task local data, shared by
 * the programs that report it with no key name compiled in (dump_task in
 * tld_test.bpf.c, the tld_inspect task iterator). Include it after
 * tld.bpf.h; it reads the layout tld.bpf.h was built for (TLD_MAP_VALUE_16:
 * `start` from the data page, a u8 cnt).
 *
 * It reads memory that an untrusted process controls, so every count, size
 * and offset read is bounded before use: cnt is clamped to the slots a page
 * holds (and to what the caller can take), a slot of size 0 (claimed, still
 * being written) ends the walk, the running key offset saturates at
 * TLD_WALK_OFFSET_CAP, and a value is only read when it lies entirely in the
 * data page. Nothing outside the two pinned pages is ever read.
 *
 * Usage, with @max a compile-time constant (the most slots the caller can
 * take; the verifier needs it constant to bound the slot index):
 *
 *	struct tld_walk w;
 *	struct tld_walk_key key;
 *	int i, ret;
 *
 *	if (tld_walk_begin(&w, task, v, max))
 *		return;			// no metadata page, or w.stale
 *	bpf_for(i, 0, w.nr) {
 *		ret = tld_walk_next(&w, i, max, &key);
 *		if (ret <= 0)
 *			break;		// 0: slot i is unwritten
 *		... key.name, key.size, key.offset, key.in_page ...
 *		len = tld_walk_copy(buf, sizeof(buf), &w, &key);
 *	}
 */
#ifndef TLD_WALK_H
#define TLD_WALK_H

/* Key offsets saturate here (past any page). */
#define TLD_WALK_OFFSET_CAP 0x10000

/* A walk of one thread's metadata page, from its tld_data_map value. */
struct tld_walk {
	struct tld_meta_u *meta;	/* the metadata page (set once begun) */
	struct tld_data_u *page;	/* the data page, or NULL */
	/*
	 * 64-bit on purpose, like the offsets of __tld_fetch_key() in
	 * tld.bpf.h: with 32 bits clang bounds-checks a zero-extended copy,
	 * the verifier never sees the offset itself bounded, and the loop's
	 * states stop converging.
	 */
	__u64 off;			/* key offset of the next slot, saturating */
	__u32 start;			/* `start` (map value, or data page), clamped to the page */
	__u32 cnt;			/* metadata cnt, as this layout reads it */
	__u32 meta_size;		/* metadata size, raw */
	__u32 nr;			/* slots to walk: cnt, clamped */
	__u8 stale;			/* the entry is from a replaced image (§5.5) */
};

/* One published slot, as tld_walk_next() found it. */
struct tld_walk_key {
	const char *name;		/* the slot's raw name, TLD_NAME_LEN bytes */
	__u64 pos;			/* start + offset: the value's offset in the page */
	__u32 offset;			/* the key, saturating at TLD_WALK_OFFSET_CAP */
	__u32 size;			/* the slot's size, never 0 */
	__u8 in_page;			/* data page set and pos + size <= page size */
};

/*
 * tld_walk_begin() - Start a walk of the metadata of @task's map value @v.
 * @max: the most slots the caller takes, a compile-time constant
 *
 * Sets every member of @w (start and page even without metadata). A
 * `start` read from a 16-byte map's data page that lies past the page is
 * reported as the page size: nothing is in the page then.
 *
 * Return: 0, or -1 when @v has no metadata page or belongs to an image
 * @task replaced with execve (w->stale): nothing to walk.
 */
static __always_inline int tld_walk_begin(struct tld_walk *w, struct task_struct *task,
					  struct tld_map_value *v, __u32 max)
{
	__u64 start = 0, stamp;
	__u32 n;

	w->page = v->data;
	w->meta = v->meta;
	w->off = 0;
	w->cnt = 0;
	w->meta_size = 0;
	w->nr = 0;
	w->stale = 0;
	if (w->page)
		start = __tld_data_start(v, w->page);
#ifndef TLD_MAP_VALUE_16
	else
		start = v->start;
#endif
	w->start = start < __PAGE_SIZE ? start : __PAGE_SIZE;
	if (!w->meta)
		return -1;
	if (__tld_stamp(task, w->meta, &stamp)) {
		w->stale = 1;
		return -1;
	}

	n = __tld_meta_cnt(w->meta);
	w->cnt = n;
	w->meta_size = __tld_read_once(w->meta->size);
	if (n > TLD_MAX_DATA_CNT)
		n = TLD_MAX_DATA_CNT;
	if (n > max)
		n = max;
	w->nr = n;
	return 0;
}

/*
 * tld_walk_next() - Read slot @i, the next one, into @k.
 * @w: a walk that tld_walk_begin() began (returned 0 for)
 * @i: the bpf_for() index, from 0 to w->nr, in order
 * @max: as passed to tld_walk_begin()
 *
 * Return: 1 with @k filled; 0 when slot @i is unwritten (size 0: the walk
 * ends there); -1 when @i is out of bounds (never, with i < w->nr: the
 * check is for the verifier).
 */
static __always_inline int tld_walk_next(struct tld_walk *w, int i, __u32 max,
					 struct tld_walk_key *k)
{
	__u32 size;

	if (i >= TLD_MAX_DATA_CNT || i >= max)
		return -1;
	size = __tld_read_once(w->meta->metadata[i].size);
	if (!size)
		return 0;

	/* The name is read through k->name: ordered after the size. */
	k->name = __tld_slot_name(w->meta, i, size);
	k->size = size;
	k->offset = w->off;
	k->pos = w->start + w->off;
	/* off <= 0x10000, start <= 0xffff, size <= 0xffff: no overflow. */
	k->in_page = w->page && k->pos + size <= __PAGE_SIZE;

	/*
	 * Saturate: past the page no offset is valid anyway, and a bounded
	 * offset lets the verifier see the loop converge.
	 */
	w->off += __tld_round_up8(size);
	if (w->off > TLD_WALK_OFFSET_CAP)
		w->off = TLD_WALK_OFFSET_CAP;
	return 1;
}

/*
 * tld_walk_copy() - Copy the start of the value of @k into @dst.
 * @max: the size of @dst, a compile-time constant
 *
 * Return: the bytes copied, min(k->size, max); 0, copying nothing, when the
 * value does not lie entirely in the data page.
 */
static __always_inline __u32 tld_walk_copy(__u8 *dst, __u32 max, const struct tld_walk *w,
					   const struct tld_walk_key *k)
{
	struct tld_data_u *page = w->page;
	__u64 pos = k->pos, p;
	__u32 len = k->size;
	int j;

	if (!page || pos + len > __PAGE_SIZE)
		return 0;
	if (len > max)
		len = max;
	bpf_for(j, 0, len) {
		if (j >= max)
			break;
		/*
		 * The range is checked above; this check is for the
		 * verifier, and barrier_var() keeps the compiler from
		 * computing the address from page + pos (unbounded) instead.
		 */
		p = pos + j;
		barrier_var(p);
		if (p >= __PAGE_SIZE)
			break;
		dst[j] = ((__u8 *)page)[p];
	}
	return len;
}

#endif /* TLD_WALK_H */
