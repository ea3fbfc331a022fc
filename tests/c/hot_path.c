/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The inline hot path of tld.h (tld_get_data() after a thread's first
 * call) across the events that must send it back to the library: tld_free(),
 * a map attached later, fork(). Driven by tests/tests/c_hot_path.rs, which
 * reads with BPF what each step published.
 *
 * Environment: TLD_TEST_MAP = a pinned tld_data_map (map A),
 *              TLD_TEST_MAP2 = another one (map B), attached in step 3.
 *
 * Protocol (one line each way):
 *   out: "first <tid> 101"      the first call registered with A; value 101
 *   in:  "go"
 *   out: "freed <tid> 102"      after tld_free(): a new, zeroed block; value 102
 *   in:  "go"
 *   out: "attached <tid> 103"   after tld_attach_path(B): the same pointer, now
 *                               registered with B too; value 103
 *   in:  "go"
 *   out: "child <tid> 104"      a fork child stored 104 through the pointer
 *                               cached before fork(), with no tld call
 *   in:  "go"                   (read by the child, which then checks that
 *                               tld_get_data() returns that same pointer)
 *   out: "done"; exit 0.
 * Any failed check prints "FAIL: ..." to stderr and exits 1.
 */
#define _GNU_SOURCE
#include <tld.h>

#include "fail.h"

#include <linux/bpf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

TLD_DEFINE_KEY(hot_key, "hot_value", sizeof(long));

static int bpf_obj_get(const char *path)
{
	union bpf_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.pathname = (uint64_t)(uintptr_t)path;
	return (int)syscall(SYS_bpf, BPF_OBJ_GET, &attr, sizeof(attr));
}

static void say(const char *what, long value)
{
	printf("%s %ld %ld\n", what, (long)syscall(SYS_gettid), value);
	fflush(stdout);
}

static void expect_go(void)
{
	char buf[16];

	if (!fgets(buf, sizeof(buf), stdin) || strcmp(buf, "go\n") != 0)
		fail("expected \"go\"");
}

static long *get(int map_fd)
{
	long *p = tld_get_data(map_fd, hot_key);

	if (!p) {
		char msg[256];

		tld_last_error(msg, sizeof(msg));
		fail("tld_get_data: %s (%s)", strerror(errno), msg);
	}
	return p;
}

int main(void)
{
	const char *path = getenv("TLD_TEST_MAP"), *path2 = getenv("TLD_TEST_MAP2");
	long *p, *q, *r;
	int map_fd, status, err;
	pid_t child;

	if (!path || !path2)
		fail("TLD_TEST_MAP and TLD_TEST_MAP2 must be set");
	if (tld_key_is_err(hot_key))
		fail("TLD_DEFINE_KEY: %d", tld_key_err_or_zero(hot_key));
	map_fd = bpf_obj_get(path);
	if (map_fd < 0)
		fail("BPF_OBJ_GET %s: %s", path, strerror(errno));

	/* 1. The first call registers; the second is the inline path. */
	p = get(map_fd);
	if (get(map_fd) != p)
		fail("a second call returned another pointer");
	*p = 101;
	say("first", *p);
	expect_go();

	/* 2. After tld_free(), the inline path must not serve the freed block. */
	tld_free();
	q = get(map_fd);
	if (*q != 0)
		fail("the block after tld_free() is not zeroed: %ld", *q);
	*q = 102;
	say("freed", *q);
	expect_go();

	/* 3. A map attached later: the next call registers with it, same pointer. */
	err = tld_attach_path(path2);
	if (err)
		fail("tld_attach_path(%s): %d", path2, err);
	r = get(map_fd);
	if (r != q)
		fail("attaching a map moved the thread's block");
	*r = 103;
	say("attached", *r);
	expect_go();

	/* 4. fork: the pointer cached before the fork keeps working in the
	 * child, for user space and for BPF, with no call. */
	fflush(stdout);
	child = fork();
	if (child < 0)
		fail("fork: %s", strerror(errno));
	if (child == 0) {
		*r = 104;
		say("child", *r);
		expect_go();
		if (get(map_fd) != r)
			fail("in the child, tld_get_data() moved the block");
		exit(0);
	}
	if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail("the fork child failed (status %#x)", status);
	if (*r != 103)
		fail("the child's store reached the parent: %ld", *r);
	printf("done\n");
	return 0;
}
