/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Benchmark of tld.h's hot path: tld_get_data(map_fd, key) + a store on an
 * initialized thread, against a plain __thread pointer-plus-offset store
 * compiled the same way, and against the exported function (what programs
 * built against the previous header call). A plain timed loop; each loop
 * iteration ends with a compiler barrier so no variant is hoisted out of it.
 *
 * Usage: bench_hot_path [iterations] [repeats]; TLD_TEST_MAP = a pinned
 * tld_data_map. Prints one line per variant: the median ns per iteration.
 * Build: see `make c-bench`.
 */
#define _GNU_SOURCE
#include <tld.h>

#include <linux/bpf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* bench_hot_path_call.c, built with TLD_NO_INLINE: the exported function. */
void *bench_call_get_data(int map_fd, tld_key_t key);

TLD_DEFINE_KEY(bench_key, "bench_value", sizeof(long));

static __thread unsigned char *plain_base;
static volatile int plain_off; /* the offset comes from memory, as a key does */

#define barrier() __asm__ __volatile__("" ::: "memory")

static double now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e9 + t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, n, sizeof(*v), cmp);
	return v[n / 2];
}

int main(int argc, char **argv)
{
	long iters = argc > 1 ? atol(argv[1]) : 100000000L;
	int repeats = argc > 2 ? atoi(argv[2]) : 7;
	const char *path = getenv("TLD_TEST_MAP");
	double t_plain[64], t_inline[64], t_call[64];
	union bpf_attr attr;
	int map_fd, r, off = bench_key.off;
	long i;

	if (!path || repeats > 64 || repeats < 1)
		return fprintf(stderr, "TLD_TEST_MAP must name a pinned tld_data_map\n"), 1;
	memset(&attr, 0, sizeof(attr));
	attr.pathname = (uint64_t)(uintptr_t)path;
	map_fd = (int)syscall(SYS_bpf, BPF_OBJ_GET, &attr, sizeof(attr));
	if (map_fd < 0 || !tld_get_data(map_fd, bench_key))
		return fprintf(stderr, "tld_get_data: %s\n", strerror(errno)), 1;
	plain_base = malloc(4096);
	plain_off = off;

	for (r = 0; r < repeats; r++) {
		double t0 = now_ns();

		for (i = 0; i < iters; i++) {
			*(long *)(plain_base + plain_off) = i;
			barrier();
		}
		t_plain[r] = (now_ns() - t0) / iters;

		t0 = now_ns();
		for (i = 0; i < iters; i++) {
			*(long *)tld_get_data(map_fd, bench_key) = i;
			barrier();
		}
		t_inline[r] = (now_ns() - t0) / iters;

		t0 = now_ns();
		for (i = 0; i < iters; i++) {
			*(long *)bench_call_get_data(map_fd, bench_key) = i;
			barrier();
		}
		t_call[r] = (now_ns() - t0) / iters;
	}
	double plain = median(t_plain, repeats), inl = median(t_inline, repeats), call = median(t_call, repeats);

	printf("__thread pointer + offset store      %.3f ns\n", plain);
	printf("tld_get_data (inline) + store        %.3f ns  (%.2fx)\n", inl, inl / plain);
	printf("tld_get_data (exported call) + store %.3f ns  (%.2fx)\n", call, call / plain);
	return 0;
}
