package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The test binary re-executes itself as a tiny client where the test
// process cannot reach, such as inside a network namespace. TestMain runs
// the helper named by helperEnv instead of the tests.
const (
	helperEnv     = "SLUICE_TEST_HELPER"
	helperAddrEnv = "SLUICE_TEST_ADDR"
	// helperAwaitClose dials $SLUICE_TEST_ADDR (TCP), reads for at most
	// 5 s and prints a helperReport as JSON.
	helperAwaitClose = "await-close"
)

// helperReport is what helperAwaitClose prints.
type helperReport struct {
	Outcome   outcome `json:"outcome"`
	ElapsedMS int64   `json:"elapsed_ms"` // from connected to the end of the read
	Err       string  `json:"err,omitempty"`
}

// runHelper runs helper name and returns the process exit code.
func runHelper(name string) int {
	switch name {
	case helperAwaitClose:
		var rep helperReport
		c, err := net.DialTimeout("tcp", os.Getenv(helperAddrEnv), 5*time.Second)
		if err != nil {
			rep.Outcome, rep.Err = "dial error", err.Error()
		} else {
			var took time.Duration
			rep.Outcome, took, err = awaitClose(c, 5*time.Second)
			rep.ElapsedMS = took.Milliseconds()
			if err != nil {
				rep.Err = err.Error()
			}
			c.Close()
		}
		_ = json.NewEncoder(os.Stdout).Encode(rep)
		return 0
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", helperEnv, name)
		return 2
	}
}

// runHelperWrapped runs the test binary as helper name behind the command
// prefix wrap, with addr in helperAddrEnv, and decodes its report.
func runHelperWrapped(t testing.TB, wrap []string, name, addr string) helperReport {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	argv := append(append([]string{}, wrap...), self)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), helperEnv+"="+name, helperAddrEnv+"="+addr)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helper %s: %v\nstderr:\n%s", name, err, stderr.String())
	}
	var rep helperReport
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("helper %s: decode report %q: %v\nstderr:\n%s", name, stdout.String(), err, stderr.String())
	}
	return rep
}

// Addresses of the unroutable network set up by newBlackholeNetns.
const (
	blackholeLocal  = "10.99.0.1/24"
	blackholeTarget = "10.99.0.2"
)

// newNetns creates a network namespace with lo up, deleted in t.Cleanup,
// and returns its name and a func running `ip -n NS ARGS...`. It skips t
// when not root or when ip is missing.
func newNetns(t testing.TB) (string, func(args ...string) error) {
	t.Helper()
	requireRoot(t)
	ip := requireTool(t, "ip", "iproute2")
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	ns := "sluice-test-" + hex.EncodeToString(rnd[:])
	run := func(args ...string) error {
		out, err := exec.Command(ip, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
		return nil
	}
	if err := run("netns", "add", ns); err != nil {
		t.Skipf("skipped: cannot create a network namespace: %v", err)
	}
	t.Cleanup(func() {
		if err := run("netns", "del", ns); err != nil {
			t.Errorf("delete network namespace: %v", err)
		}
	})
	in := func(args ...string) error { return run(append([]string{"-n", ns}, args...)...) }
	if err := in("link", "set", "lo", "up"); err != nil {
		t.Fatal(err)
	}
	return ns, in
}

// newBlackholeNetns creates a network namespace (newNetns) with a link
// holding blackholeLocal, on which SYNs to blackholeTarget go nowhere. It
// uses a dummy link, or where the kernel has no dummy driver a veth pair
// whose far end has no address and a permanent neighbour entry, so the SYN
// leaves and is dropped.
func newBlackholeNetns(t testing.TB) string {
	t.Helper()
	ns, run := newNetns(t)
	must := func(args ...string) {
		t.Helper()
		if err := run(args...); err != nil {
			t.Fatal(err)
		}
	}
	if run("link", "add", "d0", "type", "dummy") == nil {
		must("addr", "add", blackholeLocal, "dev", "d0")
		must("link", "set", "d0", "up")
		return ns
	}
	if err := run("link", "add", "d0", "type", "veth", "peer", "name", "d1"); err != nil {
		t.Skipf("skipped: neither dummy nor veth links are available: %v", err)
	}
	must("addr", "add", blackholeLocal, "dev", "d0")
	must("link", "set", "d1", "up")
	must("link", "set", "d0", "up")
	must("neigh", "add", blackholeTarget, "lladdr", "02:00:00:00:00:02", "dev", "d0", "nud", "permanent")
	return ns
}
