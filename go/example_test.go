package tld_test

import (
	"fmt"

	tld "tld.dev/tld/go"
)

// A goroutine publishes its priority for BPF while it works. Without an
// attached map (tld.Attach) the values live in the thread's block all the
// same; BPF sees them once a map is attached.
func ExampleWithThread() {
	priority, err := tld.GetOrCreateKey[int32]("example_priority")
	if err != nil {
		fmt.Println(err)
		return
	}
	err = tld.WithThread(func(t *tld.Thread) error {
		prio, err := priority.On(t) // this OS thread's value
		if err != nil {
			return err
		}
		prio.Set(3) // BPF sees 3 for this thread from now on
		fmt.Println("priority", prio.Get())
		prio.Set(0)
		return nil
	})
	if err != nil {
		fmt.Println(err)
	}

	_, err = tld.CreateKey[int32]("example_priority")
	fmt.Println(err)
	// Output:
	// priority 3
	// tld: create key: key "example_priority" already exists
}

// A key made once while the program initialises, as a package-level
// variable:
//
//	var requestID = tld.MustCreateStaticKey[uint64]("request_id")
//
// A clash (the name taken with another size, say, by another library or
// language in the process) panics at start-up with the error, instead of
// leaving a zero Key that fails later. Inside WithThread the request id is
// this OS thread's for BPF; when the callback returns it is put back (here
// to 0), so the thread, back in the Go scheduler's pool, carries no stale
// request id into other goroutines.
func ExampleMustCreateStaticKey() {
	requestID := tld.MustCreateStaticKey[uint64]("example_request_id")

	tld.WithThread(func(t *tld.Thread) error {
		requestID.Set(t, 42)
		id, _ := requestID.Get(t)
		fmt.Println("during the request:", id)
		return nil
	})
	tld.WithThread(func(t *tld.Thread) error {
		id, _ := requestID.Get(t)
		fmt.Println("after it:", id)
		return nil
	})
	// Output:
	// during the request: 42
	// after it: 0
}
