package tld

// The test harness: scenarios that need a fresh tld runtime run in a child
// process (this test binary, re-executed with TLD_GO_SCENARIO set); kernel
// scenarios get a map pinned by the tld command-line tool, whose
// `tld dump --json` is the independent BPF reader the values are checked
// against.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
)

const scenarioEnv = "TLD_GO_SCENARIO"

// scenarios run in a child process: each returns nil on success.
var scenarios = map[string]func() error{}

func init() {
	if os.Getenv(scenarioEnv) != "" {
		// Keep the main goroutine on the main thread, so that no other
		// goroutine locks the main thread: the Go runtime never ends the
		// main thread, it wedges it when its locked goroutine exits.
		runtime.LockOSThread()
	}
}

func TestMain(m *testing.M) {
	if name := os.Getenv(scenarioEnv); name != "" {
		run, ok := scenarios[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "no scenario %q\n", name)
			os.Exit(2)
		}
		if err := run(); err != nil {
			fmt.Fprintf(os.Stderr, "scenario %s: %v\n", name, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestLinkedLibrary: the linked libtld.a is usable.
//
// go test caches results by the test binary's inputs, and neither the archive
// named in the cgo LDFLAGS nor files outside the module (a stat in a test
// does not help) count among them: after rebuilding libtld.a, run go test
// with -count=1 (as `make test` does) or a stale "(cached)" result may show.
func TestLinkedLibrary(t *testing.T) {
	if v := RuntimeABIVersion(); v>>16 != 2 {
		t.Errorf("runtime ABI version %d.%d, want 2.x", v>>16, v&0xffff)
	}
	if MetadataPage() == 0 {
		t.Error("no metadata page: the runtime did not start")
	}
}

// inChild runs a scenario in a fresh process (a fresh tld runtime) with the
// extra environment, and fails the test with the child's output if it fails.
func inChild(t *testing.T, name string, env ...string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), scenarioEnv+"="+name), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scenario %s failed (%v):\n%s", name, err, out)
	}
	if testing.Verbose() && len(out) > 0 {
		t.Logf("scenario %s:\n%s", name, out)
	}
}

func inCI() bool {
	v := os.Getenv("CI")
	return v == "true" || v == "1"
}

// hasBPFPrivileges: CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON, effective.
func hasBPFPrivileges() bool {
	const capSysAdmin, capPerfmon, capBPF = 21, 38, 39
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return os.Geteuid() == 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if hex, ok := strings.CutPrefix(s.Text(), "CapEff:"); ok {
			caps, _ := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			has := func(c uint) bool { return caps&(1<<c) != 0 }
			return has(capSysAdmin) || (has(capBPF) && has(capPerfmon))
		}
	}
	return false
}

// needKernel skips a kernel test without privileges, except under CI=true,
// where kernel tests must never skip.
func needKernel(t *testing.T) {
	t.Helper()
	if hasBPFPrivileges() {
		return
	}
	if inCI() {
		t.Fatal("kernel test needs root or CAP_BPF+CAP_PERFMON, and CI=true forbids skipping")
	}
	t.Skip("skipping: kernel test needs root or CAP_BPF+CAP_PERFMON (run as root to test against BPF)")
}

var (
	cliOnce sync.Once
	cliPath string
	cliErr  error
)

// tldCLI returns the path of the tld command-line tool (target/debug/tld),
// building it with cargo if it is missing.
func tldCLI(t *testing.T) string {
	t.Helper()
	cliOnce.Do(func() {
		root, err := filepath.Abs("..")
		if err != nil {
			cliErr = err
			return
		}
		cliPath = filepath.Join(root, "target", "debug", "tld")
		if _, err := os.Stat(cliPath); err == nil {
			return
		}
		cargo := os.Getenv("CARGO")
		if cargo == "" {
			cargo = "cargo"
		}
		cmd := exec.Command(cargo, "build", "-q", "-p", "tld-cli", "--bin", "tld")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			cliErr = fmt.Errorf("building the tld tool (cargo build -p tld-cli): %v\n%s", err, out)
		}
	})
	if cliErr != nil {
		t.Fatal(cliErr)
	}
	return cliPath
}

// pinMap pins a fresh tld_data_map with `tld pin` and removes it when the
// test ends. It returns the pin path.
func pinMap(t *testing.T) string {
	t.Helper()
	cli := tldCLI(t)
	dir := fmt.Sprintf("/sys/fs/bpf/tld-go-test-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "_"))
	path := filepath.Join(dir, "tld_data_map")
	if out, err := exec.Command(cli, "pin", "--path", path).CombinedOutput(); err != nil {
		t.Fatalf("tld pin --path %s: %v\n%s", path, err, out)
	}
	t.Cleanup(func() {
		exec.Command(cli, "unpin", "--path", path).Run()
		os.Remove(dir)
	})
	return path
}

// dumpDoc is the part of `tld dump --json` (schema tld-dump/1) the tests read.
type dumpDoc struct {
	Schema string `json:"schema"`
	PID    int    `json:"pid"`
	Keys   []struct {
		Slot   int    `json:"slot"`
		Name   string `json:"name"`
		Size   int    `json:"size"`
		Offset int    `json:"offset"`
	} `json:"keys"`
	Threads []struct {
		TID    int                       `json:"tid"`
		Values map[string]*dumpValueJSON `json:"values"`
	} `json:"threads"`
}

type dumpValueJSON struct {
	Int *int64 `json:"int"`
	Hex string `json:"hex"`
}

// exitNotUsingTld is `tld dump`'s exit code when no thread of the process is
// registered in the map.
const exitNotUsingTld = 4

// dumpProcess runs `tld dump PID --json --path MAP` (tool path and map path
// from the environment the parent test set) and returns what BPF sees of
// every registered thread of the process, by tid.
func dumpProcess(pid int) (map[int]map[string]*dumpValueJSON, *dumpDoc, error) {
	cli, path := os.Getenv("TLD_GO_CLI"), os.Getenv("TLD_MAP_PATH")
	cmd := exec.Command(cli, "dump", strconv.Itoa(pid), "--json", "--path", path)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == exitNotUsingTld {
		return map[int]map[string]*dumpValueJSON{}, &dumpDoc{}, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("tld dump %d --json: %v: %s", pid, err, stderr.String())
	}
	var doc dumpDoc
	if err := json.Unmarshal(out, &doc); err != nil {
		return nil, nil, fmt.Errorf("tld dump %d --json: %v\n%s", pid, err, out)
	}
	if doc.Schema != "tld-dump/1" {
		return nil, nil, fmt.Errorf("tld dump: schema %q, want tld-dump/1", doc.Schema)
	}
	threads := map[int]map[string]*dumpValueJSON{}
	for _, th := range doc.Threads {
		threads[th.TID] = th.Values
	}
	return threads, &doc, nil
}

// inKernelChild runs a kernel scenario in a child with a freshly pinned map.
func inKernelChild(t *testing.T, name string) {
	t.Helper()
	needKernel(t)
	path := pinMap(t)
	inChild(t, name, "TLD_MAP_PATH="+path, "TLD_GO_CLI="+tldCLI(t))
}
