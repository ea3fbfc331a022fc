package tld

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"unsafe"

	"tld.dev/tld/go/internal/dlcopy"
)

func init() {
	scenarios["errors"] = scenarioErrors
	scenarios["no-space"] = scenarioNoSpace
	scenarios["race"] = scenarioRace
	scenarios["cross-copy"] = scenarioCrossCopy
	scenarios["restore-values"] = scenarioRestoreValues
	scenarios["must-create"] = scenarioMustCreate
}

func gettid() int { return syscall.Gettid() }

// TestErrors: every error a key or map operation reports, with its errno and
// a message naming the key.
func TestErrors(t *testing.T) { inChild(t, "errors") }

// TestNoSpace: ENOSPC once every metadata slot is taken.
func TestNoSpace(t *testing.T) { inChild(t, "no-space") }

// TestCreationRace: goroutines racing to create the same keys agree on them.
func TestCreationRace(t *testing.T) { inChild(t, "race") }

// TestCrossCopy: a C library loaded into the Go program (a dlopen'ed copy of
// libtld.so) shares the Go package's runtime: one metadata page, one set of
// keys, one block per thread.
func TestCrossCopy(t *testing.T) { inChild(t, "cross-copy") }

// TestTypeChecks: Key[T] refuses types that cannot live outside the Go heap.
func TestTypeChecks(t *testing.T) {
	type withString struct {
		A int
		S string
	}
	type nested struct {
		A [2]struct{ P *int }
	}
	type ok struct {
		A uint16
		B [3]int8
		C float64
		D bool
		E complex64
		F uintptr
	}
	refused := []struct {
		name string
		err  error
	}{
		{"*int", try[*int]()},
		{"string", try[string]()},
		{"[]byte", try[[]byte]()},
		{"map", try[map[int]int]()},
		{"chan", try[chan int]()},
		{"func", try[func()]()},
		{"interface", try[any]()},
		{"unsafe.Pointer", try[unsafe.Pointer]()},
		{"struct with string", try[withString]()},
		{"array of struct with pointer", try[nested]()},
		{"zero size", try[struct{}]()},
		{"zero-length array", try[[0]int64]()},
	}
	for _, r := range refused {
		if !errors.Is(r.err, syscall.EINVAL) || !strings.Contains(r.err.Error(), "typecheck") {
			t.Errorf("%s: got %v, want EINVAL naming the key", r.name, r.err)
		}
	}
	if size, err := checkType[ok]("create key", "typecheck"); err != nil || size != int(unsafe.Sizeof(ok{})) {
		t.Errorf("plain struct: size %d, %v", size, err)
	}
}

func try[T any]() error {
	_, err := CreateKey[T]("typecheck")
	return err
}

// TestHandleInvalidAfterCallback: a Value kept past its WithThread callback
// panics instead of writing whatever thread the goroutine runs on now.
func TestHandleInvalidAfterCallback(t *testing.T) {
	key, err := GetOrCreateKey[uint32]("test_stale_handle")
	if err != nil {
		t.Fatal(err)
	}
	raw := key.Raw()
	var kept Value[uint32]
	var keptRaw RawValue
	var keptThread *Thread
	err = WithThread(func(th *Thread) error {
		var err error
		if kept, err = key.On(th); err != nil {
			return err
		}
		if keptRaw, err = raw.On(th); err != nil {
			return err
		}
		keptThread = th
		kept.Set(5)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, use := range map[string]func(){
		"Value.Set":            func() { kept.Set(6) },
		"Value.Get":            func() { kept.Get() },
		"Value.UnsafePointer":  func() { kept.UnsafePointer() },
		"RawValue.Store":       func() { keptRaw.Store([]byte{1}) },
		"RawValue.Load":        func() { keptRaw.Load(make([]byte, 4)) },
		"RawValue.UnsafeBytes": func() { keptRaw.UnsafeBytes() },
		"Thread.ID":            func() { keptThread.ID() },
		"Key.On":               func() { key.On(keptThread) },
	} {
		if !panics(use) {
			t.Errorf("%s after the callback returned did not panic", name)
		}
	}
	var zero Value[uint32]
	if !panics(func() { zero.Set(1) }) {
		t.Error("the zero Value did not panic")
	}
	var zeroRaw RawValue
	if !panics(func() { zeroRaw.Store(nil) }) {
		t.Error("the zero RawValue did not panic")
	}
}

func panics(f func()) (did bool) {
	defer func() { did = recover() != nil }()
	f()
	return false
}

// TestZeroKey: the zero Key is not a key.
func TestZeroKey(t *testing.T) {
	var k Key[int64]
	for name, use := range map[string]func(th *Thread) error{
		"Key.On":  func(th *Thread) error { _, err := k.On(th); return err },
		"Key.Set": func(th *Thread) error { return k.Set(th, 1) },
		"Key.Get": func(th *Thread) error { _, err := k.Get(th); return err },
	} {
		if err := WithThread(use); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("zero %s: %v, want EINVAL", name, err)
		}
	}
}

// TestPerCallAPI: Key.Set/Get and RawKey.Store/Load see the same memory as
// the WithThread handles.
func TestPerCallAPI(t *testing.T) {
	key, err := GetOrCreateKey[int16]("test_per_call")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := GetOrCreateRawKey("test_per_call_raw", 3)
	if err != nil {
		t.Fatal(err)
	}
	err = WithThread(func(th *Thread) error {
		if err := key.Set(th, -12); err != nil {
			return err
		}
		if err := raw.Store(th, []byte{1, 2, 3}); err != nil {
			return err
		}
		v, err := key.On(th)
		if err != nil {
			return err
		}
		rv, err := raw.On(th)
		if err != nil {
			return err
		}
		buf := make([]byte, 3)
		rv.Load(buf)
		if v.Get() != -12 || string(buf) != "\x01\x02\x03" {
			return fmt.Errorf("handles see %d, %v", v.Get(), buf)
		}
		v.Set(40)
		if got, err := key.Get(th); err != nil || got != 40 {
			return fmt.Errorf("Key.Get = %d, %v", got, err)
		}
		if n, err := raw.Load(th, buf[:2]); err != nil || n != 2 {
			return fmt.Errorf("RawKey.Load = %d, %v", n, err)
		}
		if err := raw.Store(th, make([]byte, 4)); !errors.Is(err, syscall.E2BIG) {
			return fmt.Errorf("RawKey.Store of 4 bytes into 3: %v, want E2BIG", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var stale *Thread
	WithThread(func(th *Thread) error { stale = th; return nil })
	if !panics(func() { key.Set(stale, 1) }) || !panics(func() { raw.Load(stale, nil) }) || !panics(stale.Keep) {
		t.Error("the per-call API with a Thread whose callback returned did not panic")
	}
}

// TestRestoreValues: what WithThread restores when the callback returns:
// every key reached through the Thread (typed, raw, larger than a word, set
// through a handle or the per-call API), nested callbacks their own changes,
// a panicking callback too; Keep keeps. BPF's view of the same is
// TestRestore.
// It runs in a child: its keys would take the in-process tests' reserve.
func TestRestoreValues(t *testing.T) { inChild(t, "restore-values") }

func scenarioRestoreValues() error {
	small := MustCreateStaticKey[uint32]("test_restore_small")
	big, err := GetOrCreateRawKey("test_restore_big", 24)
	if err != nil {
		return err
	}
	// Locked across the callbacks: each one runs on this same thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	read := func() (uint32, []byte) {
		var v uint32
		buf := make([]byte, 24)
		err := WithThread(func(th *Thread) error {
			var err error
			if v, err = small.Get(th); err != nil {
				return err
			}
			_, err = big.Load(th, buf)
			return err
		})
		if err != nil {
			panic(err)
		}
		return v, buf
	}
	before := bytes.Repeat([]byte{7}, 24)
	WithThread(func(th *Thread) error {
		th.Keep()
		small.Set(th, 11)
		return big.Store(th, before)
	})
	if v, b := read(); v != 11 || !bytes.Equal(b, before) {
		return fmt.Errorf("kept values read back as %d, %x", v, b)
	}
	err = WithThread(func(th *Thread) error {
		v, err := small.On(th)
		if err != nil {
			return err
		}
		v.Set(12)
		small.Set(th, 13) // the same key twice: restored to its first value
		if err := big.Store(th, bytes.Repeat([]byte{8}, 24)); err != nil {
			return err
		}
		WithThread(func(inner *Thread) error { return small.Set(inner, 99) })
		if got, _ := small.Get(th); got != 13 {
			return fmt.Errorf("after the nested callback the value is %d, want 13", got)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if v, b := read(); v != 11 || !bytes.Equal(b, before) {
		return fmt.Errorf("after the callback: %d, %x; want 11, %x", v, b, before)
	}
	panics(func() {
		WithThread(func(th *Thread) error {
			small.Set(th, 14)
			panic("callback failed")
		})
	})
	if v, _ := read(); v != 11 {
		return fmt.Errorf("after a panicking callback: %d, want 11", v)
	}
	return nil
}

// TestMustCreateStaticKey: the panic carries the error.
func TestMustCreateStaticKey(t *testing.T) { inChild(t, "must-create") }

func scenarioMustCreate() (failed error) {
	MustCreateStaticKey[int64]("test_must_static")
	defer func() {
		err, _ := recover().(error)
		failed = wantErr(err, syscall.EEXIST, "test_must_static")
	}()
	MustCreateStaticKey[int64]("test_must_static")
	return fmt.Errorf("a second MustCreateStaticKey of the same name did not panic")
}

// wantErr checks errno and that the message names the key.
func wantErr(err error, errno syscall.Errno, name string) error {
	if !errors.Is(err, errno) {
		return fmt.Errorf("%q: got %v, want %v", name, err, errno)
	}
	var e *Error
	if !errors.As(err, &e) || e.Errno != errno {
		return fmt.Errorf("%q: %v is not a *tld.Error with errno %v", name, err, errno)
	}
	if name != "" && !strings.Contains(err.Error(), name) {
		return fmt.Errorf("%q: message %q does not name the key", name, err)
	}
	return nil
}

func scenarioErrors() error {
	var errs []error
	check := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	// EEXIST: strict creation of a taken name, or sharing with another size.
	dup, err := CreateKey[int32]("dup")
	if err != nil {
		return err
	}
	_, err = CreateKey[int32]("dup")
	check(wantErr(err, syscall.EEXIST, "dup"))
	if !errors.Is(err, fs.ErrExist) {
		check(fmt.Errorf("EEXIST is not fs.ErrExist: %v", err))
	}
	_, err = CreateRawKey("dup", 4)
	check(wantErr(err, syscall.EEXIST, "dup"))
	_, err = GetOrCreateKey[int64]("dup")
	check(wantErr(err, syscall.EEXIST, "dup"))
	_, err = FindKey[int64]("dup")
	check(wantErr(err, syscall.EEXIST, "dup"))
	if k, err := GetOrCreateKey[uint32]("dup"); err != nil || k.Offset() != dup.Offset() {
		check(fmt.Errorf("get-or-create of dup with its size: %v, offset %d want %d", err, k.Offset(), dup.Offset()))
	}
	if k, err := FindKey[[4]byte]("dup"); err != nil || k.Offset() != dup.Offset() {
		check(fmt.Errorf("find dup: %v", err))
	}

	// ENAMETOOLONG, EINVAL: names and sizes.
	long := strings.Repeat("n", 62)
	_, err = CreateKey[int32](long)
	check(wantErr(err, syscall.ENAMETOOLONG, long))
	_, err = FindRawKey(long)
	check(wantErr(err, syscall.ENAMETOOLONG, long))
	if _, err := CreateKey[int32](long[:61]); err != nil {
		check(fmt.Errorf("61-byte name: %v", err))
	}
	_, err = CreateKey[int32]("")
	check(wantErr(err, syscall.EINVAL, ""))
	_, err = CreateKey[int32]("nul\x00name")
	check(wantErr(err, syscall.EINVAL, "nul\\x00name"))
	_, err = FindRawKey("nul\x00name")
	check(wantErr(err, syscall.EINVAL, "nul\\x00name"))
	_, err = CreateRawKey("zero", 0)
	check(wantErr(err, syscall.EINVAL, "zero"))
	_, err = GetOrCreateRawKey("negative", -1)
	check(wantErr(err, syscall.EINVAL, "negative"))
	_, err = CreateKey[*int]("pointer")
	check(wantErr(err, syscall.EINVAL, "pointer"))

	// ENOENT.
	_, err = FindKey[int32]("missing")
	check(wantErr(err, syscall.ENOENT, "missing"))
	_, err = FindRawKey("missing")
	check(wantErr(err, syscall.ENOENT, "missing"))

	// Maps: nothing pinned, not a map, a bad descriptor.
	missing := filepath.Join(os.TempDir(), fmt.Sprintf("tld-go-no-such-map-%d", os.Getpid()))
	check(wantErr(Attach(missing), syscall.ENOENT, missing))
	notMap, err := os.CreateTemp("", "tld-go-not-a-map")
	if err != nil {
		return err
	}
	defer os.Remove(notMap.Name())
	defer notMap.Close()
	check(wantErr(Attach(notMap.Name()), syscall.EINVAL, notMap.Name()))
	check(wantErr(AttachFD(int(notMap.Fd())), syscall.EINVAL, ""))
	check(wantErr(AttachFD(-1), syscall.EINVAL, ""))

	// E2BIG: once a thread has data, keys come out of the 64-byte reserve
	// (dup took 8 of it, the 61-byte name's key another 8).
	err = WithThread(func(t *Thread) error {
		v, err := dup.On(t)
		if err != nil {
			return err
		}
		v.Set(1)
		return nil
	})
	if err != nil {
		return err
	}
	_, err = CreateRawKey("big", 64)
	check(wantErr(err, syscall.E2BIG, "big"))
	_, err = GetOrCreateKey[[49]byte]("big_typed")
	check(wantErr(err, syscall.E2BIG, "big_typed"))
	if _, err := CreateKey[[48]byte]("fits"); err != nil {
		check(fmt.Errorf("48 bytes of the 48 left: %v", err))
	}
	_, err = CreateKey[byte]("one_more")
	check(wantErr(err, syscall.E2BIG, "one_more"))
	// EBUSY: the reserve is frozen with the first block.
	check(wantErr(SetDynamicReserve(128), syscall.EBUSY, ""))
	return errors.Join(errs...)
}

func scenarioNoSpace() error {
	slots := os.Getpagesize()/64 - 1
	for i := 0; i < slots; i++ {
		if _, err := CreateStaticRawKey(fmt.Sprintf("slot_%d", i), 1); err != nil {
			return fmt.Errorf("slot %d of %d: %v", i, slots, err)
		}
	}
	_, err := CreateStaticRawKey("one_too_many", 1)
	if err := wantErr(err, syscall.ENOSPC, "one_too_many"); err != nil {
		return err
	}
	_, err = GetOrCreateKey[int32]("one_too_many")
	if err := wantErr(err, syscall.ENOSPC, "one_too_many"); err != nil {
		return err
	}
	// Every slot is usable, on a thread's data.
	return WithThread(func(t *Thread) error {
		last, err := FindRawKey(fmt.Sprintf("slot_%d", slots-1))
		if err != nil {
			return err
		}
		v, err := last.On(t)
		if err != nil {
			return err
		}
		v.Store([]byte{0xff})
		return nil
	})
}

func scenarioRace() error {
	const goroutines, names = 32, 24
	type result struct {
		strictOK  bool
		strictErr error
		offs      [names]int
		err       error
	}
	// Room for every key: by default keys created before any thread has
	// data still come out of the 64-byte dynamic reserve.
	if err := SetDynamicReserve(8 * (names + 1)); err != nil {
		return err
	}
	results := make([]result, goroutines)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[g]
			<-start
			_, err := CreateKey[uint32]("strict")
			r.strictOK, r.strictErr = err == nil, err
			for i := 0; i < names; i++ {
				// Each goroutine walks the names from a different start.
				n := (i + g) % names
				k, err := GetOrCreateKey[uint64](fmt.Sprintf("shared_%d", n))
				if err != nil {
					r.err = err
					return
				}
				r.offs[n] = k.Offset()
			}
		}()
	}
	close(start)
	wg.Wait()
	winners := 0
	for g, r := range results {
		if r.err != nil {
			return fmt.Errorf("goroutine %d: %v", g, r.err)
		}
		if r.strictOK {
			winners++
		} else if err := wantErr(r.strictErr, syscall.EEXIST, "strict"); err != nil {
			return err
		}
		if r.offs != results[0].offs {
			return fmt.Errorf("goroutines 0 and %d disagree on offsets: %v, %v", g, results[0].offs, r.offs)
		}
	}
	if winners != 1 {
		return fmt.Errorf("%d goroutines created the strict key, want 1", winners)
	}
	seen := map[int]string{}
	strict, err := FindKey[uint32]("strict")
	if err != nil {
		return err
	}
	seen[strict.Offset()] = "strict"
	for n, off := range results[0].offs {
		name := fmt.Sprintf("shared_%d", n)
		if other, dup := seen[off]; dup {
			return fmt.Errorf("%s and %s share offset %d", name, other, off)
		}
		seen[off] = name
		if off%8 != 0 {
			return fmt.Errorf("%s at offset %d, not 8-aligned", name, off)
		}
		if k, err := FindRawKey(name); err != nil || k.Offset() != off || k.Size() != 8 {
			return fmt.Errorf("find %s: %v, offset %d size %d, want %d 8", name, err, k.Offset(), k.Size(), off)
		}
	}
	return nil
}

func scenarioCrossCopy() error {
	// A copy of libtld.so under another name is a separate library to the
	// dynamic loader: its own code and statics, like a Python extension.
	src, err := filepath.Abs("../target/debug/libtld.so")
	if err != nil {
		return err
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("%v (run `make build` or `cargo build -p task-local-data-capi`)", err)
	}
	dir, err := os.MkdirTemp("", "tld-go-cross-copy")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	copyPath := filepath.Join(dir, "libtld-copy.so")
	if err := os.WriteFile(copyPath, data, 0o755); err != nil {
		return err
	}
	lib, err := dlcopy.Open(copyPath)
	if err != nil {
		return err
	}
	if f := lib.SymbolFile(); f != copyPath {
		return fmt.Errorf("the copy's tld_create_key lives in %q, not %q", f, copyPath)
	}

	// A key created through the C copy is found by Go at the same offset.
	off := lib.CreateKey("from_c", 8)
	if off < 0 {
		return fmt.Errorf("C copy: tld_create_key(from_c) = %d", off)
	}
	fromC, err := FindKey[uint64]("from_c")
	if err != nil {
		return err
	}
	if fromC.Offset() != off {
		return fmt.Errorf("from_c: C offset %d, Go offset %d", off, fromC.Offset())
	}
	// And the other way round.
	fromGo, err := CreateKey[int32]("from_go")
	if err != nil {
		return err
	}
	if got := lib.FindKey("from_go"); got != fromGo.Offset() {
		return fmt.Errorf("from_go: Go offset %d, C copy finds %d", fromGo.Offset(), got)
	}
	if got := lib.CreateKey("from_go", 4); got != -int(syscall.EEXIST) {
		return fmt.Errorf("C copy creating from_go again: %d, want -EEXIST", got)
	}
	if p, q := MetadataPage(), lib.MetadataPage(); p == 0 || p != q {
		return fmt.Errorf("metadata pages differ: Go %#x, C copy %#x", p, q)
	}
	// One block per thread: both copies hand this thread the same memory.
	return WithThread(func(t *Thread) error {
		v, err := fromC.On(t)
		if err != nil {
			return err
		}
		v.Set(0xfeedface)
		addr := lib.Data(off)
		if addr != uintptr(unsafe.Pointer(v.UnsafePointer())) {
			return fmt.Errorf("this thread's from_c: Go %p, C copy %#x", v.UnsafePointer(), addr)
		}
		return nil
	})
}
