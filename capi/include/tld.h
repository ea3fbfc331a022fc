/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/**
 * @file tld.h
 * @brief Task local data: per-thread values that BPF programs read in place.
 *
 * Link with `-ltld` (libtld.a or libtld.so, built by `cargo build -p task-local-data-capi`).
 *
 * Source-compatible with the upstream user-space task local data API of the
 * Linux BPF selftests: a program written for it (`tld_key_t`, `TLD_DEFINE_KEY`,
 * `tld_create_key`, `tld_key_is_err`, `tld_key_err_or_zero`, `tld_get_data`,
 * `tld_free`, and the options `TLD_DYN_DATA_SIZE`, `TLD_FREE_DATA_ON_THREAD_EXIT`,
 * `TLD_NAME_LEN` at its default) builds unchanged against this header.
 *
 * USAGE
 *
 *     TLD_DEFINE_KEY(prio, "priority", sizeof(int));   // static key, before main
 *
 *     int main(void) {
 *         tld_key_t in_cs = tld_create_key("in_critical_section", 1);
 *         int *p = tld_get_data(map_fd, prio);          // this thread's int
 *         if (p) *p = 3;                                 // BPF sees 3 for this thread
 *     }
 *
 * ERRORS are `-errno`, in `tld_key_t.off` or as an `int` return:
 *   -EINVAL        empty name, name containing NUL (impossible in C), size 0,
 *                  a file that is not a pinned map, a map of the wrong type or layout
 *   -ENAMETOOLONG  name longer than 61 bytes
 *   -EEXIST        name taken (tld_create_key), or taken with another size (tld_key)
 *   -E2BIG         the key does not fit what is left of the per-thread data area,
 *                  or can never fit one (more than page size - 8 bytes, as upstream)
 *   -ENOSPC        all metadata slots are taken (page size / 64 - 1 of them)
 *   -ENOENT        no such key (tld_find_key) or nothing pinned at the path
 *   -EPERM/-EACCES missing privilege (root, CAP_BPF, or write access to the pin)
 *   -EBUSY         the dynamic reserve can no longer change
 *   -EOPNOTSUPP    a thread's small block cannot be registered with a 16-byte map
 *   -EOVERFLOW     a 16-byte map attached while more than 255 keys exist
 *   -EDEADLK       called from a signal handler that interrupted a tld call
 *                  on the same thread
 *   -EPROTO        another copy of tld in this process runs an incompatible runtime
 * tld_last_error() returns a message naming the key or map and the cause.
 *
 * THREADS: every function may be called from any thread, at any time,
 * including from thread-exit destructors. Pointers returned by
 * tld_get_data()/tld_data() belong to the calling thread: valid on that thread
 * until it exits or calls tld_free(); never share them with other threads.
 * Once a thread is set up, tld_get_data()/tld_data() are async-signal-safe;
 * other calls from a signal handler that interrupted a tld call on the same
 * thread fail with -EDEADLK rather than deadlock.
 *
 * ONE RUNTIME PER PROCESS: every copy of the library in a process (this one,
 * a Python extension, a Go archive...) shares one metadata page and one block
 * per thread, so a key created through one is seen by all and by BPF.
 *
 * SECURITY: whoever can write the pinned map can set any task's values. BPF
 * programs must treat these values as untrusted hints.
 */
#ifndef TLD_H
#define TLD_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#if defined(TLD_NAME_LEN) && TLD_NAME_LEN != 62
#error "tld.h supports TLD_NAME_LEN only at its default, 62"
#endif
#ifndef TLD_NAME_LEN
/** Bytes of a name field including the NUL: names are at most 61 bytes. */
#define TLD_NAME_LEN 62
#endif

#ifndef TLD_PAGE_SIZE
/** The page size, read at run time (as upstream). */
#define TLD_PAGE_SIZE getpagesize()
#endif

#ifndef TLD_MAX_DATA_CNT
/** Number of metadata slots, hence of keys: page size / 64 - 1 (63 on 4 KiB pages). */
#define TLD_MAX_DATA_CNT (TLD_PAGE_SIZE / 64 - 1)
#endif

/*
 * Upstream options accepted for source compatibility, with no effect here:
 * TLD_FREE_DATA_ON_THREAD_EXIT (blocks are always released at thread exit),
 * TLD_DATA_USE_ALIGNED_ALLOC and TLD_DONT_ROUND_UP_DATA_SIZE (the runtime
 * allocates blocks itself). TLD_DYN_DATA_SIZE is honoured (below).
 */

#ifdef __cplusplus
extern "C" {
#endif

/**
 * A key: the offset of its value in every thread's data area (>= 0), or a
 * negative errno. Plain data: copy it freely, share it between threads.
 */
typedef struct {
	int16_t off;
} tld_key_t;

/** What tld_find_key_info() reports about a key. */
typedef struct {
	int16_t off;   /**< offset in the data area */
	uint16_t size; /**< value size in bytes */
	uint16_t slot; /**< metadata slot index */
} tld_key_info_t;

/**
 * tld_create_key() - Create a key at run time (strict).
 * @name: 1 to 61 bytes, NUL-terminated. Copied; the caller keeps ownership.
 * @size: value size in bytes, at least 1.
 *
 * Lock-free; any thread. The key takes space from the dynamic reserve
 * (TLD_DYN_DATA_SIZE, 64 bytes by default) once any thread has data.
 *
 * Return: the key, or a key whose off is -EEXIST (name taken), -E2BIG (does
 * not fit, now or ever: more than page size - 8 bytes), -ENOSPC (no slot
 * left), -EINVAL (size 0 or empty name), -ENAMETOOLONG, -EDEADLK. A failed
 * call changes nothing already published.
 */
tld_key_t tld_create_key(const char *name, size_t size);

/**
 * tld_key() - Get or create: the existing key of that name if its size is
 * @size, else a new key. How two libraries or languages share one value.
 *
 * Return: as tld_create_key(), but an existing name with the same size is
 * success; with another size, -EEXIST.
 */
tld_key_t tld_key(const char *name, size_t size);

/**
 * tld_create_static_key() - Create a key that grows every thread block by
 * @size while no block exists yet (what TLD_DEFINE_KEY calls before main).
 * After the first block exists it behaves like tld_create_key().
 *
 * Return: as tld_create_key().
 */
tld_key_t tld_create_static_key(const char *name, size_t size);

/**
 * tld_find_key() - Look a key up by name.
 * Return: the key, or off = -ENOENT if no such key, -EINVAL/-ENAMETOOLONG
 * for a bad name.
 */
tld_key_t tld_find_key(const char *name);

/**
 * tld_find_key_info() - Look a key up and report offset, size and slot.
 * @info: written only on success; may be NULL.
 * Return: 0, or -ENOENT, -EINVAL, -ENAMETOOLONG.
 */
int tld_find_key_info(const char *name, tld_key_info_t *info);

/** tld_key_is_err() - Whether @key carries an error. */
static inline bool tld_key_is_err(tld_key_t key)
{
	return key.off < 0;
}

/** tld_key_err_or_zero() - The key's -errno, or 0 for a valid key. */
static inline int tld_key_err_or_zero(tld_key_t key)
{
	return key.off < 0 ? key.off : 0;
}

/**
 * TLD_DEFINE_KEY() - Define a global key created by a constructor before
 * main, with exactly @size bytes in every thread block.
 * @key: the name of the tld_key_t variable to define.
 * @name: the key name (string literal).
 * @size: value size in bytes.
 *
 * The constructor has priority 102: it runs after TLD_DYN_DATA_SIZE's (101)
 * and before the program's own constructors of default priority, which
 * therefore already see the key.
 * On failure the variable holds the -errno (check with tld_key_is_err()).
 */
#define TLD_DEFINE_KEY(key, name, size)                                   \
	tld_key_t key;                                                    \
	__attribute__((constructor(102))) static void __tld_define_key_##key(void) \
	{                                                                 \
		key = tld_create_static_key(name, size);                  \
	}                                                                 \
	/* takes the caller's `;`, so `TLD_DEFINE_KEY(...);` is valid ISO C */ \
	extern tld_key_t key

/**
 * struct tld__thread_cache - Internal: the calling thread's data pointer,
 * cached by the inline tld_get_data()/tld_data() of one translation unit,
 * filled by the library and registered with the runtime, which stores NULL
 * into it when the pointer stops being the one to use (the thread's block
 * released, a map attached that the thread must register with; DESIGN §4).
 */
struct tld__thread_cache {
	unsigned char *data;
};

/**
 * Internal: the slow paths of tld_get_data() and tld_data(). They fill
 * @cache and store the data size, which bounds valid keys, in @limit.
 */
void *tld__get_data_slow(int map_fd, tld_key_t key, struct tld__thread_cache *cache, uint32_t *limit);
void *tld__data_slow(tld_key_t key, struct tld__thread_cache *cache, uint32_t *limit);

#ifdef TLD_NO_INLINE
void *tld_get_data(int map_fd, tld_key_t key);
void *tld_data(tld_key_t key);
#else
/* One cache per translation unit and thread; no destructor. */
static __thread struct tld__thread_cache tld__tu_cache __attribute__((unused));
/* The data size, the same for every thread once a block exists (0 before). */
static uint32_t tld__tu_limit __attribute__((unused));

/* The thread's data pointer if the cache serves @key, else NULL. The
 * pointer is read atomically (the runtime may clear it from another
 * thread); one unsigned compare covers a negative key and one past the
 * data size. */
static inline unsigned char *tld__cached(tld_key_t key)
{
	unsigned char *p = __atomic_load_n(&tld__tu_cache.data, __ATOMIC_RELAXED);

	if (__builtin_expect(p != NULL && (uint16_t)key.off < __atomic_load_n(&tld__tu_limit, __ATOMIC_RELAXED), 1))
		return p + key.off;
	return NULL;
}

/**
 * tld_get_data() - The calling thread's pointer to @key's value.
 * @map_fd: fd of a tld_data_map (BPF_MAP_TYPE_TASK_STORAGE, int key, 24- or
 *          16-byte value with two UPTRs). Used only when the thread gets its
 *          block (its first call, or its first after tld_free()): the map it
 *          names then (the kernel map, not the fd number) is attached, the
 *          runtime keeping its own duplicate, and the thread registered.
 * @key: a valid key.
 *
 * After the thread's first call this is inline: a thread-local load, a
 * validity check and an add; no call into the library and no use of
 * @map_fd, as upstream. Values start zeroed and are 8-byte aligned.
 *
 * Return: the pointer, valid on this thread until it exits or calls
 * tld_free(); NULL for an invalid key, when the map is not usable, or when
 * allocation or registration fails, with errno set (EINVAL for an invalid
 * key, else the cause: EPERM, EACCES, EOPNOTSUPP, ENOMEM...; see
 * tld_last_error()). Async-signal-safe once the thread is set up.
 */
static inline void *tld_get_data(int map_fd, tld_key_t key)
{
	unsigned char *p = tld__cached(key);

	return p ? p : tld__get_data_slow(map_fd, key, &tld__tu_cache, &tld__tu_limit);
}

/**
 * tld_data() - As tld_get_data(), with the maps attached by tld_attach_path()
 * and tld_attach_fd() (none attached: the pointer works, BPF sees it once a
 * map is attached and the thread touches its data again).
 */
static inline void *tld_data(tld_key_t key)
{
	unsigned char *p = tld__cached(key);

	return p ? p : tld__data_slow(key, &tld__tu_cache, &tld__tu_limit);
}
#endif /* TLD_NO_INLINE */

/**
 * tld_attach_path() - Attach the tld_data_map pinned at @path, and follow it.
 * @path: a bpffs path; NULL means $TLD_MAP_PATH, else /sys/fs/bpf/tld/tld_data_map.
 *
 * Validates before use. Attaching the same map again (same kernel map) is a
 * no-op; up to 64 maps. Every thread registers with it on its next data
 * access. When the pin is later replaced by another map, the runtime moves
 * every thread to the new one within about a second (a watcher thread,
 * unless TLD_PIN_WATCH=0 in the environment) or at tld_refresh().
 *
 * Return: 0, -ENOENT (nothing pinned there), -EINVAL (not on bpffs, not a
 * map, wrong type, key/value size, or no BTF), -EACCES (a read-only map or
 * pin), -EPERM (privilege), -ENOSPC (too many maps), -EOVERFLOW (a 16-byte
 * map while more than 255 keys exist).
 */
int tld_attach_path(const char *path);

/**
 * tld_attach_fd() - Attach the map behind @map_fd (duplicated: the caller
 * keeps ownership of @map_fd). Return: as tld_attach_path(); an fd that is
 * not open, or not a map, is -EINVAL; an fd opened read-only is -EACCES.
 */
int tld_attach_fd(int map_fd);

/**
 * tld_refresh() - Check every map attached by path against its pin now: a
 * pin that names another map is followed (the new map attached, every live
 * thread registered with it, the old map detached). Any thread.
 * Return: 0, or a negative errno as tld_attach_path().
 */
int tld_refresh(void);

/**
 * tld_set_dyn_data_size() - Set the bytes every thread block keeps for keys
 * created after the first block exists (default 64). It may grow until a
 * thread first touches its data, and shrink only while no key exists.
 * Return: 0, -EBUSY, or -EINVAL (more than a block can hold).
 */
int tld_set_dyn_data_size(size_t bytes);

/**
 * tld_free() - Release the calling thread's block now, deregistering it from
 * every map. Optional: blocks are released at thread exit anyway. Every
 * pointer into it is invalid afterwards; the next access allocates anew.
 */
void tld_free(void);

/**
 * tld_last_error() - Copy the calling thread's last error message into @buf
 * (NUL-terminated, truncated to @len - 1 bytes).
 * Return: the message's full length.
 */
size_t tld_last_error(char *buf, size_t len);

/** tld_metadata_page() - The process's metadata page (the same for every copy of tld). */
const void *tld_metadata_page(void);

/** tld_live_blocks() - Thread blocks allocated and not yet released, process-wide. */
int tld_live_blocks(void);

/** tld_runtime_abi_version() - This copy's runtime ABI version (major << 16 | minor). */
uint32_t tld_runtime_abi_version(void);

#ifdef TLD_DYN_DATA_SIZE
/* Upstream option: the dynamic reserve, set before the program's keys exist. */
__attribute__((constructor(101))) static void __tld_set_dyn_data_size(void)
{
	tld_set_dyn_data_size(TLD_DYN_DATA_SIZE);
}
#endif

#ifdef __cplusplus
}
#endif

#endif /* TLD_H */
