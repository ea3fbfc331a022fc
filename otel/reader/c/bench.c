/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Cost of publishing on span activation from C (BENCHMARKS.md): set + clear
 * through tld_otel.h against OTEP 4947's pointer swap in plain C. Prints one
 * line per row: name, then the median of 11 runs in ns per set + clear.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tld_otel.h>

TLD_OTEL_DEFINE_RECORD_KEY();

#define RUNS 11

static __thread void *volatile otel_ctx; /* the baseline's TLS pointer */
static unsigned char baseline_record[128];

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

#define MEASURE(name, iters, body)                                        \
	do {                                                              \
		double runs[RUNS];                                        \
		for (int r = 0; r < RUNS; r++) {                          \
			double t0 = now_ns();                             \
			for (long n = 0; n < (iters); n++) {              \
				body;                                     \
			}                                                 \
			runs[r] = (now_ns() - t0) / (iters);              \
		}                                                         \
		qsort(runs, RUNS, sizeof(double), cmp);                   \
		printf("%s %.1f\n", name, runs[RUNS / 2]);                \
	} while (0)

int main(int argc, char **argv)
{
	long iters = argc > 1 ? atol(argv[1]) : 2000000;
	tld_otel_span_t span = { .trace_flags = 1 };
	tld_otel_attr_t by_name[] = { { "http.route", "/users/:id" } };
	tld_otel_indexed_attr_t by_index[1];
	int key;

	memset(span.trace_id, 0x4b, 16);
	memset(span.span_id, 0x51, 8);
	key = tld_otel_attr_key("http.route");
	if (key < 0 || tld_otel_set(&span, NULL, 0))
		return 1;
	by_index[0] = (tld_otel_indexed_attr_t){ (uint8_t)key, "/users/:id" };

	MEASURE("c_tls_pointer_swap", iters, {
		atomic_signal_fence(memory_order_seq_cst);
		otel_ctx = baseline_record;
		otel_ctx = NULL;
		atomic_signal_fence(memory_order_seq_cst);
	});
	MEASURE("c_tld_otel_set_no_attrs+clear", iters, {
		tld_otel_set_indexed(&span, NULL, 0);
		tld_otel_clear();
	});
	MEASURE("c_tld_otel_set_indexed+clear", iters, {
		tld_otel_set_indexed(&span, by_index, 1);
		tld_otel_clear();
	});
	MEASURE("c_tld_otel_set_by_name+clear", iters, {
		tld_otel_set(&span, by_name, 1);
		tld_otel_clear();
	});
	return 0;
}
