/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The baseline of the cost measurement: OTEP 4947's pointer-swap writer in
 * plain C, a __thread pointer pointing at a prepared record on span
 * activation and NULL on deactivation, with the compiler fences the OTEP
 * asks for. Not inlined into the caller, as a language binding calling a
 * native library would not be.
 */
#include <stdatomic.h>
#include <stddef.h>

static __thread void *volatile baseline_ctx;

__attribute__((noinline)) void tls_baseline_activate(void *record)
{
	atomic_signal_fence(memory_order_seq_cst);
	baseline_ctx = record;
}

__attribute__((noinline)) void tls_baseline_deactivate(void)
{
	baseline_ctx = NULL;
	atomic_signal_fence(memory_order_seq_cst);
}
