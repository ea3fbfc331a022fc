// Package tld publishes per-thread values ("hints": a priority, an
// in-critical-section flag, a request id) that BPF programs read in place,
// with a plain memory store per update: task local data.
//
// Values belong to OS threads, not goroutines: BPF sees kernel tasks. Write
// them only inside [WithThread], which locks the goroutine to its thread for
// the callback and, before unlocking, puts back every value the callback
// changed, so the thread returns to the Go scheduler carrying no hint of the
// finished work.
//
// # Goroutines are not threads
//
// Every value this package writes belongs to the OS thread that runs the
// writing goroutine at that moment, and goroutines move between OS threads
// whenever the Go scheduler likes. A value written from a goroutine that is
// not locked to its thread (runtime.LockOSThread) would land on whatever
// thread happened to run it, and BPF would see it there, on behalf of
// whichever goroutine runs on that thread next. So every write goes through
// a [Thread], which only [WithThread] hands out:
//
//	err := tld.WithThread(func(t *tld.Thread) error {
//		prio, err := priority.On(t) // this thread's value of the key
//		if err != nil {
//			return err
//		}
//		prio.Set(3) // a plain store; BPF sees 3 for this thread
//		work()
//		return nil
//	}) // priority is back to what it was before; the thread is unlocked
//
// WithThread locks the calling goroutine to its OS thread, hands the
// callback a [Thread] for that thread's data, and when the callback returns
// (or panics) restores each key the callback reached through the Thread to
// the value it had before, then unlocks. Nested calls restore their own
// changes. Values obtained from it ([Value], [RawValue]) are checked on every
// access and panic once the callback has returned, so nothing can write
// through them after the goroutine moved. [Key.Set], [Key.Get],
// [RawKey.Store] and [RawKey.Load] take the Thread too: there is no form that
// writes "the current thread" of an unlocked goroutine.
//
// A goroutine that owns its thread for longer publishes for longer by
// wrapping its whole life in one WithThread (a worker loop), or calls
// [Thread.Keep] when the values must outlive the callback: a goroutine that
// locked itself and never unlocks, or a function exported to C running on a
// thread C code owns.
//
// Handles are for the goroutine that called WithThread: do not hand a
// Thread or a Value to another goroutine.
//
// A pointer to a thread's value may be kept only while the goroutine stays
// locked to that thread. The escape hatches ([Value.UnsafePointer],
// [RawValue.UnsafeBytes], [Key.UnsafePointer]) return raw pointers into the
// thread's block for code that holds the lock itself (a worker goroutine
// that calls runtime.LockOSThread once and never unlocks, as with network
// namespaces). Nothing checks them and WithThread does not restore what is
// written through [Key.UnsafePointer]: used after the goroutine moved they
// write another thread's value, and after the thread exited, freed memory.
//
// # Keys
//
// A key is a name (1 to 61 bytes, no NUL) and a size, the same in every
// thread and every language in the process: [CreateKey] is strict
// (syscall.EEXIST when the name exists), [GetOrCreateKey] shares an existing
// key of the same size, [FindKey] looks one up. [Key] is typed and takes
// fixed-size types without pointers (integers, floats, booleans, arrays and
// structs of them); [RawKey] holds raw bytes. Keys are plain values: copy them
// and share them between goroutines freely. A package-level key is made once
// at initialisation with [MustCreateStaticKey], which panics with the error
// rather than leaving a zero Key:
//
//	var priority = tld.MustCreateStaticKey[int32]("priority")
//
// # Maps
//
// BPF reads through a pinned task-storage map, tld_data_map: [Attach] it
// (or [AttachFD]) before or after creating keys; each thread registers with
// every attached map on its next data access. A thread's block is released
// when the thread exits: in Go, when a goroutine locked to its thread returns
// without unlocking.
//
// # Errors
//
// Errors are *[Error] values naming the key or map and the cause, and wrap a
// syscall.Errno: errors.Is(err, syscall.EEXIST) works.
//
// # One runtime per process
//
// This package links its own copy of the tld core (libtld.a). Every copy in a
// process (a C library, a Python extension...) shares one metadata page and
// one block per thread, so a key created by any of them is seen by all.
//
// # Security
//
// Whoever can write the pinned map can set the values of any task. The pin's
// file mode is the trust boundary; BPF programs must treat the values as
// untrusted hints.
//
// # Building
//
// The package links ../target/debug/libtld.a: run `make build` (or
// `cargo build -p task-local-data-capi`) at the repository root first.
package tld
