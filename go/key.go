package tld

import (
	"fmt"
	"reflect"
	"strings"
	"syscall"
	"unsafe"
)

// RawKey is a key for raw bytes: a name, a size, and the offset of its value
// in every thread's data area. The zero RawKey is not a key. RawKeys are
// plain values, safe to copy and share between goroutines.
type RawKey struct {
	name string
	off  int16
	size int
}

// CreateRawKey creates a key of size bytes (strict). Errors wrap
// syscall.EEXIST (name taken), E2BIG (does not fit what is left of the
// per-thread data area), ENOSPC (all metadata slots taken), EINVAL (size 0,
// empty name or a name containing NUL), ENAMETOOLONG (name over 61 bytes).
// Safe from any goroutine.
func CreateRawKey(name string, size int) (RawKey, error) {
	return rawKey("create key", name, size, cCreateKey)
}

// GetOrCreateRawKey returns the key named name if it exists with this size,
// else creates it: how two libraries or languages share one value. Errors as
// [CreateRawKey]; an existing name with another size wraps syscall.EEXIST.
func GetOrCreateRawKey(name string, size int) (RawKey, error) {
	return rawKey("get or create key", name, size, cGetOrCreateKey)
}

// CreateStaticRawKey creates a static key: while no thread has touched its
// data yet, it grows every thread's block by size instead of using the
// dynamic reserve. Call it from an init function. Afterwards it behaves like
// [CreateRawKey]; errors as [CreateRawKey].
func CreateStaticRawKey(name string, size int) (RawKey, error) {
	return rawKey("create static key", name, size, cCreateStaticKey)
}

// FindRawKey looks up an existing key. Errors wrap syscall.ENOENT (no such
// key), EINVAL or ENAMETOOLONG (bad name).
func FindRawKey(name string) (RawKey, error) {
	if err := checkName("find key", name); err != nil {
		return RawKey{}, err
	}
	off, size, errno, msg := cFindKey(name)
	if errno != 0 {
		return RawKey{}, newError("find key", name, errno, msg)
	}
	return RawKey{name: name, off: off, size: size}, nil
}

// checkName refuses a name with a NUL byte, which C would silently cut
// short. Every other rule (1 to 61 bytes) is the core's.
func checkName(op, name string) error {
	if strings.IndexByte(name, 0) >= 0 {
		return newError(op, name, syscall.EINVAL, fmt.Sprintf("invalid key name %q: contains a NUL byte", name))
	}
	return nil
}

func rawKey(op, name string, size int, call func(string, int) (int16, syscall.Errno, string)) (RawKey, error) {
	if err := checkName(op, name); err != nil {
		return RawKey{}, err
	}
	if size <= 0 {
		// Checked here too: a negative int would become a huge size_t.
		return RawKey{}, newError(op, name, syscall.EINVAL, fmt.Sprintf("key %q: invalid size %d", name, size))
	}
	off, errno, msg := call(name, size)
	if errno != 0 {
		return RawKey{}, newError(op, name, errno, msg)
	}
	return RawKey{name: name, off: off, size: size}, nil
}

// Name returns the key's name.
func (k RawKey) Name() string { return k.name }

// Size returns the value's size in bytes.
func (k RawKey) Size() int { return k.size }

// Offset returns the value's offset in every thread's data area (the
// upstream tld_key_t.off, what BPF programs add to the data pointer).
func (k RawKey) Offset() int { return int(k.off) }

// Key is a typed key whose value is a T in every thread. T must be a
// fixed-size type without pointers: booleans, integers (uintptr included),
// floats, complex numbers, and arrays and structs of them. Strings, slices,
// maps, pointers, channels, functions and interfaces are refused, because
// the value lives outside the Go heap, where the garbage collector does not
// look. Keys are plain values, safe to copy and share between goroutines.
type Key[T any] struct {
	raw RawKey
}

// CreateKey creates a key for a T (strict). Errors as [CreateRawKey], and
// syscall.EINVAL for a T that has pointers or size 0.
func CreateKey[T any](name string) (Key[T], error) {
	return typedKey[T]("create key", name, CreateRawKey)
}

// GetOrCreateKey returns the key named name if it exists with the size of T,
// else creates it. Errors as [GetOrCreateRawKey], and syscall.EINVAL for a T
// that has pointers or size 0.
func GetOrCreateKey[T any](name string) (Key[T], error) {
	return typedKey[T]("get or create key", name, GetOrCreateRawKey)
}

// CreateStaticKey creates a static key for a T (see [CreateStaticRawKey]):
// call it from an init function. Errors as [CreateKey].
func CreateStaticKey[T any](name string) (Key[T], error) {
	return typedKey[T]("create static key", name, CreateStaticRawKey)
}

// FindKey looks up an existing key for a T. Errors as [FindRawKey], and
// syscall.EEXIST when the key exists with a size other than T's,
// syscall.EINVAL for a T that has pointers or size 0.
func FindKey[T any](name string) (Key[T], error) {
	size, err := checkType[T]("find key", name)
	if err != nil {
		return Key[T]{}, err
	}
	raw, err := FindRawKey(name)
	if err != nil {
		return Key[T]{}, err
	}
	if raw.size != size {
		return Key[T]{}, newError("find key", name, syscall.EEXIST,
			fmt.Sprintf("key %q exists with size %d, not %d (the size of %s)", name, raw.size, size, typeName[T]()))
	}
	return Key[T]{raw: raw}, nil
}

func typedKey[T any](op, name string, make func(string, int) (RawKey, error)) (Key[T], error) {
	size, err := checkType[T](op, name)
	if err != nil {
		return Key[T]{}, err
	}
	raw, err := make(name, size)
	if err != nil {
		return Key[T]{}, err
	}
	return Key[T]{raw: raw}, nil
}

// checkType returns unsafe.Sizeof(T), or EINVAL when T cannot live in a
// thread block.
func checkType[T any](op, name string) (int, error) {
	var zero T
	size := int(unsafe.Sizeof(zero))
	t := reflect.TypeOf((*T)(nil)).Elem()
	if bad := pointerIn(t); bad != "" {
		return 0, newError(op, name, syscall.EINVAL,
			fmt.Sprintf("key %q: type %s holds %s; a value must be fixed-size plain data without pointers", name, t, bad))
	}
	if size == 0 {
		return 0, newError(op, name, syscall.EINVAL, fmt.Sprintf("key %q: type %s has size 0", name, t))
	}
	if align := t.Align(); align > 8 {
		return 0, newError(op, name, syscall.EINVAL,
			fmt.Sprintf("key %q: values are 8-byte aligned, type %s needs %d", name, t, align))
	}
	return size, nil
}

// pointerIn names what makes t unfit for a thread block (a pointer, a string,
// a slice...), or returns "" when t is plain data.
func pointerIn(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return ""
	case reflect.Array:
		return pointerIn(t.Elem())
	case reflect.Struct:
		for i := 0; i < t.NumField(); i++ {
			if bad := pointerIn(t.Field(i).Type); bad != "" {
				return bad
			}
		}
		return ""
	default:
		// Pointer, UnsafePointer, String, Slice, Map, Chan, Func, Interface.
		return fmt.Sprintf("a %s (%s)", t.Kind(), t)
	}
}

func typeName[T any]() string { return reflect.TypeOf((*T)(nil)).Elem().String() }

// Raw returns the untyped key.
func (k Key[T]) Raw() RawKey { return k.raw }

// Name returns the key's name.
func (k Key[T]) Name() string { return k.raw.name }

// Offset returns the value's offset in every thread's data area.
func (k Key[T]) Offset() int { return int(k.raw.off) }

// MustCreateStaticKey is [CreateStaticKey] for package-level variables: it
// panics with the error (a *[Error] naming the key and the cause) when the
// key cannot be created, so a name clash or a full metadata page stops the
// program at initialisation instead of leaving a zero Key behind:
//
//	var priority = tld.MustCreateStaticKey[int32]("priority")
func MustCreateStaticKey[T any](name string) Key[T] {
	k, err := CreateStaticKey[T](name)
	if err != nil {
		panic(err)
	}
	return k
}

// MustCreateStaticRawKey is [CreateStaticRawKey] that panics with the error,
// as [MustCreateStaticKey].
func MustCreateStaticRawKey(name string, size int) RawKey {
	k, err := CreateStaticRawKey(name, size)
	if err != nil {
		panic(err)
	}
	return k
}
