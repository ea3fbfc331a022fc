// The Go consumer of tld, in its own module: the package's source comes from
// a local replace, the library from pkg-config (the installed tld.pc).
// Usage: app KEY VALUE. Publishes VALUE under KEY on a locked thread, prints
// "ready TID" and keeps the thread alive until stdin reaches EOF.
package main

import (
	"fmt"
	"io"
	"os"
	"strconv"

	"tld.dev/tld"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: app KEY VALUE")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "app:", err)
		os.Exit(1)
	}
}

func run(name, arg string) error {
	value, err := strconv.ParseUint(arg, 10, 64)
	if err != nil {
		return err
	}
	if err := tld.Attach(""); err != nil { // $TLD_MAP_PATH
		return err
	}
	key, err := tld.GetOrCreateKey[uint64](name)
	if err != nil {
		return err
	}
	return tld.WithThread(func(t *tld.Thread) error {
		v, err := key.On(t)
		if err != nil {
			return err
		}
		v.Set(value)
		fmt.Printf("ready %d\n", t.ID())
		_, err = io.Copy(io.Discard, os.Stdin)
		return err
	})
}
