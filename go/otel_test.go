package tld

// OpenTelemetry records set from goroutines inside WithThread, compared with
// what an independent BPF reader (`tld dump --json`) sees: the record bytes
// while the callback runs, and the record put back after it returns.

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
)

func init() {
	scenarios["otel"] = scenarioOtel
	scenarios["otel-restore"] = scenarioOtelRestore
	scenarios["otel-errors"] = scenarioOtelErrors
	scenarios["refresh"] = scenarioRefresh
}

// TestOtel: goroutines, each inside WithThread, publish their span; BPF
// sees each thread's record; after WithThread returns it is gone.
func TestOtel(t *testing.T) { inKernelChild(t, "otel") }

// TestOtelRestore: a kept record, a callback's record, a nested WithOtel,
// ClearOtel and a panic, on one thread, as BPF sees them.
func TestOtelRestore(t *testing.T) { inKernelChild(t, "otel-restore") }

// TestOtelErrors: refused records change nothing.
func TestOtelErrors(t *testing.T) { inChild(t, "otel-errors") }

// TestRefresh: after the pin is replaced by another map, Refresh moves the
// threads to it (the watcher is off).
func TestRefresh(t *testing.T) {
	needKernel(t)
	path := pinMap(t)
	inChild(t, "refresh", "TLD_MAP_PATH="+path, "TLD_GO_CLI="+tldCLI(t), "TLD_PIN_WATCH=0")
}

// 64 bytes: `tld dump` shows 64 bytes of a value, so the whole record is compared.
const otelTestRecordSize = 64

// otelSetup gives the record its room before any thread touches tld data.
func otelSetup() error {
	if err := SetOtelRecordSize(otelTestRecordSize); err != nil {
		return err
	}
	k, err := OtelRecordKey()
	if err != nil {
		return err
	}
	if k.Size() != otelTestRecordSize || k.Name() != OtelRecordKeyName {
		return fmt.Errorf("OtelRecordKey = %+v", k)
	}
	return Attach("")
}

func testSpan(i int, flags byte) SpanContext {
	var s SpanContext
	for b := range s.TraceID {
		s.TraceID[b] = byte(0x40 + i + b)
	}
	for b := range s.SpanID {
		s.SpanID[b] = byte(0x10*(i+1) + b)
	}
	s.TraceFlags = flags
	return s
}

type indexedAttr struct {
	index int
	value string
}

// wantRecord lays out an OTEP 4947 record independently of the binding.
func wantRecord(s SpanContext, valid bool, attrs ...indexedAttr) string {
	r := make([]byte, otelTestRecordSize)
	copy(r, s.TraceID[:])
	copy(r[16:], s.SpanID[:])
	if valid {
		r[24] = 1
	}
	r[25] = s.TraceFlags
	at := 28
	for _, a := range attrs {
		r[at], r[at+1] = byte(a.index), byte(len(a.value))
		copy(r[at+2:], a.value)
		at += 2 + len(a.value)
	}
	binary.NativeEndian.PutUint16(r[26:], uint16(at-28))
	return hex.EncodeToString(r)
}

// bpfRecord is the record BPF reads on thread tid ("" if it sees none).
func bpfRecord(tid int) (string, error) {
	threads, _, err := dumpProcess(os.Getpid())
	if err != nil {
		return "", err
	}
	if v := threads[tid][OtelRecordKeyName]; v != nil {
		return v.Hex, nil
	}
	return "", nil
}

// validByte is the record's valid byte as hex ("" if BPF sees no record).
func validByte(rec string) string {
	if len(rec) < 2*25 {
		return ""
	}
	return rec[48:50]
}

func scenarioOtel() error {
	if err := otelSetup(); err != nil {
		return err
	}
	route, err := OtelAttributeIndex("http.route")
	if err != nil {
		return err
	}
	method, err := OtelAttributeIndex("http.method")
	if err != nil {
		return err
	}
	const workers = 8
	type result struct {
		tid  int
		want string
		err  error
	}
	results := make(chan result, workers)
	release := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := WithThread(func(t *Thread) error {
				span, path := testSpan(i, 1), fmt.Sprintf("/users/%d", i)
				if err := t.SetOtel(span, OtelAttribute{"http.route", path}, OtelAttribute{"http.method", "GET"}); err != nil {
					return err
				}
				if got, valid, err := t.Otel(); err != nil || !valid || got != span {
					return fmt.Errorf("worker %d reads back %+v valid %v (%v)", i, got, valid, err)
				}
				results <- result{tid: t.ID(), want: wantRecord(span, true, indexedAttr{route, path}, indexedAttr{method, "GET"})}
				<-release // stay on this thread while BPF reads
				return nil
			})
			if err != nil {
				results <- result{err: err}
			}
		}()
	}
	wants := map[int]string{}
	for i := 0; i < workers; i++ {
		r := <-results
		if r.err != nil {
			close(release)
			return r.err
		}
		wants[r.tid] = r.want
	}
	threads, _, err := dumpProcess(os.Getpid())
	close(release)
	wg.Wait()
	if err != nil {
		return err
	}
	if len(wants) != workers {
		return fmt.Errorf("%d workers ran on %d threads", workers, len(wants))
	}
	for tid, want := range wants {
		v := threads[tid][OtelRecordKeyName]
		if v == nil || v.Hex != want {
			return fmt.Errorf("thread %d: BPF sees record %+v, want %s", tid, v, want)
		}
	}
	// WithThread returned: each thread has the record it had before (none).
	threads, _, err = dumpProcess(os.Getpid())
	if err != nil {
		return err
	}
	for tid := range wants {
		if _, alive := threads[tid]; !alive {
			continue // the Go runtime may let an idle thread go
		}
		v := threads[tid][OtelRecordKeyName]
		if v == nil || validByte(v.Hex) != "00" {
			return fmt.Errorf("thread %d after WithThread: BPF sees record %+v, want valid 0", tid, v)
		}
	}
	return nil
}

func scenarioOtelRestore() error {
	if err := otelSetup(); err != nil {
		return err
	}
	route, err := OtelAttributeIndex("http.route")
	if err != nil {
		return err
	}
	db, err := OtelAttributeIndex("db.system")
	if err != nil {
		return err
	}
	runtime.LockOSThread() // one thread for the whole scenario: the one BPF is asked about
	defer runtime.UnlockOSThread()
	tid := gettid()
	check := func(when, want string) error {
		got, err := bpfRecord(tid)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("%s: BPF sees record %s on thread %d, want %s", when, got, tid, want)
		}
		return nil
	}
	base, request, query := testSpan(1, 0), testSpan(2, 1), testSpan(3, 1)
	wantBase := wantRecord(base, true, indexedAttr{route, "/"})
	// A baseline the thread keeps.
	if err := WithThread(func(t *Thread) error {
		t.Keep()
		return t.SetOtel(base, OtelAttribute{"http.route", "/"})
	}); err != nil {
		return err
	}
	if err := check("after a kept callback", wantBase); err != nil {
		return err
	}
	err = WithThread(func(t *Thread) error {
		if err := t.SetOtel(request, OtelAttribute{"http.route", "/orders"}); err != nil {
			return err
		}
		wantRequest := wantRecord(request, true, indexedAttr{route, "/orders"})
		if err := check("inside the callback", wantRequest); err != nil {
			return err
		}
		err := t.WithOtel(query, []OtelAttribute{{"db.system", "postgresql"}}, func() error {
			return check("inside WithOtel", wantRecord(query, true, indexedAttr{db, "postgresql"}))
		})
		if err != nil {
			return err
		}
		if err := check("after WithOtel", wantRequest); err != nil {
			return err
		}
		// A nested WithThread restores its own change only.
		if err := WithThread(func(t *Thread) error { return t.SetOtel(query) }); err != nil {
			return err
		}
		if err := check("after a nested WithThread", wantRequest); err != nil {
			return err
		}
		if err := t.ClearOtel(); err != nil {
			return err
		}
		if _, valid, err := t.Otel(); err != nil || valid {
			return fmt.Errorf("after ClearOtel: valid %v (%v)", valid, err)
		}
		rec, err := bpfRecord(tid)
		if err != nil {
			return err
		}
		if validByte(rec) != "00" {
			return fmt.Errorf("after ClearOtel: BPF sees record %s, want valid 0", rec)
		}
		return t.SetOtel(request, OtelAttribute{"http.route", "/orders"})
	})
	if err != nil {
		return err
	}
	if err := check("after the callback", wantBase); err != nil {
		return err
	}
	// A panicking callback and a panicking WithOtel restore too.
	func() {
		defer func() { recover() }()
		WithThread(func(t *Thread) error {
			t.SetOtel(request)
			panic("request failed")
		})
	}()
	if err := check("after a panicking callback", wantBase); err != nil {
		return err
	}
	return WithThread(func(t *Thread) error {
		func() {
			defer func() { recover() }()
			t.WithOtel(query, nil, func() error { panic("query failed") })
		}()
		return check("after a panicking WithOtel", wantBase)
	})
}

func scenarioOtelErrors() error {
	if _, err := OtelRecordKey(); err != nil { // default size, 128
		return err
	}
	if err := SetOtelRecordSize(64); !errors.Is(err, syscall.EBUSY) {
		return fmt.Errorf("SetOtelRecordSize after the key exists: %v, want EBUSY", err)
	}
	return WithThread(func(t *Thread) error {
		span := testSpan(5, 1)
		if err := t.SetOtel(span, OtelAttribute{"http.route", "/kept"}); err != nil {
			return err
		}
		half := span
		half.SpanID = [8]byte{}
		cases := []struct {
			what  string
			err   error
			errno syscall.Errno
			in    string
		}{
			{"a trace id without a span id", t.SetOtel(half), syscall.EINVAL, "span id"},
			{"flags without ids", t.SetOtel(SpanContext{TraceFlags: 1}), syscall.EINVAL, "flags"},
			{"a 256-byte value", t.SetOtel(span, OtelAttribute{"http.route", strings.Repeat("v", 256)}), syscall.E2BIG, "255"},
			{"attributes over 100 bytes", t.SetOtel(span, OtelAttribute{"a", strings.Repeat("v", 60)}, OtelAttribute{"b", strings.Repeat("v", 60)}), syscall.E2BIG, ""},
			{"400 attributes", t.SetOtel(span, make([]OtelAttribute, 400)...), syscall.E2BIG, "400"},
			{"an empty name", t.SetOtel(span, OtelAttribute{"", "x"}), syscall.EINVAL, ""},
			{"a NUL in a value", t.SetOtel(span, OtelAttribute{"k", "a\x00b"}), syscall.EINVAL, "NUL"},
			{"a NUL in a name", t.SetOtel(span, OtelAttribute{"k\x00", "b"}), syscall.EINVAL, "NUL"},
			{"a value that is not UTF-8", t.SetOtel(span, OtelAttribute{"k", "\xff"}), syscall.EINVAL, "UTF-8"},
			{"WithOtel with a bad span", t.WithOtel(half, nil, func() error { return errors.New("fn ran") }), syscall.EINVAL, ""},
		}
		for _, c := range cases {
			var te *Error
			if !errors.As(c.err, &te) || te.Errno != c.errno || !strings.Contains(te.Error(), c.in) {
				return fmt.Errorf("%s: %v, want errno %v naming %q", c.what, c.err, c.errno, c.in)
			}
		}
		if _, err := OtelAttributeIndex(strings.Repeat("k", 128)); !errors.Is(err, syscall.EINVAL) {
			return fmt.Errorf("a 128-byte name: %v", err)
		}
		got, valid, err := t.Otel()
		if err != nil || !valid || got != span {
			return fmt.Errorf("after refused records: %+v valid %v (%v), want the first one", got, valid, err)
		}
		return nil
	})
}

func scenarioRefresh() error {
	if err := Attach(""); err != nil {
		return err
	}
	key, err := CreateKey[int64]("refreshed")
	if err != nil {
		return err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := gettid()
	if err := WithThread(func(t *Thread) error { t.Keep(); return key.Set(t, 314) }); err != nil {
		return err
	}
	see := func() (int64, bool, error) {
		threads, _, err := dumpProcess(os.Getpid())
		if err != nil {
			return 0, false, err
		}
		v := threads[tid]["refreshed"]
		if v == nil || v.Int == nil {
			return 0, false, nil
		}
		return *v.Int, true, nil
	}
	if v, ok, err := see(); err != nil || !ok || v != 314 {
		return fmt.Errorf("before the re-pin: BPF sees %d %v (%v)", v, ok, err)
	}
	// Replace the pin with a new map.
	cli, path := os.Getenv("TLD_GO_CLI"), os.Getenv("TLD_MAP_PATH")
	if out, err := exec.Command(cli, "unpin", "--path", path).CombinedOutput(); err != nil {
		return fmt.Errorf("tld unpin: %v: %s", err, out)
	}
	if out, err := exec.Command(cli, "pin", "--path", path).CombinedOutput(); err != nil {
		return fmt.Errorf("tld pin: %v: %s", err, out)
	}
	if _, ok, err := see(); err != nil || ok {
		return fmt.Errorf("the new map before Refresh: BPF sees the thread %v (%v); the watcher should be off", ok, err)
	}
	if err := Refresh(); err != nil {
		return err
	}
	if v, ok, err := see(); err != nil || !ok || v != 314 {
		return fmt.Errorf("after Refresh: BPF sees %d %v (%v) in the new map, want 314", v, ok, err)
	}
	return nil
}
