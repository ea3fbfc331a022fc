/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * A C process publishing OpenTelemetry thread contexts through tld_otel.h,
 * for the readers of tests/kernel.rs. The same line protocol as
 * src/bin/otel_publisher.rs, with byte 0 of every trace id 0xc0. Built by
 * the tests against libtld.a and against libtld.so.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <tld_otel.h>

TLD_OTEL_DEFINE_RECORD_KEY();

#define THREADS 4
#define LANG 0xc0

static const char *const commands[] = { "nested", "unnest", "clear", "exit" };
static atomic_int phase;
static atomic_int done;

static void die(const char *what, int err)
{
	char msg[256];

	tld_last_error(msg, sizeof(msg));
	fprintf(stderr, "%s: %d: %s\n", what, err, msg);
	exit(1);
}

static void publish(long i, int nested)
{
	tld_otel_span_t s;
	char route[32], worker[16];
	tld_otel_attr_t attrs[2];
	int err;

	memset(s.trace_id, (int)i + 1, sizeof(s.trace_id));
	s.trace_id[0] = LANG;
	memset(s.span_id, (nested ? 0x20 : 0x10) + (int)i, sizeof(s.span_id));
	s.trace_flags = 1;
	snprintf(route, sizeof(route), nested ? "/nested/%ld" : "/route/%ld", i);
	snprintf(worker, sizeof(worker), "w%ld", i);
	attrs[0] = (tld_otel_attr_t){ "http.route", route };
	attrs[1] = nested ? (tld_otel_attr_t){ "db.system", "sqlite" } : (tld_otel_attr_t){ "worker", worker };
	err = tld_otel_set(&s, attrs, 2);
	if (err)
		die("tld_otel_set", err);
}

static void *worker(void *arg)
{
	long i = (long)arg;
	int seen = 0, err = 0;
	tld_otel_saved_t saved;

	publish(i, 0);
	printf("thread %ld %ld\n", i, (long)syscall(SYS_gettid));
	fflush(stdout);
	atomic_fetch_add(&done, 1);
	for (;;) {
		int p = atomic_load(&phase);
		const char *cmd;

		if (p == seen) {
			usleep(1000);
			continue;
		}
		seen = p;
		cmd = commands[p - 1];
		if (!strcmp(cmd, "nested")) {
			err = tld_otel_save(&saved);
			publish(i, 1);
		} else if (!strcmp(cmd, "unnest")) {
			err = tld_otel_restore(&saved);
		} else if (!strcmp(cmd, "clear")) {
			err = tld_otel_clear();
		} else {
			atomic_fetch_add(&done, 1);
			return NULL;
		}
		if (err)
			die(cmd, err);
		atomic_fetch_add(&done, 1);
	}
}

static void wait_for(int n)
{
	while (atomic_load(&done) < n)
		usleep(1000);
}

int main(void)
{
	tld_otel_resource_attr_t res[] = {
		{ .key = "service.name", .kind = TLD_OTEL_STRING, .string_value = "otel-publisher-c" },
		{ .key = "publisher.threads", .kind = TLD_OTEL_INT, .int_value = THREADS },
	};
	pthread_t threads[THREADS];
	char line[64];
	int err;

	err = tld_attach_path(NULL);
	if (err)
		die("tld_attach_path", err);
	err = tld_otel_publish_process_context(res, 2);
	if (err)
		die("tld_otel_publish_process_context", err);
	for (long i = 0; i < THREADS; i++)
		pthread_create(&threads[i], NULL, worker, (void *)i);
	wait_for(THREADS);
	printf("ready\n");
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin)) {
		int before = atomic_load(&done), p;

		line[strcspn(line, "\n")] = 0;
		for (p = 0; p < 4 && strcmp(commands[p], line); p++)
			;
		if (p == 4) {
			fprintf(stderr, "unknown command %s\n", line);
			return 1;
		}
		atomic_store(&phase, p + 1);
		wait_for(before + THREADS);
		printf("ok %s\n", commands[p]);
		fflush(stdout);
		if (p == 3)
			break;
	}
	if (feof(stdin))
		return 1; /* the reader went away */
	for (int i = 0; i < THREADS; i++)
		pthread_join(threads[i], NULL);
	return 0;
}
