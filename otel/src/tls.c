/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The OTEP 4947 thread-local variable: a pointer to the calling thread's
 * Thread-Local Context Record, or NULL. Readers find it by name in .dynsym
 * (it needs default visibility, and the link must export it: DESIGN §10.5).
 *
 * Written in C because rustc can neither export a thread-local symbol nor
 * pick the TLSDESC dialect the OTEP asks for (build.rs passes
 * -mtls-dialect=gnu2 on x86_64).
 */
#include <stddef.h>

__attribute__((visibility("default"))) __thread void *otel_thread_ctx_v1 = NULL;

/*
 * The address of the calling thread's otel_thread_ctx_v1 in the module this
 * copy is linked into. Hidden, so every copy of the crate calls its own.
 */
__attribute__((visibility("hidden"))) void **tld_otel_tls_slot(void)
{
	return &otel_thread_ctx_v1;
}
