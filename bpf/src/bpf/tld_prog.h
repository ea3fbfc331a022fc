/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The preamble of the BPF programs in this directory: vmlinux.h, libbpf's
 * helpers, the page size the build passes (see tld.bpf.h on __PAGE_SIZE),
 * tld.bpf.h, and the license. Include it first, once per program.
 */
#ifndef TLD_PROG_H
#define TLD_PROG_H

#define BPF_NO_KFUNC_PROTOTYPES
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#ifdef TLD_BPF_PAGE_SIZE
#define __PAGE_SIZE TLD_BPF_PAGE_SIZE
#endif

#include "../../tld.bpf.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#endif /* TLD_PROG_H */
