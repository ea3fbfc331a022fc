/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * fail() for the C test programs: prints "FAIL: " and the message on
 * stderr and exits with status 1, which the Rust harness reports.
 */
#ifndef TLD_TEST_FAIL_H
#define TLD_TEST_FAIL_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn, unused));

static void fail(const char *fmt, ...)
{
	va_list ap;

	fputs("FAIL: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
	exit(1);
}

#endif
