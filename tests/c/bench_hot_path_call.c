/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* The exported tld_get_data(), for bench_hot_path.c: what a program built
 * against the previous header, or an FFI using dlsym, calls. */
#define TLD_NO_INLINE
#include <tld.h>

void *bench_call_get_data(int map_fd, tld_key_t key);

void *bench_call_get_data(int map_fd, tld_key_t key)
{
	return tld_get_data(map_fd, key);
}
