// Command gohost is a Go program on the Go binding that loads the C++
// library (libmixed_cxx.so, its own copy of the core) with dlopen, and from
// several locked goroutines writes keys of its own, has the C++ library
// write its keys, and both write a common key, all on the same OS thread.
//
//	gohost LIBMIXED_CXX.so NTHREADS
//
// It prints one JSON line, what `tld dump` must show of it (see
// tests/mixed/mixed_check.py), keeps its threads alive until stdin is closed,
// then exits.
package main

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>

typedef int (*attach_fn)(const char *);
typedef size_t (*page_fn)(void);
typedef long (*set_fn)(const char *, int64_t);

static void *lib;
static attach_fn cxx_attach;
static page_fn cxx_page;
static set_fn cxx_set;

static const char *load(const char *path)
{
	lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!lib)
		return dlerror();
	cxx_attach = (attach_fn)dlsym(lib, "mixed_cxx_attach");
	cxx_page = (page_fn)dlsym(lib, "mixed_cxx_metadata_page");
	cxx_set = (set_fn)dlsym(lib, "mixed_cxx_set");
	if (!cxx_attach || !cxx_page || !cxx_set)
		return "missing mixed_cxx_* symbols";
	return NULL;
}
static int call_attach(void) { return cxx_attach(""); }
static size_t call_page(void) { return cxx_page(); }
static long call_set(const char *name, int64_t v) { return cxx_set(name, v); }
*/
import "C"

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"syscall"
	"unsafe"

	tld "tld.dev/tld/go"
)

func cxxSet(name string, v int64) int64 {
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	return int64(C.call_set(cs, C.int64_t(v)))
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "gohost: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 3 {
		fail("usage: gohost LIBMIXED_CXX.so NTHREADS")
	}
	n, _ := strconv.Atoi(os.Args[2])
	if err := tld.Attach(""); err != nil {
		fail("attach: %v", err)
	}
	path := C.CString(os.Args[1])
	if msg := C.load(path); msg != nil {
		fail("dlopen %s: %s", os.Args[1], C.GoString(msg))
	}
	if rc := C.call_attach(); rc != 0 {
		fail("mixed_cxx_attach: %v", syscall.Errno(-rc))
	}
	goCommon, err := tld.GetOrCreateKey[int64]("mixed.common")
	if err != nil {
		fail("%v", err)
	}
	goOwn, err := tld.GetOrCreateKey[int64]("go.value")
	if err != nil {
		fail("%v", err)
	}

	type expect = map[string]int64
	threads := map[string]expect{}
	var mu sync.Mutex
	var ready, done sync.WaitGroup
	release := make(chan struct{})
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		ready.Add(1)
		done.Add(1)
		go func(i int) {
			defer done.Done()
			err := tld.WithThread(func(t *tld.Thread) error {
				tid := int64(t.ID())
				base := tid * 10
				e := expect{"go.value": base + 3, "cxx.value": base + 2}
				if err := goOwn.Set(t, base+3); err != nil {
					return err
				}
				if got := cxxSet("cxx.value", base+2); got != tid {
					return fmt.Errorf("mixed_cxx_set ran on %d, not %d", got, tid)
				}
				// The common key: the last writer alternates between threads.
				if i%2 == 0 {
					goCommon.Set(t, base+3)
					cxxSet("mixed.common", base+2)
					e["mixed.common"] = base + 2
				} else {
					cxxSet("mixed.common", base+2)
					goCommon.Set(t, base+3)
					e["mixed.common"] = base + 3
				}
				mu.Lock()
				threads[strconv.FormatInt(tid, 10)] = e
				mu.Unlock()
				// Stay in the callback while the dump runs: WithThread
				// restores the Go values when it returns.
				ready.Done()
				<-release
				return nil
			})
			if err != nil {
				errs <- err
				ready.Done()
			}
		}(i)
	}
	ready.Wait()
	select {
	case err := <-errs:
		fail("%v", err)
	default:
	}
	out := map[string]any{
		"pid":        os.Getpid(),
		"meta_pages": map[string]uint64{"go": uint64(tld.MetadataPage()), "cxx": uint64(C.call_page())},
		"keys":       map[string]int{"mixed.common": 8, "go.value": 8, "cxx.value": 8},
		"threads":    threads,
	}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
	io.Copy(io.Discard, os.Stdin)
	close(release)
	done.Wait()
}
