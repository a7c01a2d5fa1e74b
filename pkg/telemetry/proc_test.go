package telemetry

import (
	"errors"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		want    time.Duration
		wantErr bool
	}{
		{"plain", "42 (sluice) S 1 42 42 0 -1 4194624 100 0 0 0 150 25 0 0 20 0 9 0 100 0 0", 1750 * time.Millisecond, false},
		{"name with spaces and parens", "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 1 0 0", 70 * time.Millisecond, false},
		{"zero", "1 (x) S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 1 0 0", 0, false},
		{"no name", "1 x S 0", 0, true},
		{"truncated", "1 (x) S 0 1 1 0", 0, true},
		{"not a number", "1 (x) S 0 1 1 0 -1 0 0 0 0 0 a 0 0 0", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatCPU(tt.line)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseStatCPU(%q) error = %v, want error %v", tt.line, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("parseStatCPU(%q) = %v, want %v", tt.line, got, tt.want)
			}
		})
	}
}

// spin burns d of CPU time (or 20 s of wall time on a very busy machine)
// on a locked OS thread, and returns its TID and a channel closed once the
// thread is done and about to sleep.
func spin(t *testing.T, d time.Duration, start <-chan struct{}) (tid int, done <-chan struct{}) {
	t.Helper()
	tids := make(chan int)
	fin := make(chan struct{})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	go func() {
		// Never unlocked: the thread exits with the goroutine, so no other
		// test inherits its CPU time.
		runtime.LockOSThread()
		tids <- syscall.Gettid()
		<-start
		from := threadCPU()
		for end := time.Now().Add(20 * time.Second); threadCPU()-from < d && time.Now().Before(end); {
		}
		close(fin)
		<-release // stay on this thread, asleep, until the test ends
	}()
	return <-tids, fin
}

func TestParseMeminfo(t *testing.T) {
	tests := []struct {
		name         string
		in           string
		avail, total uint64
	}{
		{"both", "MemTotal:       24576000 kB\nMemFree:         1000 kB\nMemAvailable:   12288000 kB\n", 12288000 << 10, 24576000 << 10},
		{"old kernel without MemAvailable", "MemTotal:  65536 kB\nMemFree:  1024 kB\n", 0, 65536 << 10},
		{"odd unit and garbage ignored", "MemTotal: 1 MB\nMemAvailable: x kB\nnonsense\n", 0, 0},
		{"empty", "", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			avail, total := parseMeminfo(tt.in)
			if avail != tt.avail || total != tt.total {
				t.Errorf("parseMeminfo = %d, %d; want %d, %d", avail, total, tt.avail, tt.total)
			}
		})
	}
}

func TestProcSource(t *testing.T) {
	var relayed atomic.Uint64
	relayed.Store(500) // moved before telemetry started: not counted
	tel, err := Open(Config{ProcOnly: true, RelayBytes: relayed.Load})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Close()
	src := tel.Source()
	if src.Bytes != BytesRelay || src.CPU != CPUProc || src.RTT != RTTNone || src.EBPF() {
		t.Fatalf("source = %+v, want relay counters and /proc only", src)
	}
	if !strings.HasPrefix(src.String(), "proc (") {
		t.Errorf("source line %q does not start with proc", src)
	}
	start := make(chan struct{})
	tid, done := spin(t, 300*time.Millisecond, start)
	first, err := tel.Sample()
	if err != nil {
		t.Fatal(err)
	}
	if first.Interval != 0 || first.Bytes != 0 {
		t.Errorf("first sample: interval %v bytes %d, want 0 and 0", first.Interval, first.Bytes)
	}
	close(start)
	<-done
	relayed.Add(12345)
	s, err := tel.Sample()
	if err != nil {
		t.Fatal(err)
	}
	if s.Bytes != 12345 || s.BytesTotal != 12345 {
		t.Errorf("bytes %d total %d, want 12345 and 12345", s.Bytes, s.BytesTotal)
	}
	if s.Interval <= 0 {
		t.Errorf("interval %v, want > 0", s.Interval)
	}
	if s.MemTotal == 0 || s.MemAvailable > s.MemTotal {
		t.Errorf("memory available %d of %d: want a total and no more available than that", s.MemAvailable, s.MemTotal)
	}
	th, ok := s.Thread(tid)
	if !ok {
		t.Fatalf("thread %d missing from %+v", tid, s.Threads)
	}
	// 300 ms of spinning, measured in 10 ms ticks; leave room for a busy
	// machine (and qemu-user) that gives the thread less than its share.
	if th.CPU < 50*time.Millisecond || th.CPU > 2*time.Second {
		t.Errorf("spinning thread used %v in the interval, want about 300ms", th.CPU)
	}
}

func TestOpenReportsSource(t *testing.T) {
	tel, err := Open(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := tel.Close(); err != nil {
			t.Error(err)
		}
	}()
	src := tel.Source()
	t.Logf("telemetry source: %s", src)
	if !src.EBPF() && len(src.Fallbacks) == 0 {
		t.Errorf("no eBPF source and no reason why: %+v", src)
	}
	if _, err := tel.Sample(); err != nil {
		t.Fatal(err)
	}
}

// threadCPU returns the calling thread's CPU time.
func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// failingKernel is an eBPF source whose maps can no longer be read.
type failingKernel struct{ closed bool }

var errDenied = errors.New("operation not permitted")

func (*failingKernel) source(s *Source) {
	*s = Source{Bytes: BytesSockops, CPU: CPUSchedSwitch, RTT: RTTSockops}
}
func (*failingKernel) threads([]Thread) error             { return errDenied }
func (*failingKernel) sockets() ([]Socket, uint64, error) { return nil, 0, errDenied }
func (k *failingKernel) close() error                     { k.closed = true; return nil }

func TestSampleFallsBackWhenMapsFail(t *testing.T) {
	var relayed atomic.Uint64
	tel, err := Open(Config{ProcOnly: true, RelayBytes: relayed.Load})
	if err != nil {
		t.Fatal(err)
	}
	k := &failingKernel{}
	tel.kernel, tel.reading = k, true
	k.source(&tel.src)
	s, err := tel.Sample()
	if err != nil {
		t.Fatalf("sample with unreadable maps: %v, want a /proc sample", err)
	}
	if s.Source.EBPF() || s.Interval != 0 {
		t.Errorf("sample source %s interval %v, want /proc only and a first interval", s.Source, s.Interval)
	}
	if got := tel.Source().String(); !strings.Contains(got, "reading eBPF maps failed") || !strings.Contains(got, errDenied.Error()) {
		t.Errorf("source %q does not say why it fell back", got)
	}
	relayed.Add(100)
	if s, err = tel.Sample(); err != nil || s.Bytes != 100 {
		t.Errorf("next sample: %d bytes, %v; want 100 from the relay counters", s.Bytes, err)
	}
	if err := tel.Close(); err != nil || !k.closed {
		t.Errorf("close: %v, programs closed %v; want nil and true", err, k.closed)
	}
}
