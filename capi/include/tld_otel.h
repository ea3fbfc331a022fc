/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/**
 * @file tld_otel.h
 * @brief OpenTelemetry thread context through task local data.
 *
 * Publishes, per thread, the OTEP 4947 Thread-Local Context Record (trace id,
 * span id, trace flags, attributes) and, per process, the OTEP 4719 process
 * context (an OTEL_CTX mapping holding a protobuf Resource with the
 * application's resource attributes, threadlocal.schema_version and
 * threadlocal.attribute_key_map). Readers:
 *   - BPF, through tld_data_map: the record is the value of the static key
 *     "otel.thread_ctx_v1" in the thread's tld block;
 *   - OTEP 4947 readers, through the ELF TLS symbol otel_thread_ctx_v1, which
 *     points at the same record while it is valid and is NULL otherwise.
 * Layouts and protocols: docs/DESIGN.md section 10.
 *
 * Part of libtld (link with -ltld, as for tld.h).
 *
 * USAGE
 *
 *     #include <tld_otel.h>
 *
 *     TLD_OTEL_DEFINE_RECORD_KEY();   // the record gets room in every block, before main
 *
 *     void handle(const uint8_t trace[16], const uint8_t span[8])
 *     {
 *         tld_otel_span_t s = { .trace_flags = 1 };
 *         tld_otel_attr_t attrs[] = { { "http.route", "/users/:id" } };
 *         tld_otel_saved_t prev;
 *         memcpy(s.trace_id, trace, 16);
 *         memcpy(s.span_id, span, 8);
 *         tld_otel_save(&prev);               // scoped form: save, set, restore
 *         tld_otel_set(&s, attrs, 1);
 *         ... work: BPF and profilers see this span on this thread ...
 *         tld_otel_restore(&prev);
 *     }
 *
 * LINKING: OTEP 4947 readers find otel_thread_ctx_v1 in .dynsym. libtld.so
 * exports it. A program linking libtld.a must export it itself:
 *     cc app.c libtld.a -Wl,--export-dynamic-symbol=otel_thread_ctx_v1 -lpthread -ldl -lm
 * Without it the BPF path works and the TLS path stays dark. When several
 * copies of tld are loaded (libtld.so, a Python extension, a Go archive),
 * exactly one exported otel_thread_ctx_v1 is written; the others stay NULL.
 *
 * ERRORS are -errno; tld_last_error() (tld.h) holds a message naming the
 * record, attribute or mapping and the cause:
 *   -EINVAL   a NULL or non-UTF-8 string, a span context OTEP 4947 forbids
 *             (one id all zero but not the other; flags without ids), an
 *             attribute key name empty or longer than 127 bytes, an
 *             unregistered key index, a record size outside 28..640, a
 *             resource key in the threadlocal. namespace or given twice
 *   -E2BIG    an attribute value longer than 255 bytes, attributes that do
 *             not fit the record (never truncated), or the record key not
 *             fitting the thread blocks (created after threads touched tld
 *             data; see TLD_OTEL_DEFINE_RECORD_KEY)
 *   -ENOSPC   the attribute key map is full (256 keys)
 *   -EBUSY    tld_otel_set_record_size() after the record key exists
 *   -EEXIST   the record key exists with another size than this copy set
 *   -EPROTO   another copy of tld in the process uses an incompatible
 *             layout (of the runtime or of the OpenTelemetry state)
 *   -EDEADLK  called from a signal handler that interrupted an update of the
 *             key map or process context on the same thread
 *   and the errors of tld.h when the thread's block cannot be had.
 * A failed call changes nothing: the thread's record stays as it was.
 *
 * THREADS: a record belongs to the OS thread that calls these functions;
 * only that thread writes it. Every function may be called on any thread.
 * After the thread's first call, tld_otel_set_indexed(), tld_otel_clear(),
 * tld_otel_save() and tld_otel_restore() take no lock; tld_otel_set()
 * registers new key names under a process-wide lock. Registering keys and
 * publishing the process context are not async-signal-safe.
 *
 * FORK: the child inherits the records and the key map; the OTEL_CTX mapping
 * is not inherited (MADV_DONTFORK) and the child publishes its own on its
 * next use of these functions.
 */
#ifndef TLD_OTEL_H
#define TLD_OTEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tld.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Name of the static tld key whose value is the thread's record. */
#define TLD_OTEL_RECORD_KEY "otel.thread_ctx_v1"
/** Record size unless set otherwise (28-byte header + 100 bytes of attributes). */
#define TLD_OTEL_DEFAULT_RECORD_SIZE 128
/** Largest record size (what OTEP 4947 recommends readers read). */
#define TLD_OTEL_MAX_RECORD_SIZE 640

/** A W3C span context: ids in wire order. All zero: no span. */
typedef struct {
	uint8_t trace_id[16];
	uint8_t span_id[8];
	uint8_t trace_flags; /**< W3C trace flags: bit 0 sampled */
} tld_otel_span_t;

/** An attribute by key name. Both strings NUL-terminated UTF-8, copied. */
typedef struct {
	const char *name;  /**< 1 to 127 bytes; registered in the key map on first use */
	const char *value; /**< at most 255 bytes */
} tld_otel_attr_t;

/** An attribute by key index (from tld_otel_attr_key()). */
typedef struct {
	uint8_t key;
	const char *value; /**< NUL-terminated UTF-8, at most 255 bytes */
} tld_otel_indexed_attr_t;

/** The value kinds of a resource attribute. */
enum {
	TLD_OTEL_STRING = 0,
	TLD_OTEL_BOOL = 1,
	TLD_OTEL_INT = 2,
	TLD_OTEL_DOUBLE = 3,
};

/** A resource attribute of the process context; `kind` says which value is used. */
typedef struct {
	const char *key; /**< 1 to 255 bytes, not starting with "threadlocal." */
	int kind;        /**< TLD_OTEL_STRING, _BOOL, _INT or _DOUBLE */
	const char *string_value;
	int64_t int_value;
	double double_value;
	bool bool_value;
} tld_otel_resource_attr_t;

/** A copy of a thread's record, for tld_otel_save()/tld_otel_restore(). */
typedef struct {
	uint8_t record[TLD_OTEL_MAX_RECORD_SIZE];
} tld_otel_saved_t;

/**
 * tld_otel_set_record_size() - Set the size of every thread's record.
 * @bytes: 28 to 640; attributes get @bytes - 28 (2 bytes each plus the value).
 * Must come before the record key exists (before tld_otel_record_key() or
 * the first publication in any language of the process); the environment
 * variable TLD_OTEL_RECORD_SIZE does the same without code.
 * Return: 0; -EINVAL out of range; -EBUSY if the key exists with another size.
 */
int tld_otel_set_record_size(size_t bytes);

/**
 * tld_otel_record_key() - The static key "otel.thread_ctx_v1", created now
 * if it does not exist. Called before any thread touches tld data it grows
 * every thread block by the record size; later it must fit the dynamic
 * reserve (-E2BIG otherwise). An existing key is used whatever its size.
 * Return: the key (its off is the record's offset in the data area), or off
 * = -E2BIG, -EEXIST, -EINVAL (bad TLD_OTEL_RECORD_SIZE), -EPROTO.
 */
tld_key_t tld_otel_record_key(void);

/**
 * tld_otel_attr_key() - Register an attribute key name in the process's
 * append-only threadlocal.attribute_key_map (shared by every copy and
 * language), or find it. A new name republishes the process context.
 * Return: its index (0 to 255), or -EINVAL, -ENOSPC, -EDEADLK.
 */
int tld_otel_attr_key(const char *name);

/**
 * tld_otel_set() - Publish the calling thread's context.
 * @span: the span context (not NULL).
 * @attrs: @n attributes by name (may be NULL when @n is 0). New names are
 *         registered in the key map first.
 * Writes the thread's record with the valid-flag protocol (valid = 0, the
 * fields, valid = 1) and points otel_thread_ctx_v1 at it. The first call on
 * a thread allocates and registers its tld block; it publishes the process
 * context if this process has none yet.
 * Return: 0, or -EINVAL, -E2BIG, -ENOSPC, -EDEADLK; on error the record is
 * unchanged.
 */
int tld_otel_set(const tld_otel_span_t *span, const tld_otel_attr_t *attrs, size_t n);

/**
 * tld_otel_set_indexed() - As tld_otel_set(), with key indexes from
 * tld_otel_attr_key(): no name lookup, no lock.
 * Return: 0, or -EINVAL (an index not registered), -E2BIG.
 */
int tld_otel_set_indexed(const tld_otel_span_t *span, const tld_otel_indexed_attr_t *attrs, size_t n);

/**
 * tld_otel_clear() - Mark the calling thread's record invalid (valid = 0)
 * and set otel_thread_ctx_v1 to NULL: readers see no context.
 * Return: 0, or a tld.h error if the thread's block cannot be had.
 */
int tld_otel_clear(void);

/**
 * tld_otel_save() - Copy the calling thread's record into @saved (owned by
 * the caller; written only on success), to put back with tld_otel_restore()
 * on the same thread: the scoped form of tld_otel_set().
 * Return: 0, -EINVAL (@saved NULL), or a tld.h error.
 */
int tld_otel_save(tld_otel_saved_t *saved);

/**
 * tld_otel_restore() - Put back a record saved on this thread, valid or not
 * as it was; otel_thread_ctx_v1 follows.
 * Return: 0, -EINVAL (@saved NULL), or a tld.h error.
 */
int tld_otel_restore(const tld_otel_saved_t *saved);

/**
 * tld_otel_current() - Read the calling thread's record back.
 * @span: receives its span context; may be NULL.
 * Return: 1 if the record is valid, 0 if not, or -errno.
 */
int tld_otel_current(tld_otel_span_t *span);

/**
 * tld_otel_record() - The calling thread's record (tld_otel_record_key()'s
 * size in bytes), for bindings that follow DESIGN section 10.2 themselves.
 * Valid on this thread until it exits or calls tld_free().
 * Return: the pointer, or NULL with errno set.
 */
const void *tld_otel_record(void);

/**
 * tld_otel_publish_process_context() - Set the process's resource
 * attributes (replacing earlier ones; copied) and publish the OTEL_CTX
 * mapping with them and tld's threadlocal.* attributes (OTEP 4719 update
 * protocol when it exists). One mapping per process, whichever copy calls.
 * Return: 0, or -EINVAL (bad key or kind), -E2BIG (over 16 KiB encoded),
 * -EDEADLK, or the errno of a failed memfd_create/mmap/madvise.
 */
int tld_otel_publish_process_context(const tld_otel_resource_attr_t *attrs, size_t n);

/**
 * tld_otel_set_schema_version() - Set threadlocal.schema_version (default
 * "tld_uptr_v1") and republish; for readers that accept only OTEP 4947's
 * own name ("tlsdesc_v1_dev"). Return: 0, -EINVAL (empty or over 63 bytes).
 */
int tld_otel_set_schema_version(const char *version);

/**
 * tld_otel_process_context() - The address of this process's OTEL_CTX
 * mapping, publishing it first if needed; the same in every copy.
 * Return: the address, or NULL with errno set.
 */
const void *tld_otel_process_context(void);

/**
 * TLD_OTEL_DEFINE_RECORD_KEY() - Create the record key by a constructor
 * before main, as TLD_DEFINE_KEY does for other keys, so it gets its own
 * room in every thread block. Define TLD_OTEL_RECORD_SIZE before including
 * this header to choose the size. Errors are reported again by the first
 * publication.
 */
#ifdef TLD_OTEL_RECORD_SIZE
#define __TLD_OTEL_SET_SIZE() tld_otel_set_record_size(TLD_OTEL_RECORD_SIZE)
#else
#define __TLD_OTEL_SET_SIZE() 0
#endif
#define TLD_OTEL_DEFINE_RECORD_KEY()                                            \
	__attribute__((constructor)) static void __tld_otel_define_record_key(void) \
	{                                                                       \
		(void)__TLD_OTEL_SET_SIZE();                                    \
		(void)tld_otel_record_key();                                    \
	}                                                                       \
	/* takes the caller's `;` */                                            \
	extern int tld_otel_clear(void)

#ifdef __cplusplus
}
#endif

#endif /* TLD_OTEL_H */
