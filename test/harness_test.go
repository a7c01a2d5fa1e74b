package test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// listenTimeout bounds how long a started sluice may take to log that it
// listens.
const listenTimeout = 10 * time.Second

// logBuffer is an io.Writer, safe for concurrent use, that keeps everything
// written to it and lets readers wait for a line.
type logBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every Write
}

func newLogBuffer() *logBuffer {
	return &logBuffer{changed: make(chan struct{})}
}

// Write appends p and wakes the waiters.
func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	close(b.changed)
	b.changed = make(chan struct{})
	return len(p), nil
}

// String returns everything written so far.
func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// snapshot returns the complete lines written so far and a channel closed
// by the next Write.
func (b *logBuffer) snapshot() ([]string, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	} else {
		s = ""
	}
	if s == "" {
		return nil, b.changed
	}
	return strings.Split(s, "\n"), b.changed
}

// matching returns the complete lines that contain every one of subs.
func (b *logBuffer) matching(subs ...string) []string {
	lines, _ := b.snapshot()
	var out []string
	for _, l := range lines {
		if containsAll(l, subs) {
			out = append(out, l)
		}
	}
	return out
}

// waitLine waits for a complete line that contains every one of subs. It
// gives up when ctx is done or, after a last look, when stop is closed
// (the writer has finished).
func (b *logBuffer) waitLine(ctx context.Context, stop <-chan struct{}, subs ...string) (string, error) {
	stopped := false
	for {
		lines, changed := b.snapshot()
		for _, l := range lines {
			if containsAll(l, subs) {
				return l, nil
			}
		}
		if stopped {
			return "", fmt.Errorf("no line containing %q: process exited", subs)
		}
		select {
		case <-changed:
		case <-stop:
			stopped = true
		case <-ctx.Done():
			return "", fmt.Errorf("no line containing %q: %w", subs, ctx.Err())
		}
	}
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// logAttr returns the value of attribute key in one log/slog text record,
// unquoting it when slog quoted it.
func logAttr(line, key string) (string, bool) {
	for i := 0; ; {
		j := strings.Index(line[i:], key+"=")
		if j < 0 {
			return "", false
		}
		j += i
		if j > 0 && line[j-1] != ' ' {
			i = j + len(key)
			continue
		}
		v := line[j+len(key)+1:]
		if strings.HasPrefix(v, `"`) {
			q, err := strconv.QuotedPrefix(v)
			if err != nil {
				return "", false
			}
			u, err := strconv.Unquote(q)
			return u, err == nil
		}
		if k := strings.IndexByte(v, ' '); k >= 0 {
			v = v[:k]
		}
		return v, true
	}
}

// sluiceProc is one running sluice process started by a test.
type sluiceProc struct {
	t      testing.TB
	cmd    *exec.Cmd
	stdout *logBuffer
	stderr *logBuffer
	done   chan struct{} // closed when the process has exited
	// waitErr is the result of cmd.Wait; read it only after done is closed.
	waitErr error

	// network ("tcp" or "unix") and addr are the listening address taken
	// from the msg=listening log line.
	network, addr string
}

// startSluice starts `sluice args...` and waits until it logs that it
// listens. See startSluiceWrapped.
func startSluice(t testing.TB, args ...string) *sluiceProc {
	t.Helper()
	return startSluiceWrapped(t, nil, args...)
}

// startSluiceWrapped starts sluice with args behind the command prefix wrap
// (such as "ip netns exec NS" or "prlimit --nofile=64:64 --", both of which
// exec sluice in place, so the PID is sluice's), waits up to listenTimeout
// for the msg=listening line and parses its addr= attribute. The process is
// killed with SIGKILL in t.Cleanup if it still runs, and its output is
// logged when the test failed.
func startSluiceWrapped(t testing.TB, wrap []string, args ...string) *sluiceProc {
	t.Helper()
	p := spawnSluice(t, wrap, args...)
	ctx, cancel := context.WithTimeout(context.Background(), listenTimeout)
	defer cancel()
	line, err := p.stderr.waitLine(ctx, p.done, "msg=listening")
	if err != nil {
		t.Fatalf("sluice %s: waiting for msg=listening: %v (exit: %v)", strings.Join(args, " "), err, p.exitStatus())
	}
	addr, ok := logAttr(line, "addr")
	if !ok || addr == "" {
		t.Fatalf("sluice listening line has no addr= attribute: %q", line)
	}
	p.addr = addr
	p.network = "tcp"
	if strings.HasPrefix(addr, "/") || strings.HasPrefix(addr, "@") {
		p.network = "unix"
	}
	return p
}

// spawnSluice starts sluice without waiting for it to listen.
func spawnSluice(t testing.TB, wrap []string, args ...string) *sluiceProc {
	t.Helper()
	argv := append(append(append([]string{}, wrap...), sluiceBin(t)), args...)
	p := &sluiceProc{
		t:      t,
		cmd:    exec.Command(argv[0], argv[1:]...),
		stdout: newLogBuffer(),
		stderr: newLogBuffer(),
		done:   make(chan struct{}),
	}
	p.cmd.Stdout = p.stdout
	p.cmd.Stderr = p.stderr
	p.cmd.WaitDelay = 5 * time.Second
	// Should the test binary die, take sluice with it.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %q: %v", argv, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
		}
		<-p.done
		if t.Failed() {
			t.Logf("sluice %s (pid %d) exit: %v\nstderr:\n%s", strings.Join(args, " "), p.cmd.Process.Pid, p.exitStatus(), p.stderr)
			if s := p.stdout.String(); s != "" {
				t.Logf("stdout:\n%s", s)
			}
		}
	})
	return p
}

// pid returns the process ID of sluice.
func (p *sluiceProc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has exited.
func (p *sluiceProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitStatus describes how the process ended, or "running".
func (p *sluiceProc) exitStatus() string {
	if !p.exited() {
		return "running"
	}
	if p.waitErr == nil {
		return "exit status 0"
	}
	return p.waitErr.Error()
}

// signal sends sig to the sluice process.
func (p *sluiceProc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v to sluice: %v", sig, err)
	}
}

// waitExit waits up to d for the process to exit and returns its exit code
// (-1 when killed by a signal) and how long it took.
func (p *sluiceProc) waitExit(d time.Duration) (code int, took time.Duration, err error) {
	start := time.Now()
	select {
	case <-p.done:
	case <-time.After(d):
		return 0, time.Since(start), fmt.Errorf("sluice still running after %v", d)
	}
	took = time.Since(start)
	if p.waitErr == nil {
		return 0, took, nil
	}
	var ee *exec.ExitError
	if errors.As(p.waitErr, &ee) {
		return ee.ExitCode(), took, nil
	}
	return 0, took, p.waitErr
}

// waitLog waits up to d for a stderr line containing every one of subs.
func (p *sluiceProc) waitLog(d time.Duration, subs ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return p.stderr.waitLine(ctx, p.done, subs...)
}

// dial connects to the address sluice listens on.
func (p *sluiceProc) dial(t testing.TB) net.Conn {
	t.Helper()
	c, err := p.tryDial()
	if err != nil {
		t.Fatalf("dial sluice: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// tryDial connects to sluice and returns the error instead of failing. The
// caller closes the connection.
func (p *sluiceProc) tryDial() (net.Conn, error) {
	return net.DialTimeout(p.network, p.addr, 5*time.Second)
}

// runResult is the outcome of a sluice command that runs to completion.
type runResult struct {
	stdout, stderr string
	code           int
}

// runSluice runs sluice with args to completion (at most 10 s) and returns
// its output and exit code.
func runSluice(t testing.TB, args ...string) runResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, sluiceBin(t), args...)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	res := runResult{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("sluice %s: still running after 10s\nstderr:\n%s", strings.Join(args, " "), res.stderr)
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("sluice %s: %v", strings.Join(args, " "), err)
	}
	return res
}

// requireRoot skips t unless the test runs as root.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root (network namespaces)")
	}
}

// requireTool returns the path of an executable from $PATH or skips t.
func requireTool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("skipped: %s not found in $PATH (Debian package %s)", name, pkg)
	}
	return p
}

// shortTempDir returns a fresh directory with a path short enough for a
// unix socket (sun_path holds 108 bytes), removed in t.Cleanup.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sluice-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Clean(dir)
}
