/* The C consumer of an installed tld, built with `pkg-config --cflags --libs tld`.
 * Usage: app MAJOR.MINOR.PATCH KEY VALUE
 * Checks tld.h's version macros against the version given (pkg-config
 * --modversion tld), publishes VALUE under KEY on a new thread, prints
 * "ready TID" and keeps the thread alive until stdin reaches EOF. */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tld.h>

static tld_key_t key;
static uint64_t value;

static void *worker(void *arg)
{
	(void)arg;
	uint64_t *p = tld_data(key); /* registers this thread with the attached map */
	if (!p) {
		char msg[256];
		tld_last_error(msg, sizeof(msg));
		fprintf(stderr, "app: tld_data: %s\n", msg);
		exit(1);
	}
	*p = value;
	printf("ready %d\n", gettid());
	fflush(stdout);
	char buf[64];
	while (fread(buf, 1, sizeof(buf), stdin) > 0)
		;
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: app MAJOR.MINOR.PATCH KEY VALUE\n");
		return 2;
	}
	char header_version[32];
	snprintf(header_version, sizeof(header_version), "%d.%d.%d", TLD_VERSION_MAJOR, TLD_VERSION_MINOR,
		 TLD_VERSION_PATCH);
	if (strcmp(header_version, argv[1]) != 0) {
		fprintf(stderr, "app: tld.h says version %s, pkg-config says %s\n", header_version, argv[1]);
		return 1;
	}
	value = strtoull(argv[3], NULL, 10);
	int err = tld_attach_path(NULL); /* $TLD_MAP_PATH */
	if (err) {
		char msg[256];
		tld_last_error(msg, sizeof(msg));
		fprintf(stderr, "app: tld_attach_path: %s\n", msg);
		return 1;
	}
	key = tld_key(argv[2], sizeof(uint64_t));
	if (tld_key_is_err(key)) {
		fprintf(stderr, "app: tld_key(%s): %s\n", argv[2], strerror(-tld_key_err_or_zero(key)));
		return 1;
	}
	pthread_t t;
	if (pthread_create(&t, NULL, worker, NULL))
		return 1;
	pthread_join(t, NULL);
	return 0;
}
