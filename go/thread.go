package tld

import (
	"runtime"
	"syscall"
	"unsafe"
)

// Thread is the calling goroutine's OS thread, for the duration of a
// [WithThread] callback. It is valid only inside that callback and only on
// the goroutine running it; every [Value] and [RawValue] obtained from it
// panics when used after the callback returned.
type Thread struct {
	live bool
	tid  int
}

// WithThread locks the calling goroutine to its OS thread, calls fn with a
// handle to that thread's data, and unlocks when fn returns (or panics). It
// returns fn's error.
//
// Values obtained inside fn are this thread's and only this thread's: BPF
// sees them on this thread's task. They stay in place after fn returns (a
// later WithThread on the same thread sees them again), but the handles do
// not: using one afterwards panics. If the goroutine was already locked
// (runtime.LockOSThread), it stays locked after fn returns. fn must not call
// runtime.UnlockOSThread more often than it calls runtime.LockOSThread: that
// would unlock the goroutine while its handles are still valid.
func WithThread(fn func(t *Thread) error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	t := &Thread{live: true}
	defer func() { t.live = false }()
	return fn(t)
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
// the thread's block on its first access).
func (t *Thread) data(op string, k RawKey) (unsafe.Pointer, error) {
	t.check()
	return threadData(op, k)
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

// Set stores x as the value of the OS thread running the calling goroutine:
// one C call that finds the thread's value and stores (values over 8 bytes:
// the goroutine is locked for the call). Meaningful only when the goroutine
// is locked to its thread (runtime.LockOSThread): otherwise the value lands
// on whichever thread ran the call. Errors as [Key.On].
func (k Key[T]) Set(x T) error {
	if unsafe.Sizeof(x) <= 8 && k.raw.size != 0 {
		var word uint64
		*(*T)(unsafe.Pointer(&word)) = x
		if cStoreWord(k.raw.off, word, k.raw.size) {
			return nil
		}
	}
	// Larger values, and failures: the error message is per thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p, err := threadData("set", k.raw)
	if err != nil {
		return err
	}
	*(*T)(p) = x
	return nil
}

// Get returns the value of the OS thread running the calling goroutine, with
// the caveats of [Key.Set].
func (k Key[T]) Get() (T, error) {
	var zero T
	if unsafe.Sizeof(zero) <= 8 && k.raw.size != 0 {
		if word, ok := cLoadWord(k.raw.off, k.raw.size); ok {
			return *(*T)(unsafe.Pointer(&word)), nil
		}
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p, err := threadData("get", k.raw)
	if err != nil {
		return zero, err
	}
	return *(*T)(p), nil
}

// UnsafePointer returns the calling thread's pointer to the value, without
// locking anything: the escape hatch for a goroutine that locked itself to
// its thread (runtime.LockOSThread) and keeps the pointer only while it stays
// locked. Unlocked, the pointer may belong to another thread by the time it
// is used. Errors as [Key.On].
func (k Key[T]) UnsafePointer() (*T, error) {
	p, err := threadData("unsafe pointer", k.raw)
	if err != nil {
		return nil, err
	}
	return (*T)(p), nil
}

// Store copies src (at most Size() bytes, else syscall.E2BIG) into the value
// of the OS thread running the calling goroutine, with the caveats of
// [Key.Set].
func (k RawKey) Store(src []byte) error {
	if len(src) > k.size {
		return newError("store", k.name, syscall.E2BIG, "more bytes than the key's size")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p, err := threadData("store", k)
	if err != nil {
		return err
	}
	copy(unsafe.Slice((*byte)(p), k.size), src)
	return nil
}

// Load copies the value of the OS thread running the calling goroutine into
// dst and returns the bytes copied, with the caveats of [Key.Set].
func (k RawKey) Load(dst []byte) (int, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p, err := threadData("load", k)
	if err != nil {
		return 0, err
	}
	return copy(dst, unsafe.Slice((*byte)(p), k.size)), nil
}
