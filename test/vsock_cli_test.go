package test

import (
	"io"
	"strings"
	"testing"
	"time"
)

// TestVsockCLIErrors checks the vsock address errors sluice gives on the
// build host. Nothing here connects or binds an AF_VSOCK socket (the host
// kernel has no vsock loopback; the vsock data path is tested inside the
// boards, make board-test): at most sluice probes with one unbound socket.
func TestVsockCLIErrors(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		mention []string // one of these must appear on stderr
	}{
		{"bad CID", []string{"forward", "vsock:guest:5000", "127.0.0.1:1"}, []string{`vsock CID "guest" is not a number`}},
		{"missing port", []string{"forward", "127.0.0.1:0", "vsock:3"}, []string{"missing :PORT after the vsock CID"}},
		{"port out of range", []string{"forward", "vsock:any:4294967295", "127.0.0.1:1"}, []string{`vsock port "4294967295"`}},
		{"any as upstream", []string{"forward", "127.0.0.1:0", "vsock:any:5000"}, []string{"vsock:any can only listen", "vsock is not supported by this kernel"}},
		{"bad allow rule", []string{"forward", "--allow", "10.1.2.3/8:80", "127.0.0.1:0", "127.0.0.1:1"}, []string{"did you mean 10.0.0.0/8?"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := runSluice(t, tt.args...)
			if res.code == 0 {
				t.Errorf("sluice %s: exit code 0, want non-zero", strings.Join(tt.args, " "))
			}
			found := false
			for _, m := range tt.mention {
				found = found || strings.Contains(res.stderr, m)
			}
			if !found {
				t.Errorf("sluice %s: stderr does not say %q:\n%s", strings.Join(tt.args, " "), tt.mention, res.stderr)
			}
			checkNoPanic(t, res.stdout+res.stderr)
		})
	}
}

// TestAllowlist runs sluice forward with --allow: an upstream the list
// allows is relayed, one it does not is refused at once and logged.
func TestAllowlist(t *testing.T) {
	t.Parallel()
	b := startEcho(t)
	port := b.upstream()[strings.LastIndexByte(b.upstream(), ':')+1:]

	t.Run("allowed", func(t *testing.T) {
		t.Parallel()
		p := startSluice(t, "forward", "--allow", "10.0.0.0/8:*", "--allow", "127.0.0.0/8:"+port, "127.0.0.1:0", b.upstream())
		c := p.dial(t)
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		msg := []byte("through the allowlist")
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != string(msg) {
			t.Fatalf("echo through sluice: %q, %v; want %q", got, err, msg)
		}
	})
	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		p := startSluice(t, "forward", "--allow", "127.0.0.1:1-2", "--allow", "localhost:"+port, "127.0.0.1:0", b.upstream())
		c := p.dial(t)
		o, took, err := awaitClose(c, 3*time.Second)
		if !o.closed() || took > time.Second {
			t.Errorf("client of a refused upstream: got %s (%v) after %v, want EOF or reset within 1s", o, err, took.Round(time.Millisecond))
		}
		line, err := p.waitLog(3*time.Second, `msg="upstream not allowed"`)
		if err != nil {
			t.Fatalf("stderr: %v", err)
		}
		if v, _ := logAttr(line, "level"); v != "WARN" {
			t.Errorf("upstream not allowed: level=%q, want WARN: %s", v, line)
		}
	})
}
