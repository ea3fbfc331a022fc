package tld

import (
	"runtime"
	"sync"
	"syscall"
	"unsafe"
)

// Thread is the calling goroutine's OS thread, for the duration of a
// [WithThread] callback. It is valid only inside that callback and only on
// the goroutine running it; every [Value] and [RawValue] obtained from it
// panics when used after the callback returned.
type Thread struct {
	live bool
	keep bool
	tid  int
	// The values the callback reached through this Thread, each with what it
	// held before: WithThread puts them back before unlocking. Taken from
	// savedPool on the first data access and returned by end, so that a
	// callback allocates only the small Thread itself.
	saved *savedValues
	// The thread's OpenTelemetry record as it was before the callback first
	// changed it (SetOtel, ClearOtel, WithOtel), for end to put back.
	otel *otelState
}

// otelState is a saved record plus the buffer SetOtel packs attributes
// into, pooled so that a span activation allocates nothing.
type otelState struct {
	saved otelSaved
	buf   []byte
}

var otelPool = sync.Pool{New: func() any { return new(otelState) }}

type savedValues struct{ list []savedValue }

var savedPool = sync.Pool{New: func() any { return &savedValues{list: make([]savedValue, 0, 4)} }}

// savedValue is one key's value as it was before the callback first
// touched it, and where it lives in this thread's block.
type savedValue struct {
	off  int16
	size int
	p    unsafe.Pointer
	word [8]byte // values up to 8 bytes
	big  []byte  // larger values
}

func (s *savedValue) old() []byte {
	if s.big != nil {
		return s.big
	}
	return s.word[:s.size]
}

// WithThread locks the calling goroutine to its OS thread, calls fn with a
// handle to that thread's data, and, when fn returns (or panics), puts back
// every value fn changed through the handle and unlocks. It returns fn's
// error.
//
// Values set inside fn are this thread's and only this thread's: BPF sees
// them on this thread's task while fn runs. Before unlocking, WithThread
// restores each key reached through t ([Key.On], [Key.Set], [RawKey.Store]...)
// to the value it had when fn first reached it, and the OpenTelemetry record
// to what it was before fn first changed it ([Thread.SetOtel]), so an OS thread that goes
// back to the Go scheduler carries no hint of a finished callback (a request
// id, a priority) into whatever goroutine runs there next. Nested calls each
// restore their own changes. [Thread.Keep] opts out, for a thread that stays
// the caller's after fn returns.
//
// Handles do not outlive fn: using one afterwards panics. If the goroutine
// was already locked (runtime.LockOSThread), it stays locked after fn
// returns. fn must not call runtime.UnlockOSThread more often than it calls
// runtime.LockOSThread: that would unlock the goroutine while its handles are
// still valid. Values written through [Key.UnsafePointer] or by other
// languages' bindings are not tracked and not restored.
func WithThread(fn func(t *Thread) error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	t := &Thread{live: true}
	defer t.end()
	return fn(t)
}

// end invalidates t's handles and, unless [Thread.Keep] was called, restores
// the values the callback reached. It runs on the locked thread.
func (t *Thread) end() {
	t.live = false
	if o := t.otel; o != nil {
		t.otel = nil
		if !t.keep {
			cOtelRestore(&o.saved) // fails only without a block: nothing to restore into
		}
		otelPool.Put(o)
	}
	saved := t.saved
	if saved == nil {
		return
	}
	t.saved = nil
	defer func() {
		clear(saved.list) // drop the larger values' buffers
		saved.list = saved.list[:0]
		savedPool.Put(saved)
	}()
	if t.keep || len(saved.list) == 0 {
		return
	}
	// The block may have been released during the callback (tld_free from
	// another language on this thread): look the data pointer up again, so a
	// restore never writes into a block this thread no longer owns.
	first := &saved.list[0]
	p, _ := cData(first.off)
	if p == nil {
		return // no block now: nothing carries the callback's values
	}
	moved := p != first.p
	for i := len(saved.list) - 1; i >= 0; i-- {
		s := &saved.list[i]
		dst := s.p
		if moved {
			if dst, _ = cData(s.off); dst == nil {
				continue
			}
		}
		copy(unsafe.Slice((*byte)(dst), s.size), s.old())
	}
}

// Keep leaves the values the callback sets in place after it returns,
// instead of restoring them. Call it only when the OS thread stays the
// caller's after the callback: a goroutine that called runtime.LockOSThread
// itself and never unlocks (the thread ends with it), or a function exported
// to C (//export) that runs on a thread C code created and owns. On a
// goroutine that unlocks afterwards, kept values stay on a thread the Go
// scheduler hands to other goroutines, and BPF attributes them to those.
// Panics after the callback returned.
func (t *Thread) Keep() {
	t.check()
	t.keep = true
}

// ID returns the thread's kernel id (gettid), the tid BPF programs and
// `tld dump` report for it.
func (t *Thread) ID() int {
	t.check()
	if t.tid == 0 {
		t.tid = syscall.Gettid()
	}
	return t.tid
}

// check panics unless t is valid. A nil t (the zero Value) panics with a
// nil dereference: no separate test, so that Value.Set stays one load and a
// branch away from a plain store.
func (t *Thread) check() {
	if !t.live {
		panic("tld: Thread or value used after its WithThread callback returned")
	}
}

// data returns the thread's pointer for the key (allocating and registering
// the thread's block on its first access). The first time the callback
// reaches a key, its current value is saved for [WithThread] to restore.
func (t *Thread) data(op string, k RawKey) (unsafe.Pointer, error) {
	t.check()
	if t.saved == nil {
		t.saved = savedPool.Get().(*savedValues)
	}
	for i := range t.saved.list {
		if s := &t.saved.list[i]; s.off == k.off && k.size != 0 {
			return s.p, nil
		}
	}
	p, err := threadData(op, k)
	if err != nil {
		return nil, err
	}
	s := savedValue{off: k.off, size: k.size, p: p}
	if k.size <= len(s.word) {
		copy(s.word[:], unsafe.Slice((*byte)(p), k.size))
	} else {
		s.big = append([]byte(nil), unsafe.Slice((*byte)(p), k.size)...)
	}
	t.saved.list = append(t.saved.list, s)
	return p, nil
}

// threadData is tld_data for the calling thread; the caller holds the
// goroutine locked.
func threadData(op string, k RawKey) (unsafe.Pointer, error) {
	if k.size == 0 {
		return nil, newError(op, k.name, syscall.EINVAL, "not a key: create one with CreateKey, GetOrCreateKey or FindKey")
	}
	p, err := cData(k.off)
	if p == nil {
		errno, ok := err.(syscall.Errno)
		if !ok || errno == 0 {
			errno = syscall.ENOMEM
		}
		return nil, newError(op, k.name, errno, "no data for this thread: "+lastError())
	}
	return p, nil
}

// Value is a thread's value of a [Key]: a checked pointer into the thread's
// block, valid during the [WithThread] callback that produced it.
type Value[T any] struct {
	p *T
	t *Thread
}

// On returns t's value of the key. The thread's first access allocates its
// block and registers it with every attached map; later ones are a few
// loads. Values start zeroed. Errors wrap syscall.EINVAL for the zero Key,
// and the cause (EPERM, EACCES, ENOMEM...) when the thread's block cannot be
// allocated or registered with an attached map; the message names it.
// Panics if t is no longer valid.
func (k Key[T]) On(t *Thread) (Value[T], error) {
	p, err := t.data("thread data", k.raw)
	if err != nil {
		return Value[T]{}, err
	}
	return Value[T]{p: (*T)(p), t: t}, nil
}

// Set stores x as the thread's value: a plain store, which BPF sees at once.
// Panics after the WithThread callback returned.
func (v Value[T]) Set(x T) {
	v.t.check()
	*v.p = x
}

// Get returns the thread's value. Panics after the WithThread callback
// returned.
func (v Value[T]) Get() T {
	v.t.check()
	return *v.p
}

// UnsafePointer returns the raw pointer behind v: the escape hatch. It is
// valid only while the goroutine stays locked to this thread (inside the
// callback, or after it if the goroutine called runtime.LockOSThread itself
// and has not unlocked) and the thread lives. Nothing checks: after the
// goroutine moved it writes another thread's value, after the thread exited
// freed memory. Panics if v is no longer valid.
func (v Value[T]) UnsafePointer() *T {
	v.t.check()
	return v.p
}

// RawValue is a thread's value of a [RawKey], valid during the [WithThread]
// callback that produced it.
type RawValue struct {
	p    unsafe.Pointer
	size int
	t    *Thread
}

// On returns t's value of the key, as [Key.On].
func (k RawKey) On(t *Thread) (RawValue, error) {
	p, err := t.data("thread data", k)
	if err != nil {
		return RawValue{}, err
	}
	return RawValue{p: p, size: k.size, t: t}, nil
}

// Len returns the value's size in bytes.
func (v RawValue) Len() int { return v.size }

// Store copies src into the value; src must be at most Len() bytes (bytes
// past len(src) are left as they are). Returns the bytes copied. Panics
// after the WithThread callback returned, or if src is too long.
func (v RawValue) Store(src []byte) int {
	v.t.check()
	if len(src) > v.size {
		panic("tld: RawValue.Store: more bytes than the key's size")
	}
	return copy(unsafe.Slice((*byte)(v.p), v.size), src)
}

// Load copies the value into dst and returns the bytes copied (at most
// Len()). Panics after the WithThread callback returned.
func (v RawValue) Load(dst []byte) int {
	v.t.check()
	return copy(dst, unsafe.Slice((*byte)(v.p), v.size))
}

// UnsafeBytes returns the value's memory as a slice: the escape hatch, with
// the rules of [Value.UnsafePointer].
func (v RawValue) UnsafeBytes() []byte {
	v.t.check()
	return unsafe.Slice((*byte)(v.p), v.size)
}

// Set stores x as t's value of the key: shorthand for [Key.On] then
// [Value.Set], restored like them when the [WithThread] callback returns.
// The first call for a key on t looks the value up (one C call); later ones
// are a plain store. Errors as [Key.On]. Panics if t is no longer valid.
//
// There is no form without a Thread: a value written from a goroutine that
// is not locked to its OS thread lands on whichever thread ran the write,
// and stays there for BPF to attribute to the next goroutine that runs on it.
func (k Key[T]) Set(t *Thread, x T) error {
	p, err := t.data("set", k.raw)
	if err != nil {
		return err
	}
	*(*T)(p) = x
	return nil
}

// Get returns t's value of the key, as [Key.Set].
func (k Key[T]) Get(t *Thread) (T, error) {
	p, err := t.data("get", k.raw)
	if err != nil {
		var zero T
		return zero, err
	}
	return *(*T)(p), nil
}

// UnsafePointer returns the calling thread's pointer to the value, without
// locking anything: the escape hatch for a goroutine that locked itself to
// its thread (runtime.LockOSThread) and keeps the pointer only while it stays
// locked. Unlocked, the pointer may belong to another thread by the time it
// is used. Writes through it are not restored by [WithThread]. Errors as
// [Key.On].
func (k Key[T]) UnsafePointer() (*T, error) {
	p, err := threadData("unsafe pointer", k.raw)
	if err != nil {
		return nil, err
	}
	return (*T)(p), nil
}

// Store copies src (at most Size() bytes, else syscall.E2BIG) into t's value
// of the key; bytes past len(src) are left as they are. As [Key.Set].
func (k RawKey) Store(t *Thread, src []byte) error {
	if len(src) > k.size {
		return newError("store", k.name, syscall.E2BIG, "more bytes than the key's size")
	}
	p, err := t.data("store", k)
	if err != nil {
		return err
	}
	copy(unsafe.Slice((*byte)(p), k.size), src)
	return nil
}

// Load copies t's value of the key into dst and returns the bytes copied, as
// [Key.Set].
func (k RawKey) Load(t *Thread, dst []byte) (int, error) {
	p, err := t.data("load", k)
	if err != nil {
		return 0, err
	}
	return copy(dst, unsafe.Slice((*byte)(p), k.size)), nil
}
