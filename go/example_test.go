package tld_test

import (
	"fmt"

	"tld.dev/tld"
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
