package tld

// Benchmarks (figures in ../BENCHMARKS.md):
//
//	go test -tags tld_intree,tld_release -run '^$' -bench . -count 5
//
// Writing through the locked thread's value against a plain Go memory write,
// and the per-call API against an empty cgo call, in the same run.

import (
	"testing"
)

var sink *uint64

// BenchmarkPlainWrite: a store to Go heap memory through a pointer (the
// reference for the locked-thread writes).
func BenchmarkPlainWrite(b *testing.B) {
	p := new(uint64)
	sink = p
	for i := 0; i < b.N; i++ {
		*p = uint64(i)
	}
}

func benchKey(b *testing.B) Key[uint64] {
	k, err := GetOrCreateKey[uint64]("bench_u64")
	if err != nil {
		b.Fatal(err)
	}
	return k
}

// BenchmarkValueSet: Value.Set inside WithThread, the safe API (a validity
// check and a store).
func BenchmarkValueSet(b *testing.B) {
	k := benchKey(b)
	err := WithThread(func(t *Thread) error {
		v, err := k.On(t)
		if err != nil {
			return err
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			v.Set(uint64(i))
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkUnsafePointerWrite: a store through the escape hatch's raw pointer
// on a locked goroutine.
func BenchmarkUnsafePointerWrite(b *testing.B) {
	k := benchKey(b)
	err := WithThread(func(t *Thread) error {
		v, err := k.On(t)
		if err != nil {
			return err
		}
		p := v.UnsafePointer()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			*p = uint64(i)
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkEmptyCgoCall: an empty C function through cgo (the reference for
// the per-call API).
func BenchmarkEmptyCgoCall(b *testing.B) {
	for i := 0; i < b.N; i++ {
		cNop()
	}
}

// BenchmarkKeySet: the per-call API inside one WithThread, Key.Set(t, x):
// the Thread's lookup of the key it already reached, a store.
func BenchmarkKeySet(b *testing.B) {
	k := benchKey(b)
	WithThread(func(t *Thread) error {
		if err := k.Set(t, 0); err != nil { // the thread's first access registers it
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			k.Set(t, uint64(i))
		}
		return nil
	})
}

// BenchmarkWithThread: WithThread + Key.On + Value.Set per operation, the
// safe API used per update.
func BenchmarkWithThread(b *testing.B) {
	k := benchKey(b)
	for i := 0; i < b.N; i++ {
		WithThread(func(t *Thread) error {
			v, err := k.On(t)
			if err == nil {
				v.Set(uint64(i))
			}
			return err
		})
	}
}

// OpenTelemetry on span activation: SetOtel + ClearOtel inside WithThread
// (two cgo calls), against BenchmarkCgoNop's empty cgo call.

var benchSpan = SpanContext{TraceID: [16]byte{0x4b, 1}, SpanID: [8]byte{0x51, 2}, TraceFlags: 1}

func benchOtel(b *testing.B, body func(t *Thread) error) {
	if _, err := OtelRecordKey(); err != nil {
		b.Fatal(err)
	}
	err := WithThread(func(t *Thread) error {
		if err := t.SetOtel(benchSpan, OtelAttribute{"http.route", "/users/:id"}); err != nil {
			return err // first access: block, process context, key registered
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if err := body(t); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkOtelSetClear: SetOtel(span) + ClearOtel().
func BenchmarkOtelSetClear(b *testing.B) {
	benchOtel(b, func(t *Thread) error {
		if err := t.SetOtel(benchSpan); err != nil {
			return err
		}
		return t.ClearOtel()
	})
}

// BenchmarkOtelSetAttrClear: SetOtel(span, one attribute by name) + ClearOtel().
func BenchmarkOtelSetAttrClear(b *testing.B) {
	attr := OtelAttribute{"http.route", "/users/:id"}
	benchOtel(b, func(t *Thread) error {
		if err := t.SetOtel(benchSpan, attr); err != nil {
			return err
		}
		return t.ClearOtel()
	})
}

// BenchmarkOtelWithOtel: a nested span, WithOtel(span, one attribute, fn):
// save, set, restore.
func BenchmarkOtelWithOtel(b *testing.B) {
	attrs := []OtelAttribute{{"http.route", "/users/:id"}}
	nop := func() error { return nil }
	benchOtel(b, func(t *Thread) error { return t.WithOtel(benchSpan, attrs, nop) })
}
