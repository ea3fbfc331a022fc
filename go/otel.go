package tld

// OpenTelemetry thread context (OTEP 4947) over the C ABI (tld_otel.h); the
// record, its protocol and the process context are described in
// docs/DESIGN.md section 10.

import (
	"fmt"
	"strings"
	"syscall"
)

// OtelRecordKeyName is the name of the static key whose value is a thread's
// OpenTelemetry Thread-Local Context Record (OTEP 4947).
const OtelRecordKeyName = "otel.thread_ctx_v1"

// OtelMaxRecordSize is the largest record size (what OTEP 4947 recommends
// readers read); the default is 128 bytes: a 28-byte header and 100 bytes of
// attributes.
const OtelMaxRecordSize = 640

// SpanContext is the W3C trace context of the span a thread serves, ids in
// wire order. All zero: no span.
type SpanContext struct {
	TraceID    [16]byte
	SpanID     [8]byte
	TraceFlags byte // bit 0: sampled
}

// OtelAttribute is a record attribute by key name. The name (1 to 127 bytes
// of UTF-8) is registered in the process's threadlocal.attribute_key_map on
// first use; the value is at most 255 bytes of UTF-8. Neither may contain NUL.
type OtelAttribute struct {
	Name, Value string
}

// SetOtelRecordSize sets the size in bytes of every thread's record (28 to
// 640; default 128, or $TLD_OTEL_RECORD_SIZE): attributes get bytes - 28, 2
// per attribute plus its value. Only before the record key exists: call it
// before [OtelRecordKey] or any publication. Errors wrap syscall.EINVAL (out
// of range) or EBUSY (the key exists with another size).
func SetOtelRecordSize(bytes int) error {
	if bytes < 0 {
		return newError("set otel record size", OtelRecordKeyName, syscall.EINVAL, "negative size")
	}
	if errno, msg := cOtelSetRecordSize(bytes); errno != 0 {
		return newError("set otel record size", OtelRecordKeyName, errno, msg)
	}
	return nil
}

// OtelRecordKey returns the static key "otel.thread_ctx_v1", creating it if
// needed. Call it from an init function (after [SetOtelRecordSize] if any),
// before any thread touches tld data: created then, the record gets its own
// room in every thread block. Created later, by the first [Thread.SetOtel]
// after other keys' values were used, it must fit the dynamic reserve, and
// 128 bytes do not: syscall.E2BIG. Errors also wrap EEXIST (it exists with
// another size than SetOtelRecordSize set), EINVAL, EPROTO.
func OtelRecordKey() (RawKey, error) {
	off, size, errno, msg := cOtelRecordKey()
	if errno != 0 {
		return RawKey{}, newError("otel record key", OtelRecordKeyName, errno, msg)
	}
	return RawKey{name: OtelRecordKeyName, off: off, size: size}, nil
}

// OtelAttributeIndex registers name in the process's append-only
// threadlocal.attribute_key_map (shared by every copy of tld and every
// language in the process), or finds it, and returns its index: the
// key-index byte records carry for it, which readers resolve through the
// process context. Errors wrap syscall.EINVAL (empty, over 127 bytes, NUL,
// not UTF-8) or ENOSPC (256 names).
func OtelAttributeIndex(name string) (int, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return 0, newError("otel attribute key", name, syscall.EINVAL, "otel attribute names cannot contain NUL")
	}
	i, errno, msg := cOtelAttrKey(name)
	if errno != 0 {
		return 0, newError("otel attribute key", name, errno, msg)
	}
	return i, nil
}

// ResourceAttribute is a resource attribute of the process context (OTEP
// 4719): a key (1 to 255 bytes, not starting with "threadlocal.") and a
// value of type string, bool, int64 or float64.
type ResourceAttribute struct {
	Key   string
	Value any
}

// PublishProcessContext sets the process's resource attributes (replacing
// earlier ones) and publishes the OTEP 4719 OTEL_CTX mapping with them, tld's
// threadlocal.schema_version and the threadlocal.attribute_key_map that
// names records' attribute indexes. One mapping per process, whichever copy
// of tld or language publishes; an update follows the OTEP's protocol.
// Errors wrap syscall.EINVAL (a bad key, a duplicate key, a value of another
// type, a NUL in a string), E2BIG (over 16 KiB encoded), or the errno of a
// failed memfd_create/mmap. Safe from any goroutine.
func PublishProcessContext(attrs ...ResourceAttribute) error {
	for _, a := range attrs {
		bad := ""
		switch v := a.Value.(type) {
		case string:
			if strings.IndexByte(v, 0) >= 0 {
				bad = "a string value cannot contain NUL"
			}
		case bool, int64, float64:
		default:
			bad = fmt.Sprintf("a value of type %T (want string, bool, int64 or float64)", a.Value)
		}
		if strings.IndexByte(a.Key, 0) >= 0 {
			bad = "keys cannot contain NUL"
		}
		if bad != "" {
			return newError("publish process context", a.Key, syscall.EINVAL, "resource attribute "+quoteName(a.Key)+": "+bad)
		}
	}
	if errno, msg := cOtelPublishProcessContext(attrs); errno != 0 {
		return newError("publish process context", "", errno, msg)
	}
	return nil
}

// SetOtelSchemaVersion sets threadlocal.schema_version (default
// "tld_uptr_v1") and republishes the process context; for readers that
// accept only OTEP 4947's own name. Errors wrap syscall.EINVAL (empty, over
// 63 bytes, NUL).
func SetOtelSchemaVersion(version string) error {
	if strings.IndexByte(version, 0) >= 0 {
		return newError("set otel schema version", version, syscall.EINVAL, "the schema version cannot contain NUL")
	}
	if errno, msg := cOtelSetSchemaVersion(version); errno != 0 {
		return newError("set otel schema version", version, errno, msg)
	}
	return nil
}

// OtelProcessContext returns the address of the process's OTEL_CTX mapping
// (its 32-byte header, then the payload), publishing it first if needed: what
// an OTEP 4719 reader finds in /proc/PID/maps.
func OtelProcessContext() (uintptr, error) {
	p, errno, msg := cOtelProcessContext()
	if errno != 0 {
		return 0, newError("otel process context", "", errno, msg)
	}
	return p, nil
}

// Refresh checks every map attached by path against its pin now: a pin
// that names another map is followed (the new map attached, every live
// thread registered with it, the old one detached). The runtime's watcher
// does the same within about a second unless TLD_PIN_WATCH=0. Errors as
// [Attach]. Safe from any goroutine.
func Refresh() error {
	if errno, msg := cRefresh(); errno != 0 {
		return newError("refresh", "", errno, msg)
	}
	return nil
}

// otelBuffer packs attributes for cOtelSet: "name\0value\0" each. A NUL in
// either would cut the C string short, so it is refused.
func otelBuffer(buf []byte, attrs []OtelAttribute) ([]byte, error) {
	buf = buf[:0]
	for _, a := range attrs {
		if strings.IndexByte(a.Name, 0) >= 0 || strings.IndexByte(a.Value, 0) >= 0 {
			return buf, newError("set otel context", a.Name, syscall.EINVAL, "otel attribute "+
				quoteName(a.Name)+": names and values cannot contain NUL")
		}
		buf = append(buf, a.Name...)
		buf = append(buf, 0)
		buf = append(buf, a.Value...)
		buf = append(buf, 0)
	}
	return buf, nil
}

func quoteName(s string) string {
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return `"` + strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", `\0`), "?") + `"`
}

// otelTouch saves the thread's record the first time the callback changes
// it, for WithThread to put back.
func (t *Thread) otelTouch(op string) error {
	t.check()
	if t.otel != nil {
		return nil
	}
	s := otelPool.Get().(*otelState)
	if errno, msg := cOtelSave(&s.saved); errno != 0 {
		otelPool.Put(s)
		return newError(op, OtelRecordKeyName, errno, msg)
	}
	t.otel = s
	return nil
}

// SetOtel publishes the thread's OpenTelemetry context: span and attrs, for
// BPF (through tld_data_map, key "otel.thread_ctx_v1") and OTEP 4947 readers
// (through the TLS symbol otel_thread_ctx_v1). Readers see it until the next
// SetOtel or [Thread.ClearOtel] on this thread, and no longer than the
// [WithThread] callback: like every value set through t, the record the
// thread had before the callback first changed it is put back when the
// callback returns (unless [Thread.Keep]). Use [Thread.WithOtel] for a
// nested span inside the callback.
//
// A record belongs to an OS thread, and goroutines move between threads:
// OTEP 4947's caveat for runtimes with green threads. That is why the
// context is set through a Thread, which holds the goroutine on its thread
// while the span is active, and taken back before it lets go. A goroutine
// that blocks inside the callback keeps its thread (and its context), as
// any locked goroutine does.
//
// The first call publishes the process context (OTEP 4719) if the process
// has none. Errors, with the record left as it was, wrap syscall.EINVAL (a
// span context OTEP 4947 forbids: one id all zero but not the other, flags
// without ids; a name empty, over 127 bytes, not UTF-8 or with NUL), E2BIG (a
// value over 255 bytes, attributes that do not fit the record: never
// truncated; the record key created too late, see [OtelRecordKey]) and
// ENOSPC (256 attribute names). Panics if t is no longer valid.
func (t *Thread) SetOtel(span SpanContext, attrs ...OtelAttribute) error {
	if err := t.otelTouch("set otel context"); err != nil {
		return err
	}
	return t.setOtel(span, attrs)
}

func (t *Thread) setOtel(span SpanContext, attrs []OtelAttribute) error {
	buf, err := otelBuffer(t.otel.buf, attrs)
	t.otel.buf = buf
	if err != nil {
		return err
	}
	if errno, msg := cOtelSet(&span, buf, len(attrs)); errno != 0 {
		return newError("set otel context", OtelRecordKeyName, errno, msg)
	}
	return nil
}

// ClearOtel marks the thread's record invalid and its otel_thread_ctx_v1
// NULL: readers see no context. Restored when the callback returns, as
// [Thread.SetOtel]. Panics if t is no longer valid.
func (t *Thread) ClearOtel() error {
	if err := t.otelTouch("clear otel context"); err != nil {
		return err
	}
	if errno, msg := cOtelClear(); errno != 0 {
		return newError("clear otel context", OtelRecordKeyName, errno, msg)
	}
	return nil
}

// WithOtel publishes span and attrs as [Thread.SetOtel] does, calls fn, and
// puts back the record the thread had before (valid or not) when fn returns
// or panics: a nested span inside a [WithThread] callback. It returns fn's
// error, or SetOtel's (fn is then not called). Panics if t is no longer valid.
func (t *Thread) WithOtel(span SpanContext, attrs []OtelAttribute, fn func() error) error {
	if err := t.otelTouch("set otel context"); err != nil {
		return err
	}
	var prev otelSaved
	if errno, msg := cOtelSave(&prev); errno != 0 {
		return newError("set otel context", OtelRecordKeyName, errno, msg)
	}
	if err := t.setOtel(span, attrs); err != nil {
		return err
	}
	defer cOtelRestore(&prev)
	return fn()
}

// Otel returns the thread's span context as readers see it and whether the
// record is valid (published and not cleared). Panics if t is no longer valid.
func (t *Thread) Otel() (SpanContext, bool, error) {
	t.check()
	s, valid, errno, msg := cOtelCurrent()
	if errno != 0 {
		return SpanContext{}, false, newError("read otel context", OtelRecordKeyName, errno, msg)
	}
	return s, valid, nil
}
