package tld

// The cgo seam: every cgo flag and every call into the C ABI (tld.h) lives in
// this file. By default the package builds against the installed library,
// found with pkg-config (`make install` installs tld.pc, libtld and tld.h):
// the release build, linked as libtld.so.0. With the build tag tld_intree it
// links the static library of this checkout instead, for development:
// ../target/debug/libtld.a (`make build`), or with tld_release as well
// ../target/release/libtld.a (`cargo build -p task-local-data-capi --release`).
// See "Building" in doc.go.
//
// No Go object here owns a C resource (keys are plain offsets, names are C
// copies freed before returning), so there are no finalizers; the
// runtime.KeepAlive habit of wasmtime-go has nothing to keep alive.

/*
#cgo !tld_intree pkg-config: tld
#cgo tld_intree CFLAGS: -I${SRCDIR}/../capi/include
#cgo tld_intree,!tld_release LDFLAGS: ${SRCDIR}/../target/debug/libtld.a
#cgo tld_intree,tld_release LDFLAGS: ${SRCDIR}/../target/release/libtld.a
#cgo tld_intree LDFLAGS: -ldl -lpthread -lm
#include <stdlib.h>
#include <string.h>
#include <tld.h>
#include <tld_otel.h>

// Values of at most 8 bytes cross cgo in a word, and finding the thread's
// pointer and storing happen in one C call: the goroutine cannot change
// threads in between, so the per-call API needs no runtime.LockOSThread.
static int tld_go_store_word(int16_t off, uint64_t word, size_t size)
{
	tld_key_t key = { off };
	void *p = tld_data(key);
	if (!p)
		return -1;
	memcpy(p, &word, size);
	return 0;
}

typedef struct {
	uint64_t word;
	int ok;
} tld_go_word_t;

static tld_go_word_t tld_go_load_word(int16_t off, size_t size)
{
	tld_key_t key = { off };
	tld_go_word_t r = { 0, 0 };
	void *p = tld_data(key);
	if (p) {
		memcpy(&r.word, p, size);
		r.ok = 1;
	}
	return r;
}

// OpenTelemetry: attributes cross cgo as one Go byte buffer without Go
// pointers, "name\0value\0" n times (Go refused NULs in them before), which
// C splits on its stack: no C allocation per call. More attributes than
// fit here cannot fit a 640-byte record either (2 bytes each at least).
#define TLD_GO_OTEL_MAX_ATTRS 320

// The span context crosses as words (the ids' bytes in memory order): no Go
// pointer, so nothing to allocate or check.
static int tld_go_otel_set(uint64_t trace0, uint64_t trace1, uint64_t span_id, uint8_t flags,
			   const char *buf, size_t n)
{
	tld_otel_attr_t attrs[TLD_GO_OTEL_MAX_ATTRS];
	tld_otel_span_t span;
	memcpy(span.trace_id, &trace0, 8);
	memcpy(span.trace_id + 8, &trace1, 8);
	memcpy(span.span_id, &span_id, 8);
	span.trace_flags = flags;
	if (n > TLD_GO_OTEL_MAX_ATTRS)
		n = TLD_GO_OTEL_MAX_ATTRS + 1; // let tld_otel_set refuse with its message
	for (size_t i = 0; i < n && i < TLD_GO_OTEL_MAX_ATTRS; i++) {
		attrs[i].name = buf;
		buf += strlen(buf) + 1;
		attrs[i].value = buf;
		buf += strlen(buf) + 1;
	}
	if (n > TLD_GO_OTEL_MAX_ATTRS)
		return -E2BIG;
	return tld_otel_set(&span, attrs, n);
}

// An empty C call: the benchmarks' reference for the cost of crossing cgo.
static void tld_go_nop(void) {}
*/
import "C"

import (
	"encoding/binary"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"
)

// cKey is the C key: an offset in the data area, or -errno.
type cKey = C.tld_key_t

// lastError is the calling thread's last error message. The C library keeps
// it per OS thread, so callers hold the goroutine locked between the failing
// call and this one.
func lastError() string {
	var buf [512]C.char
	n := C.tld_last_error(&buf[0], C.size_t(len(buf)))
	if n == 0 {
		return ""
	}
	return C.GoString(&buf[0])
}

// keyCall runs one key function of the C ABI on a locked thread and returns
// the offset, or the errno and tld_last_error's message.
func keyCall(name string, call func(*C.char) cKey) (off int16, errno syscall.Errno, msg string) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	k := call(cname)
	if k.off < 0 {
		return 0, syscall.Errno(-k.off), lastError()
	}
	return int16(k.off), 0, ""
}

func cCreateKey(name string, size int) (int16, syscall.Errno, string) {
	return keyCall(name, func(n *C.char) cKey { return C.tld_create_key(n, C.size_t(size)) })
}

func cGetOrCreateKey(name string, size int) (int16, syscall.Errno, string) {
	return keyCall(name, func(n *C.char) cKey { return C.tld_key(n, C.size_t(size)) })
}

func cCreateStaticKey(name string, size int) (int16, syscall.Errno, string) {
	return keyCall(name, func(n *C.char) cKey { return C.tld_create_static_key(n, C.size_t(size)) })
}

// cFindKey returns the key's offset and size.
func cFindKey(name string) (off int16, size int, errno syscall.Errno, msg string) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var info C.tld_key_info_t
	if r := C.tld_find_key_info(cname, &info); r < 0 {
		return 0, 0, syscall.Errno(-r), lastError()
	}
	return int16(info.off), int(info.size), 0, ""
}

// intCall runs a C function returning 0 or -errno on a locked thread.
func intCall(call func() C.int) (syscall.Errno, string) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if r := call(); r < 0 {
		return syscall.Errno(-r), lastError()
	}
	return 0, ""
}

func cAttachPath(path string) (syscall.Errno, string) {
	var cpath *C.char // NULL: $TLD_MAP_PATH, else the default path
	if path != "" {
		cpath = C.CString(path)
		defer C.free(unsafe.Pointer(cpath))
	}
	return intCall(func() C.int { return C.tld_attach_path(cpath) })
}

func cAttachFD(fd int) (syscall.Errno, string) {
	return intCall(func() C.int { return C.tld_attach_fd(C.int(fd)) })
}

func cSetDynDataSize(bytes int) (syscall.Errno, string) {
	return intCall(func() C.int { return C.tld_set_dyn_data_size(C.size_t(bytes)) })
}

// cData is tld_data: the calling thread's pointer for the key at off, or nil.
// The caller holds the goroutine locked to its thread.
// cData is tld_data: NULL comes with errno set, which cgo returns as err.
func cData(off int16) (unsafe.Pointer, error) {
	p, err := C.tld_data(C.tld_key_t{off: C.int16_t(off)})
	return unsafe.Pointer(p), err
}

// cStoreWord stores the first size bytes of word (at most 8) as the calling
// thread's value of the key at off, in one C call; false if the thread has
// no data (the caller redoes the call on a locked thread for the message).
func cStoreWord(off int16, word uint64, size int) bool {
	return C.tld_go_store_word(C.int16_t(off), C.uint64_t(word), C.size_t(size)) == 0
}

// cLoadWord loads the calling thread's value of the key at off (at most 8
// bytes) in one C call, as cStoreWord.
func cLoadWord(off int16, size int) (uint64, bool) {
	r := C.tld_go_load_word(C.int16_t(off), C.size_t(size))
	return uint64(r.word), r.ok != 0
}

func cMetadataPage() uintptr { return uintptr(C.tld_metadata_page()) }

func cLiveBlocks() int { return int(C.tld_live_blocks()) }

func cRuntimeABIVersion() uint32 { return uint32(C.tld_runtime_abi_version()) }

// cNop is an empty cgo call (benchmark reference).
func cNop() { C.tld_go_nop() }

func cRefresh() (syscall.Errno, string) {
	return intCall(func() C.int { return C.tld_refresh() })
}

// OpenTelemetry (tld_otel.h).

// otelSaved is a tld_otel_saved_t: a copy of a thread's record.
type otelSaved [unsafe.Sizeof(C.tld_otel_saved_t{})]byte

func cOtelSetRecordSize(bytes int) (syscall.Errno, string) {
	return intCall(func() C.int { return C.tld_otel_set_record_size(C.size_t(bytes)) })
}

// cOtelRecordKey creates (or finds) the record key: its offset and size.
func cOtelRecordKey() (off int16, size int, errno syscall.Errno, msg string) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	k := C.tld_otel_record_key()
	if k.off < 0 {
		return 0, 0, syscall.Errno(-k.off), lastError()
	}
	name := C.CString(OtelRecordKeyName)
	defer C.free(unsafe.Pointer(name))
	var info C.tld_key_info_t
	if r := C.tld_find_key_info(name, &info); r < 0 {
		return 0, 0, syscall.Errno(-r), lastError()
	}
	return int16(k.off), int(info.size), 0, ""
}

// The calls below run on the caller's locked thread (a WithThread callback):
// the record they write and the message they leave are that thread's.

// cOtelSet publishes span with the n attributes packed in buf.
func cOtelSet(span *SpanContext, buf []byte, n int) (syscall.Errno, string) {
	var p *C.char
	if len(buf) > 0 {
		p = (*C.char)(unsafe.Pointer(&buf[0]))
	}
	// Memory order on both sides: the C helper copies the words' bytes back.
	t0 := binary.NativeEndian.Uint64(span.TraceID[:8])
	t1 := binary.NativeEndian.Uint64(span.TraceID[8:])
	s0 := binary.NativeEndian.Uint64(span.SpanID[:])
	if r := C.tld_go_otel_set(C.uint64_t(t0), C.uint64_t(t1), C.uint64_t(s0), C.uint8_t(span.TraceFlags), p, C.size_t(n)); r < 0 {
		if syscall.Errno(-r) == syscall.E2BIG && n > C.TLD_GO_OTEL_MAX_ATTRS {
			return syscall.E2BIG, strconv.Itoa(n) + " attributes cannot fit a record"
		}
		return syscall.Errno(-r), lastError()
	}
	return 0, ""
}

func cOtelClear() (syscall.Errno, string) {
	if r := C.tld_otel_clear(); r < 0 {
		return syscall.Errno(-r), lastError()
	}
	return 0, ""
}

func cOtelSave(s *otelSaved) (syscall.Errno, string) {
	if r := C.tld_otel_save((*C.tld_otel_saved_t)(unsafe.Pointer(s))); r < 0 {
		return syscall.Errno(-r), lastError()
	}
	return 0, ""
}

func cOtelRestore(s *otelSaved) (syscall.Errno, string) {
	if r := C.tld_otel_restore((*C.tld_otel_saved_t)(unsafe.Pointer(s))); r < 0 {
		return syscall.Errno(-r), lastError()
	}
	return 0, ""
}

// cOtelCurrent reads the thread's span context back and whether it is valid.
func cOtelCurrent() (SpanContext, bool, syscall.Errno, string) {
	var c C.tld_otel_span_t
	r := C.tld_otel_current(&c)
	if r < 0 {
		return SpanContext{}, false, syscall.Errno(-r), lastError()
	}
	var s SpanContext
	for i := range s.TraceID {
		s.TraceID[i] = byte(c.trace_id[i])
	}
	for i := range s.SpanID {
		s.SpanID[i] = byte(c.span_id[i])
	}
	s.TraceFlags = byte(c.trace_flags)
	return s, r == 1, 0, ""
}

func cOtelAttrKey(name string) (int, syscall.Errno, string) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	r := C.tld_otel_attr_key(cname)
	if r < 0 {
		return 0, syscall.Errno(-r), lastError()
	}
	return int(r), 0, ""
}

// cOtelPublishProcessContext publishes the process context with attrs. The
// C array and its strings live in C memory for the call (cgo's pointer
// rules: C must not keep Go memory, nor read Go pointers from it).
func cOtelPublishProcessContext(attrs []ResourceAttribute) (syscall.Errno, string) {
	n := len(attrs)
	var arr *C.tld_otel_resource_attr_t
	if n > 0 {
		arr = (*C.tld_otel_resource_attr_t)(C.calloc(C.size_t(n), C.size_t(unsafe.Sizeof(C.tld_otel_resource_attr_t{}))))
		defer C.free(unsafe.Pointer(arr))
	}
	items := unsafe.Slice(arr, n)
	for i, a := range attrs {
		items[i].key = C.CString(a.Key)
		defer C.free(unsafe.Pointer(items[i].key))
		switch v := a.Value.(type) {
		case string:
			items[i].kind = C.TLD_OTEL_STRING
			items[i].string_value = C.CString(v)
			defer C.free(unsafe.Pointer(items[i].string_value))
		case bool:
			items[i].kind = C.TLD_OTEL_BOOL
			items[i].bool_value = C.bool(v)
		case int64:
			items[i].kind = C.TLD_OTEL_INT
			items[i].int_value = C.int64_t(v)
		case float64:
			items[i].kind = C.TLD_OTEL_DOUBLE
			items[i].double_value = C.double(v)
		}
	}
	return intCall(func() C.int { return C.tld_otel_publish_process_context(arr, C.size_t(n)) })
}

func cOtelSetSchemaVersion(version string) (syscall.Errno, string) {
	cv := C.CString(version)
	defer C.free(unsafe.Pointer(cv))
	return intCall(func() C.int { return C.tld_otel_set_schema_version(cv) })
}

// cOtelProcessContext is the address of the process's OTEL_CTX mapping.
func cOtelProcessContext() (uintptr, syscall.Errno, string) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p, err := C.tld_otel_process_context()
	if p == nil {
		errno, _ := err.(syscall.Errno)
		return 0, errno, lastError()
	}
	return uintptr(p), 0, ""
}
