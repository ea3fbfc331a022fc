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

	"tld.dev/tld"
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

// OpenTelemetry (Thread.SetOtel) for the OpenTelemetry scenario (otel_app.py).

func otelSpan(trace, span *C.uint8_t, flags C.int) tld.SpanContext {
	var s tld.SpanContext
	copy(s.TraceID[:], C.GoBytes(unsafe.Pointer(trace), 16))
	copy(s.SpanID[:], C.GoBytes(unsafe.Pointer(span), 8))
	s.TraceFlags = byte(flags)
	return s
}

func otelAttrs(lang, worker *C.char) []tld.OtelAttribute {
	l := C.GoString(lang)
	return []tld.OtelAttribute{{Name: "lang", Value: l}, {Name: l + ".worker", Value: C.GoString(worker)}}
}

// mixed_go_otel_record_key creates the record key otel.thread_ctx_v1 (before
// any thread touches tld data). Its size, or -errno.
//
//export mixed_go_otel_record_key
func mixed_go_otel_record_key() C.long {
	key, err := tld.OtelRecordKey()
	if err != nil {
		return errno(err)
	}
	return C.long(key.Size())
}

// mixed_go_otel_set publishes the calling thread's record (kept after the
// call): trace (16 bytes), span (8), flags, attributes lang=lang and
// lang.worker=worker. The tid, or -errno.
//
//export mixed_go_otel_set
func mixed_go_otel_set(trace, span *C.uint8_t, flags C.int, lang, worker *C.char) C.long {
	s, attrs := otelSpan(trace, span, flags), otelAttrs(lang, worker)
	var tid int
	err := tld.WithThread(func(t *tld.Thread) error {
		t.Keep() // the host's thread: the record stays when the call returns
		tid = t.ID()
		return t.SetOtel(s, attrs...)
	})
	if err != nil {
		return errno(err)
	}
	return C.long(tid)
}

// mixed_go_otel_clear clears the calling thread's record. 0 or -errno.
//
//export mixed_go_otel_clear
func mixed_go_otel_clear() C.int {
	err := tld.WithThread(func(t *tld.Thread) error {
		t.Keep()
		return t.ClearOtel()
	})
	if err != nil {
		return C.int(errno(err))
	}
	return 0
}

var (
	otelClear = make(chan struct{})
	otelExit  = make(chan struct{})
	otelDone  = make(chan struct{}, 64)
)

// mixed_go_otel_worker starts a goroutine locked to its own OS thread that
// publishes as mixed_go_otel_set inside WithThread, clears on
// mixed_go_otel_workers(1, n) and exits on mixed_go_otel_workers(2, 0). Its
// tid once published, or -errno (the goroutine then returns).
//
//export mixed_go_otel_worker
func mixed_go_otel_worker(trace, span *C.uint8_t, flags C.int, lang, worker *C.char) C.long {
	s, attrs := otelSpan(trace, span, flags), otelAttrs(lang, worker)
	started := make(chan C.long, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		err := tld.WithThread(func(t *tld.Thread) error {
			if err := t.SetOtel(s, attrs...); err != nil {
				return err
			}
			started <- C.long(t.ID())
			<-otelClear
			err := t.ClearOtel()
			otelDone <- struct{}{}
			if err != nil {
				return err
			}
			<-otelExit
			return nil
		})
		if err != nil {
			select {
			case started <- errno(err):
			default:
			}
		}
	}()
	return <-started
}

// mixed_go_otel_workers tells the workers to clear (phase 1: returns once n
// of them have) or to exit (phase 2). 0.
//
//export mixed_go_otel_workers
func mixed_go_otel_workers(phase, n C.int) C.int {
	switch phase {
	case 1:
		close(otelClear)
		for i := 0; i < int(n); i++ {
			<-otelDone
		}
	case 2:
		close(otelExit)
	}
	return 0
}

func main() {}
