// Package dlcopy loads a separate copy of the tld C library (libtld.so) with
// dlopen, for the tests that check that every copy of tld in a process shares
// one runtime. Only the tests use it; it is here because cgo is not allowed
// in _test.go files.
package dlcopy

/*
#cgo LDFLAGS: -ldl
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <stddef.h>

typedef struct { int16_t off; } key_t_;
typedef key_t_ (*create_key_fn)(const char *, size_t);
typedef key_t_ (*find_key_fn)(const char *);
typedef const void *(*meta_fn)(void);
typedef void *(*data_fn)(key_t_);

static int16_t call_create_key(void *f, const char *name, size_t size) { return ((create_key_fn)f)(name, size).off; }
static int16_t call_find_key(void *f, const char *name) { return ((find_key_fn)f)(name).off; }
static uintptr_t call_meta(void *f) { return (uintptr_t)((meta_fn)f)(); }
static const char *symbol_file(void *f) { Dl_info info; return dladdr(f, &info) ? info.dli_fname : NULL; }
static uintptr_t call_data(void *f, int16_t off) { key_t_ k = { off }; return (uintptr_t)((data_fn)f)(k); }
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// Lib is one dlopen'ed copy of libtld.so.
type Lib struct {
	handle                             unsafe.Pointer
	createKey, findKey, metadata, data unsafe.Pointer
}

// Open dlopens the library at path (RTLD_LOCAL: its symbols stay its own).
func Open(path string) (*Lib, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	h := C.dlopen(cpath, C.RTLD_NOW|C.RTLD_LOCAL)
	if h == nil {
		return nil, fmt.Errorf("dlopen %s: %s", path, C.GoString(C.dlerror()))
	}
	l := &Lib{handle: h}
	for _, s := range []struct {
		name string
		dst  *unsafe.Pointer
	}{{"tld_create_key", &l.createKey}, {"tld_find_key", &l.findKey}, {"tld_metadata_page", &l.metadata}, {"tld_data", &l.data}} {
		cname := C.CString(s.name)
		*s.dst = C.dlsym(h, cname)
		C.free(unsafe.Pointer(cname))
		if *s.dst == nil {
			return nil, fmt.Errorf("dlsym %s in %s: not found", s.name, path)
		}
	}
	return l, nil
}

// CreateKey calls the copy's tld_create_key and returns the offset or -errno.
func (l *Lib) CreateKey(name string, size int) int {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	return int(C.call_create_key(l.createKey, cname, C.size_t(size)))
}

// FindKey calls the copy's tld_find_key and returns the offset or -errno.
func (l *Lib) FindKey(name string) int {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	return int(C.call_find_key(l.findKey, cname))
}

// MetadataPage calls the copy's tld_metadata_page.
func (l *Lib) MetadataPage() uintptr { return uintptr(C.call_meta(l.metadata)) }

// Data calls the copy's tld_data for the calling thread (the caller holds the
// goroutine locked) and returns the pointer as an address.
func (l *Lib) Data(off int) uintptr { return uintptr(C.call_data(l.data, C.int16_t(off))) }

// SymbolFile returns the file that the copy's tld_create_key lives in
// (dladdr), to show the copy is not the program's own tld.
func (l *Lib) SymbolFile() string { return C.GoString(C.symbol_file(l.createKey)) }
