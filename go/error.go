package tld

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
)

// Error is the error of every function of this package: the operation, the
// key name or map path, the errno, and a message naming the cause. It wraps
// Errno, so errors.Is(err, syscall.EEXIST) (or fs.ErrExist) works.
type Error struct {
	// Op is what failed: "create key", "get or create key", "find key",
	// "attach map", "thread data", "set dynamic reserve".
	Op string
	// Name is the key name or map path the operation was about ("" when
	// there is none).
	Name string
	// Errno is the cause as an errno: EEXIST, E2BIG, ENOSPC, EINVAL,
	// ENAMETOOLONG, ENOENT, EPERM, EACCES, EBUSY, EPROTO, ENOMEM...
	Errno syscall.Errno
	// Msg is the message of the C library (tld_last_error) or of this
	// package, naming the key or map and the cause.
	Msg string
}

// Error returns "tld: <op> <name>: <message>", without the name when the
// message already quotes it.
func (e *Error) Error() string {
	msg := e.Msg
	if msg == "" {
		msg = e.Errno.Error()
	}
	if e.Name == "" || strings.Contains(msg, strconv.Quote(e.Name)) {
		return fmt.Sprintf("tld: %s: %s", e.Op, msg)
	}
	return fmt.Sprintf("tld: %s %q: %s", e.Op, e.Name, msg)
}

// Unwrap returns the errno.
func (e *Error) Unwrap() error { return e.Errno }

func newError(op, name string, errno syscall.Errno, msg string) error {
	return &Error{Op: op, Name: name, Errno: errno, Msg: msg}
}
