// Command golib is the Go participant of the mixed-language tests and demo,
// built with -buildmode=c-shared into libmixed_go.so: the Go binding with its
// own copy of the core (libtld.a), behind a C ABI that Python loads with
// ctypes (RTLD_LOCAL). A call from a C thread runs on that thread; each entry
// locks its goroutine to it (tld.WithThread) for the access, so the value
// lands on the calling thread's kernel task.
package main

/*
#include <stdint.h>
#include <stdlib.h>
#include <sys/prctl.h>

static void name_thread(const char *name) { prctl(PR_SET_NAME, name); }
*/
import "C"

import (
	"errors"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	tld "tld.dev/tld/go"
)

func errno(err error) C.long {
	var e syscall.Errno
	if errors.As(err, &e) {
		return -C.long(e)
	}
	return -C.long(syscall.EIO)
}

// mixed_go_attach attaches the map pinned at path ("" means $TLD_MAP_PATH). 0 or -errno.
//
//export mixed_go_attach
func mixed_go_attach(path *C.char) C.int {
	p := ""
	if path != nil {
		p = C.GoString(path)
	}
	if err := tld.Attach(p); err != nil {
		return C.int(errno(err))
	}
	return 0
}

// mixed_go_metadata_page is the metadata page of the runtime this copy uses.
//
//export mixed_go_metadata_page
func mixed_go_metadata_page() C.size_t { return C.size_t(tld.MetadataPage()) }

// mixed_go_key gets or creates the 8-byte key name (no thread data touched).
// Its offset, or -errno.
//
//export mixed_go_key
func mixed_go_key(name *C.char) C.long {
	key, err := tld.GetOrCreateKey[int64](C.GoString(name))
	if err != nil {
		return errno(err)
	}
	return C.long(key.Offset())
}

// mixed_go_set gets or creates the 8-byte key name and stores v in the
// calling thread's value. Returns the thread's id, or -errno.
//
//export mixed_go_set
func mixed_go_set(name *C.char, v C.int64_t) C.long {
	key, err := tld.GetOrCreateKey[int64](C.GoString(name))
	if err != nil {
		return errno(err)
	}
	var tid int
	err = tld.WithThread(func(t *tld.Thread) error {
		// A thread of the Python host, not of the Go scheduler: the value
		// stays when the call returns, as the host asked.
		t.Keep()
		val, err := key.On(t)
		if err != nil {
			return err
		}
		val.Set(int64(v))
		tid = t.ID()
		return nil
	})
	if err != nil {
		return errno(err)
	}
	return C.long(tid)
}

// mixed_go_start_worker (demo) starts a goroutine locked to its own OS
// thread that publishes go.requests (growing) and the common key "priority"
// for seconds seconds. Returns that thread's id once its values are
// published, or -errno.
//
//export mixed_go_start_worker
func mixed_go_start_worker(seconds C.int) C.long {
	started := make(chan C.long)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		name := C.CString("go-worker")
		C.name_thread(name) // the thread's comm, which `tld dump` shows
		C.free(unsafe.Pointer(name))
		err := tld.WithThread(func(t *tld.Thread) error {
			reqs, err := tld.GetOrCreateKey[int64]("go.requests")
			if err != nil {
				return err
			}
			prio, err := tld.GetOrCreateKey[int64]("priority")
			if err != nil {
				return err
			}
			r, err := reqs.On(t)
			if err != nil {
				return err
			}
			p, err := prio.On(t)
			if err != nil {
				return err
			}
			r.Set(0)
			p.Set(1)
			started <- C.long(t.ID())
			end := time.Now().Add(time.Duration(seconds) * time.Second)
			for i := int64(1); time.Now().Before(end); i++ {
				r.Set(r.Get() + i)
				p.Set(5 + i%3)
				time.Sleep(300 * time.Millisecond)
			}
			return nil
		})
		if err != nil {
			started <- errno(err)
		}
	}()
	return <-started
}

func main() {}
