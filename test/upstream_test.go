package test

import (
	"net"
	"testing"
	"time"
)

// closedPort returns a 127.0.0.1 address nothing listens on.
func closedPort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestUpstreamRefused checks that a client whose upstream refuses the
// connection is closed at once, and that the failure is logged at WARN,
// rate-limited.
func TestUpstreamRefused(t *testing.T) {
	t.Parallel()
	p := startSluice(t, "forward", "127.0.0.1:0", "tcp:"+closedPort(t))

	c := p.dial(t)
	o, took, err := awaitClose(c, 3*time.Second)
	if !o.closed() || took > time.Second {
		t.Errorf("client of a refused upstream: got %s (%v) after %v, want EOF or reset within 1s", o, err, took.Round(time.Millisecond))
	}
	line, err := p.waitLog(3*time.Second, `msg="upstream connect failed"`, "connection refused")
	if err != nil {
		t.Fatalf("stderr: %v", err)
	}
	if v, _ := logAttr(line, "level"); v != "WARN" {
		t.Errorf("upstream connect failed: level=%q, want WARN: %s", v, line)
	}
	if _, ok := logAttr(line, "err"); !ok {
		t.Errorf("upstream connect failed: no err= attribute: %s", line)
	}

	// A burst of failures must not log a line each.
	const burst = 50
	for i := range burst {
		c, err := p.tryDial()
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		if o, took, err := awaitClose(c, 3*time.Second); !o.closed() || took > time.Second {
			t.Errorf("burst client %d: got %s (%v) after %v, want EOF or reset within 1s", i, o, err, took.Round(time.Millisecond))
		}
		c.Close()
	}
	n := len(p.stderr.matching("upstream connect failed"))
	t.Logf("%d refused upstream connections logged %d upstream connect failed lines", burst+1, n)
	if n > burst/2 {
		t.Errorf("%d refused upstream connections logged %d upstream connect failed lines, want rate-limited (at most %d)", burst+1, n, burst/2)
	}
}

// TestIntegrationUpstreamConnectTimeout runs sluice inside a network
// namespace whose upstream address swallows SYNs, and checks that
// --connect-timeout closes the client in time and logs a timeout.
func TestIntegrationUpstreamConnectTimeout(t *testing.T) {
	t.Parallel()
	ns := newBlackholeNetns(t)
	wrap := []string{"ip", "netns", "exec", ns}
	p := startSluiceWrapped(t, wrap, "forward", "--connect-timeout", "500ms", "127.0.0.1:0", blackholeTarget+":80")

	rep := runHelperWrapped(t, wrap, helperAwaitClose, p.addr)
	took := time.Duration(rep.ElapsedMS) * time.Millisecond
	if !rep.Outcome.closed() || took > 2*time.Second {
		t.Errorf("client of an unreachable upstream: got %s (%s) after %v, want EOF or reset within 2s", rep.Outcome, rep.Err, took)
	}
	if took < 400*time.Millisecond {
		t.Errorf("client closed after %v, before the 500ms connect timeout could expire", took)
	}
	line, err := p.waitLog(3*time.Second, `msg="upstream connect failed"`)
	if err != nil {
		t.Fatalf("stderr: %v", err)
	}
	if v, _ := logAttr(line, "err"); !containsAll(v, []string{"timeout"}) {
		t.Errorf("upstream connect failed: err=%q, want a connect timeout: %s", v, line)
	}
}
