/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * What a program written for the upstream user-space header relies on,
 * beyond the basic scenario (upstream_basic.c): the option macros it may
 * define, the macros it may use, a constructor of its own seeing a
 * TLD_DEFINE_KEY key, the error codes of keys that never fit, and racing
 * creations (the shape of the upstream selftest's race: 60 threads, shared
 * and private names, with a reserve of a page minus the block header).
 * Driven by tests/tests/c_abi.rs. Prints "ok" and exits 0, or "FAIL: ..."
 * on stderr and exits 1.
 */
#define _GNU_SOURCE
#define TLD_FREE_DATA_ON_THREAD_EXIT
#define TLD_DATA_USE_ALIGNED_ALLOC
#define TLD_DONT_ROUND_UP_DATA_SIZE
#define TLD_DYN_DATA_SIZE (getpagesize() - 8)
#include <tld.h>

#include "fail.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RACERS (TLD_MAX_DATA_CNT - 3)

TLD_DEFINE_KEY(value0_key, "value0", sizeof(int));

static int seen_by_constructor = -1000;

/* A constructor of default priority: runs after TLD_DEFINE_KEY's. */
__attribute__((constructor)) static void program_constructor(void)
{
	seen_by_constructor = value0_key.off;
}

static tld_key_t keys[1024];

static void *racer(void *arg)
{
	int id = (int)(intptr_t)arg;
	char name[32];
	tld_key_t k;

	k = tld_create_key("value_not_exist", TLD_PAGE_SIZE + 1);
	if (tld_key_err_or_zero(k) != -E2BIG)
		return (void *)1;
	k = tld_create_key("value1", sizeof(int));
	if (!tld_key_is_err(k))
		keys[1] = k;
	else if (k.off != -EEXIST)
		return (void *)2;
	k = tld_create_key("value2", 32);
	if (!tld_key_is_err(k))
		keys[2] = k;
	else if (k.off != -EEXIST)
		return (void *)3;
	snprintf(name, sizeof(name), "thread_%d", id);
	keys[id] = tld_create_key(name, sizeof(int));
	return tld_key_is_err(keys[id]) ? (void *)4 : NULL;
}

int main(void)
{
	pthread_t threads[RACERS];
	void *ret;
	int i, *p;

	if (TLD_PAGE_SIZE != getpagesize() || TLD_MAX_DATA_CNT != getpagesize() / 64 - 1 || TLD_NAME_LEN != 62)
		fail("TLD_PAGE_SIZE %d, TLD_MAX_DATA_CNT %d, TLD_NAME_LEN %d", (int)TLD_PAGE_SIZE,
		     (int)TLD_MAX_DATA_CNT, TLD_NAME_LEN);
	if (tld_key_is_err(value0_key))
		fail("TLD_DEFINE_KEY: %d", value0_key.off);
	if (seen_by_constructor != value0_key.off)
		fail("the program's constructor ran before TLD_DEFINE_KEY's (saw %d)", seen_by_constructor);
	if (tld_key_err_or_zero(tld_create_key("too_big", 70000)) != -E2BIG)
		fail("70000 bytes: not -E2BIG");
	if (tld_key_err_or_zero(tld_create_key("zero", 0)) != -EINVAL)
		fail("0 bytes: not -EINVAL");

	keys[0] = value0_key;
	for (i = 0; i < RACERS; i++)
		if (pthread_create(&threads[i], NULL, racer, (void *)(intptr_t)(i + 3)))
			fail("pthread_create");
	for (i = 0; i < RACERS; i++) {
		pthread_join(threads[i], &ret);
		if (ret)
			fail("racer %d: step %ld failed", i + 3, (long)(intptr_t)ret);
	}
	if (tld_key_err_or_zero(tld_create_key("one_too_many", 4)) != -ENOSPC)
		fail("every slot is taken: not -ENOSPC");
	/* Unique values in every key: no two keys overlap. */
	for (i = 0; i < (int)TLD_MAX_DATA_CNT; i++) {
		p = tld_data(keys[i]);
		if (!p)
			fail("tld_data(key %d): %s", i, strerror(errno));
		*p = i;
	}
	for (i = 0; i < (int)TLD_MAX_DATA_CNT; i++)
		if (*(int *)tld_data(keys[i]) != i)
			fail("key %d overlaps another", i);
	printf("ok\n");
	return 0;
}
