/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The basic scenario written against the upstream-compatible API of tld.h
 * only (tld_key_t, TLD_DEFINE_KEY, tld_create_key, tld_key_is_err,
 * tld_key_err_or_zero, tld_get_data, tld_free) plus plain Linux system calls,
 * as a program ported from the upstream header would be. Driven by
 * tests/tests/c_abi.rs, which reads what BPF sees of each thread.
 *
 * Environment: TLD_TEST_MAP = path of a pinned tld_data_map.
 *
 * Protocol (one line each way, stdout flushed per line):
 *   out: "errors <EEXIST> <EINVAL> <ENAMETOOLONG> <E2BIG>"  (the -errno values seen)
 *   out: "keys <static off> <dyn int off> <dyn struct off> <61-byte-name off>"
 *   out: 32 x "tid <tid> <static> <dyn> <64 hex digits>"    (round 1)
 *   in:  one line
 *   out: 32 x "tid ..."                                     (round 2: even threads
 *        called tld_free() first and got a new, zeroed block)
 *   in:  one line
 *   out: 32 x "freed <tid>"                                 (every thread called tld_free())
 *   in:  EOF
 *   out: "done"; exit 0 after joining every thread.
 * Any failed check prints "FAIL: ..." to stderr and exits 1.
 */
#define _GNU_SOURCE
#define TLD_DYN_DATA_SIZE 128
#define TLD_FREE_DATA_ON_THREAD_EXIT
#include <tld.h>

#include "fail.h"

#include <linux/bpf.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NR_THREADS 32
#define STRUCT_SIZE 32

/* Phases the main thread announces; threads wait for the next one. */
enum { PHASE_ROUND1 = 1, PHASE_ROUND2, PHASE_FREE, PHASE_EXIT };

struct test_struct {
	uint8_t bytes[STRUCT_SIZE];
};

TLD_DEFINE_KEY(static_int_key, "test_static_int", sizeof(int));

static tld_key_t dyn_int_key;
static tld_key_t dyn_struct_key;
static tld_key_t max_name_key;
static int map_fd = -1;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t phase_changed = PTHREAD_COND_INITIALIZER;
static int phase = PHASE_ROUND1;

static int gettid_raw(void)
{
	return (int)syscall(SYS_gettid);
}

static int bpf_obj_get(const char *path)
{
	union bpf_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.pathname = (uint64_t)(uintptr_t)path;
	return (int)syscall(SYS_bpf, BPF_OBJ_GET, &attr, sizeof(attr));
}

/* The values thread @i writes in @round (1 or 2): distinct per thread and round. */
static int static_value(int i, int round)
{
	return 1000 * round + i + 1;
}

static int dyn_value(int i, int round)
{
	return -(100000 * round + 7 * i + 3);
}

static uint8_t struct_byte(int i, int round, int j)
{
	return (uint8_t)(64 * round + 5 * i + 3 * j + 1);
}

static void print_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* One whole line per call, even with 32 writers. */
static void print_line(const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&lock);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fflush(stdout);
	pthread_mutex_unlock(&lock);
}

/* Waits until the main thread announces a phase after @current; returns it. */
static int wait_phase(int current)
{
	int p;

	pthread_mutex_lock(&lock);
	while (phase == current)
		pthread_cond_wait(&phase_changed, &lock);
	p = phase;
	pthread_mutex_unlock(&lock);
	return p;
}

struct pointers {
	int *s;
	int *d;
	struct test_struct *st;
};

static struct pointers get_pointers(int i)
{
	struct pointers p;

	p.s = tld_get_data(map_fd, static_int_key);
	p.d = tld_get_data(map_fd, dyn_int_key);
	p.st = tld_get_data(map_fd, dyn_struct_key);
	if (!p.s || !p.d || !p.st)
		fail("thread %d: tld_get_data returned NULL (%p %p %p)", i, (void *)p.s,
		     (void *)p.d, (void *)p.st);
	if (((uintptr_t)p.s | (uintptr_t)p.d | (uintptr_t)p.st) % 8)
		fail("thread %d: values are not 8-byte aligned", i);
	if ((char *)p.d - (char *)p.s != dyn_int_key.off - static_int_key.off ||
	    (char *)p.st - (char *)p.s != dyn_struct_key.off - static_int_key.off)
		fail("thread %d: pointers are not key offsets apart", i);
	return p;
}

static void write_and_print(int i, int round, struct pointers p, int tid)
{
	char hex[2 * STRUCT_SIZE + 1];
	int j;

	*p.s = static_value(i, round);
	*p.d = dyn_value(i, round);
	for (j = 0; j < STRUCT_SIZE; j++)
		p.st->bytes[j] = struct_byte(i, round, j);
	/* Print what the memory holds now, which is what BPF must read. */
	for (j = 0; j < STRUCT_SIZE; j++)
		snprintf(hex + 2 * j, 3, "%02x", p.st->bytes[j]);
	print_line("tid %d %d %d %s\n", tid, *p.s, *p.d, hex);
}

static void *thread_main(void *arg)
{
	int i = (int)(intptr_t)arg;
	int tid = gettid_raw();
	struct pointers p, again;
	int j;

	/* Round 1: the first tld_get_data allocates and registers the block. */
	p = get_pointers(i);
	if (*p.s || *p.d)
		fail("thread %d: a new block is not zeroed", i);
	write_and_print(i, 1, p, tid);
	if (wait_phase(PHASE_ROUND1) == PHASE_EXIT)
		return NULL;

	/* Round 2: even threads release their block first and get a new one. */
	if (i % 2 == 0) {
		tld_free();
		again = get_pointers(i);
		if (*again.s || *again.d)
			fail("thread %d: the block after tld_free() is not zeroed", i);
		for (j = 0; j < STRUCT_SIZE; j++)
			if (again.st->bytes[j])
				fail("thread %d: the block after tld_free() is not zeroed", i);
		p = again;
	} else {
		again = get_pointers(i);
		if (again.s != p.s || again.d != p.d || again.st != p.st)
			fail("thread %d: tld_get_data moved without tld_free()", i);
		if (*p.s != static_value(i, 1) || *p.d != dyn_value(i, 1))
			fail("thread %d: round 1 values changed", i);
	}
	write_and_print(i, 2, p, tid);
	if (wait_phase(PHASE_ROUND2) == PHASE_EXIT)
		return NULL;

	/* Every thread releases its block: BPF must no longer see it. A second
	 * tld_free() has nothing to release. */
	tld_free();
	tld_free();
	print_line("freed %d\n", tid);
	wait_phase(PHASE_FREE);
	return NULL;
}

/* Upstream error paths, checked before any thread has data. */
static void check_errors(void)
{
	char long_name[63];
	char max_name[62];
	tld_key_t k;
	int eexist, einval, enametoolong, e2big;

	if (tld_key_is_err(static_int_key))
		fail("TLD_DEFINE_KEY(test_static_int): %d", tld_key_err_or_zero(static_int_key));
	if (tld_key_err_or_zero(static_int_key) != 0)
		fail("tld_key_err_or_zero of a valid key is %d", tld_key_err_or_zero(static_int_key));

	dyn_int_key = tld_create_key("test_dyn_int", sizeof(int));
	if (tld_key_is_err(dyn_int_key))
		fail("tld_create_key(test_dyn_int): %d", tld_key_err_or_zero(dyn_int_key));
	dyn_struct_key = tld_create_key("test_dyn_struct", sizeof(struct test_struct));
	if (tld_key_is_err(dyn_struct_key))
		fail("tld_create_key(test_dyn_struct): %d", tld_key_err_or_zero(dyn_struct_key));

	k = tld_create_key("test_dyn_int", sizeof(int));
	eexist = tld_key_err_or_zero(k);
	if (!tld_key_is_err(k) || eexist != -EEXIST)
		fail("creating test_dyn_int again: %d, want %d", eexist, -EEXIST);
	k = tld_create_key("test_dyn_int", 8);
	if (tld_key_err_or_zero(k) != -EEXIST)
		fail("creating test_dyn_int again with another size: %d", tld_key_err_or_zero(k));

	k = tld_create_key("test_size_zero", 0);
	einval = tld_key_err_or_zero(k);
	if (!tld_key_is_err(k) || einval != -EINVAL)
		fail("size 0: %d, want %d", einval, -EINVAL);

	memset(long_name, 'n', 62);
	long_name[62] = '\0';
	k = tld_create_key(long_name, sizeof(int));
	enametoolong = tld_key_err_or_zero(k);
	if (!tld_key_is_err(k) || enametoolong != -ENAMETOOLONG)
		fail("62-byte name: %d, want %d", enametoolong, -ENAMETOOLONG);

	/* 61 bytes is the longest name: it works (and takes 8 bytes of the 128). */
	memset(max_name, 'm', 61);
	max_name[61] = '\0';
	max_name_key = tld_create_key(max_name, 1);
	if (tld_key_is_err(max_name_key))
		fail("61-byte name: %d", tld_key_err_or_zero(max_name_key));

	/* 128 bytes of dynamic data, 8 + 32 + 8 used: 80 left, 81 does not fit. */
	k = tld_create_key("test_too_big", 81);
	e2big = tld_key_err_or_zero(k);
	if (!tld_key_is_err(k) || e2big != -E2BIG)
		fail("81 bytes with 80 left: %d, want %d", e2big, -E2BIG);

	/* An error key has no data, upstream returns NULL. */
	if (tld_get_data(map_fd, k) != NULL)
		fail("tld_get_data with an error key is not NULL");

	print_line("errors %d %d %d %d\n", eexist, einval, enametoolong, e2big);
	print_line("keys %d %d %d %d\n", static_int_key.off, dyn_int_key.off, dyn_struct_key.off,
		   max_name_key.off);
}

/* Reads one line of stdin; returns 0 at EOF. */
static int read_line(void)
{
	char buf[64];

	return fgets(buf, sizeof(buf), stdin) != NULL;
}

static void set_phase(int p)
{
	pthread_mutex_lock(&lock);
	phase = p;
	pthread_cond_broadcast(&phase_changed);
	pthread_mutex_unlock(&lock);
}

int main(void)
{
	pthread_t threads[NR_THREADS];
	const char *path = getenv("TLD_TEST_MAP");
	int i, err, early_eof = 0;

	if (!path)
		fail("TLD_TEST_MAP is not set");
	map_fd = bpf_obj_get(path);
	if (map_fd < 0)
		fail("BPF_OBJ_GET %s: %s", path, strerror(errno));

	check_errors();

	for (i = 0; i < NR_THREADS; i++) {
		err = pthread_create(&threads[i], NULL, thread_main, (void *)(intptr_t)i);
		if (err)
			fail("pthread_create: %s", strerror(err));
	}

	if (!read_line()) {
		early_eof = 1;
		set_phase(PHASE_EXIT);
	} else {
		set_phase(PHASE_ROUND2);
		if (!read_line()) {
			early_eof = 1;
			set_phase(PHASE_EXIT);
		} else {
			set_phase(PHASE_FREE);
			if (read_line())
				fail("expected EOF after the free round");
			set_phase(PHASE_EXIT);
		}
	}

	for (i = 0; i < NR_THREADS; i++) {
		err = pthread_join(threads[i], NULL);
		if (err)
			fail("pthread_join: %s", strerror(err));
	}
	close(map_fd);
	if (early_eof)
		fail("stdin closed before the last round");
	print_line("done\n");
	return 0;
}
