/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * C ABI calls from pthread-key destructors that run after the library's own
 * thread-exit work (DESIGN §5.7): errors, the last-error message, data
 * access, tld_free(). The destructor re-arms its key so that it also runs in
 * the later destructor rounds, after tld's. Nothing may abort. Driven by
 * tests/tests/c_abi.rs: prints "ok" and exits 0.
 */
#define _GNU_SOURCE
#include <tld.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 8
#define ROUNDS 3

static pthread_key_t late_key;
static tld_key_t value_key;
static int failures;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void late(void *arg)
{
	intptr_t round = (intptr_t)arg;
	char msg[256];
	tld_key_t bad = tld_create_key("", 4);
	int *p;

	if (bad.off != -EINVAL || tld_last_error(msg, sizeof(msg)) == 0 || !strstr(msg, "empty")) {
		pthread_mutex_lock(&lock);
		failures++;
		pthread_mutex_unlock(&lock);
	}
	/* Data access after tld released the block: a new block, then freed. */
	p = tld_data(value_key);
	if (p)
		*p = 7;
	tld_free();
	if (round < ROUNDS)
		pthread_setspecific(late_key, (void *)(round + 1));
}

static void *thread_main(void *arg)
{
	int *p = tld_data(value_key);

	(void)arg;
	if (p)
		*p = 1;
	pthread_setspecific(late_key, (void *)1);
	return NULL;
}

int main(void)
{
	pthread_t t[THREADS];
	int i;

	if (pthread_key_create(&late_key, late))
		return 1;
	value_key = tld_create_key("late_value", sizeof(int));
	if (tld_key_is_err(value_key))
		return 1;
	for (i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, thread_main, NULL);
	for (i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	if (failures) {
		fprintf(stderr, "FAIL: %d late calls did not report their error\n", failures);
		return 1;
	}
	printf("ok live=%d\n", tld_live_blocks());
	return 0;
}
