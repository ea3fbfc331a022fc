package tld

// Tests against the real kernel: values written through the package are
// compared with what an independent BPF reader (`tld dump --json`) sees.

import (
	"encoding/hex"
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
)

func init() {
	scenarios["basic"] = scenarioBasic
	scenarios["thread-exit"] = scenarioThreadExit
	scenarios["restore"] = scenarioRestore
}

// TestBasic: many goroutines, each locked to its own thread, publish their
// values; BPF sees each thread's own values.
func TestBasic(t *testing.T) { inKernelChild(t, "basic") }

// TestThreadExit: a goroutine locked to its thread that returns without
// unlocking ends the thread; its block is released and BPF no longer sees it.
func TestThreadExit(t *testing.T) { inKernelChild(t, "thread-exit") }

// TestRestore: WithThread puts back what its callback set before it unlocks,
// so BPF no longer sees the callback's values on the thread; Keep and
// panics, as documented.
func TestRestore(t *testing.T) { inKernelChild(t, "restore") }

type published struct {
	tid  int
	prio int32
	req  uint64
	blob []byte
	err  error
}

func scenarioBasic() error {
	if err := Attach(""); err != nil { // $TLD_MAP_PATH, set by the parent
		return err
	}
	prio, err := CreateKey[int32]("priority")
	if err != nil {
		return err
	}
	req, err := GetOrCreateKey[uint64]("request_id")
	if err != nil {
		return err
	}
	blob, err := CreateRawKey("blob", 12)
	if err != nil {
		return err
	}

	const workers = 16
	results := make(chan published, workers+1)
	release := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := WithThread(func(t *Thread) error {
				p, err := prio.On(t)
				if err != nil {
					return err
				}
				r, err := req.On(t)
				if err != nil {
					return err
				}
				b, err := blob.On(t)
				if err != nil {
					return err
				}
				want := published{tid: t.ID(), prio: int32(-100 - i), req: 1<<40 + uint64(i), blob: []byte(fmt.Sprintf("worker %5d", i))}
				p.Set(want.prio)
				r.Set(want.req)
				b.Store(want.blob)
				if p.Get() != want.prio || r.Get() != want.req {
					return fmt.Errorf("worker %d reads back %d, %d", i, p.Get(), r.Get())
				}
				results <- want
				<-release // stay on this thread while BPF reads
				return nil
			})
			if err != nil {
				results <- published{err: err}
			}
		}()
	}
	// One more goroutine locks itself and uses the Thread-taking per-call API
	// and the raw pointer, as a dedicated worker would; Keep leaves the values
	// on its thread after the callback.
	wg.Add(1)
	go func() {
		defer wg.Done()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		want := published{tid: gettid(), prio: 7, req: 99, blob: make([]byte, 12)}
		err := WithThread(func(t *Thread) error {
			t.Keep()
			if err := prio.Set(t, want.prio); err != nil {
				return err
			}
			p, err := req.UnsafePointer()
			if err != nil {
				return err
			}
			*p = want.req
			if got, err := prio.Get(t); err != nil || got != want.prio {
				return fmt.Errorf("Key.Get = %d, %v", got, err)
			}
			return nil
		})
		if err != nil {
			results <- published{err: err}
			return
		}
		results <- want
		<-release
	}()

	wants := map[int]published{}
	for i := 0; i < workers+1; i++ {
		w := <-results
		if w.err != nil {
			return w.err
		}
		if _, dup := wants[w.tid]; dup {
			return fmt.Errorf("two locked goroutines report thread %d", w.tid)
		}
		wants[w.tid] = w
	}
	threads, doc, err := dumpProcess(os.Getpid())
	close(release)
	wg.Wait()
	if err != nil {
		return err
	}
	offsets := map[string]int{}
	for _, k := range doc.Keys {
		offsets[k.Name] = k.Offset
	}
	for name, off := range map[string]int{"priority": prio.Offset(), "request_id": req.Offset(), "blob": blob.Offset()} {
		if offsets[name] != off {
			return fmt.Errorf("BPF sees key %q at offset %d, Go has %d", name, offsets[name], off)
		}
	}
	for tid, w := range wants {
		values, ok := threads[tid]
		if !ok {
			return fmt.Errorf("BPF does not see thread %d (sees %d threads)", tid, len(threads))
		}
		if v := values["priority"]; v == nil || v.Int == nil || *v.Int != int64(w.prio) {
			return fmt.Errorf("thread %d: BPF sees priority %+v, want %d", tid, v, w.prio)
		}
		if v := values["request_id"]; v == nil || v.Int == nil || uint64(*v.Int) != w.req {
			return fmt.Errorf("thread %d: BPF sees request_id %+v, want %d", tid, v, w.req)
		}
		if v := values["blob"]; v == nil || v.Hex != hex.EncodeToString(w.blob) {
			return fmt.Errorf("thread %d: BPF sees blob %+v, want %x", tid, v, w.blob)
		}
	}
	return nil
}

func scenarioThreadExit() error {
	if err := Attach(""); err != nil {
		return err
	}
	key, err := CreateKey[int64]("exiting")
	if err != nil {
		return err
	}
	// The first dump starts the Go runtime's poller (its fds stay open):
	// count the process's fds after it.
	if _, _, err := dumpProcess(os.Getpid()); err != nil {
		return err
	}
	base, fds := LiveBlocks(), openFDs()
	tids := make(chan int, 1)
	release, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		// Locked and never unlocked: the thread ends with this goroutine.
		runtime.LockOSThread()
		err := WithThread(func(t *Thread) error {
			t.Keep() // the thread is this goroutine's until it exits
			v, err := key.On(t)
			if err != nil {
				return err
			}
			v.Set(77)
			tids <- t.ID()
			return nil
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			tids <- -1
		}
		<-release
	}()
	tid := <-tids
	if tid < 0 {
		return fmt.Errorf("the locked goroutine failed")
	}
	if tid == os.Getpid() {
		return fmt.Errorf("the goroutine ran on the main thread, which Go never ends")
	}
	if n := LiveBlocks(); n != base+1 {
		return fmt.Errorf("LiveBlocks = %d with the thread alive, want %d", n, base+1)
	}
	threads, _, err := dumpProcess(os.Getpid())
	if err != nil {
		return err
	}
	if v := threads[tid]["exiting"]; v == nil || v.Int == nil || *v.Int != 77 {
		return fmt.Errorf("before exit, BPF sees %+v for thread %d, want 77", v, tid)
	}
	close(release)
	<-done

	deadline := time.Now().Add(10 * time.Second)
	for {
		_, statErr := os.Stat(fmt.Sprintf("/proc/self/task/%d", tid))
		threads, _, err := dumpProcess(os.Getpid())
		if err != nil {
			return err
		}
		_, seen := threads[tid]
		live, nfds := LiveBlocks(), openFDs()
		if os.IsNotExist(statErr) && !seen && live == base && nfds == fds {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after the goroutine exited: thread still exists %v, BPF still sees it %v, LiveBlocks %d (want %d), %d open fds (want %d)",
				statErr == nil, seen, live, base, nfds, fds)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// openFDs counts the process's open file descriptors.
func openFDs() int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(entries)
}

// bpfSees returns the values BPF sees for thread tid, by key name (0 for a
// key or thread it does not see).
func bpfSees(tid int, names ...string) ([]int64, error) {
	threads, _, err := dumpProcess(os.Getpid())
	if err != nil {
		return nil, err
	}
	out := make([]int64, len(names))
	for i, name := range names {
		if v := threads[tid][name]; v != nil && v.Int != nil {
			out[i] = *v.Int
		}
	}
	return out, nil
}

func scenarioRestore() error {
	if err := Attach(""); err != nil {
		return err
	}
	prio := MustCreateStaticKey[int32]("priority")
	req, err := CreateKey[uint64]("request_id")
	if err != nil {
		return err
	}
	// One goroutine, locked for the whole scenario so that every WithThread
	// runs on the same OS thread, the one whose values BPF is asked about.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := gettid()
	check := func(when string, wantPrio, wantReq int64) error {
		got, err := bpfSees(tid, "priority", "request_id")
		if err != nil {
			return err
		}
		if got[0] != wantPrio || got[1] != wantReq {
			return fmt.Errorf("%s: BPF sees priority %d, request_id %d on thread %d; want %d, %d",
				when, got[0], got[1], tid, wantPrio, wantReq)
		}
		return nil
	}
	// A baseline the thread keeps: priority 1.
	if err := WithThread(func(t *Thread) error {
		t.Keep()
		return prio.Set(t, 1)
	}); err != nil {
		return err
	}
	if err := check("after a kept callback", 1, 0); err != nil {
		return err
	}
	// A request: set, seen by BPF during the callback, gone after it.
	err = WithThread(func(t *Thread) error {
		if err := prio.Set(t, 3); err != nil {
			return err
		}
		r, err := req.On(t)
		if err != nil {
			return err
		}
		r.Set(42)
		if err := check("inside the callback", 3, 42); err != nil {
			return err
		}
		// A nested callback restores its own change only.
		if err := WithThread(func(t *Thread) error { return prio.Set(t, 9) }); err != nil {
			return err
		}
		return check("after a nested callback", 3, 42)
	})
	if err != nil {
		return err
	}
	if err := check("after the callback", 1, 0); err != nil {
		return err
	}
	// A panicking callback restores too.
	func() {
		defer func() { recover() }()
		WithThread(func(t *Thread) error {
			prio.Set(t, 5)
			req.Set(t, 43)
			panic("request failed")
		})
	}()
	return check("after a panicking callback", 1, 0)
}
