//go:build !nobpf

package telemetry

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"

	"github.com/sluice-proxy/sluice/pkg/endpoint"
	"github.com/sluice-proxy/sluice/pkg/reactor"
	"github.com/sluice-proxy/sluice/pkg/relay"
)

// openKernelOrSkip opens telemetry and skips the test, saying why, unless
// the source want accepts is active.
func openKernelOrSkip(t *testing.T, what string, want func(Source) bool) *Telemetry {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to load eBPF programs")
	}
	tel, err := Open(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if src := tel.Source(); !want(src) {
		tel.Close()
		t.Skipf("%s is not available here: %s", what, src)
	}
	t.Cleanup(func() {
		if err := tel.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return tel
}

// relayed pushes ab bytes from a to b and ba bytes back through a relay on
// a one-loop reactor, waits for the relay to end and returns the loop's
// TID and the bytes the relay counted.
func relayed(t *testing.T, ab, ba int64) (tid int, moved uint64) {
	t.Helper()
	r, err := reactor.New(reactor.Config{Loops: 1})
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	defer r.Stop()
	loop := r.Loops()[0]
	for loop.TID() == 0 {
		time.Sleep(time.Millisecond)
	}
	pool := relay.PoolSet(relay.PoolConfig{}, 1)[0]
	ca, fa := innerPair(t)
	cb, fb := innerPair(t)
	done := make(chan uint64, 1)
	loop.Post(func() {
		for _, fd := range []int{fa, fb} {
			if err := loop.Register(fd, endpoint.ConnEvents, nil); err != nil {
				t.Error(err)
			}
		}
		relay.Start(loop, pool, fa, fb, relay.Options{Done: func(rl *relay.Relay, err error) {
			if err != nil {
				t.Errorf("relay ended with %v", err)
			}
			done <- rl.BytesAB() + rl.BytesBA()
		}})
	})
	errs := make(chan error, 4)
	pump := func(c *net.TCPConn, n int64) {
		_, err := io.CopyN(c, zeros{}, n)
		if err == nil {
			err = c.CloseWrite()
		}
		errs <- err
	}
	drain := func(c *net.TCPConn, n int64) {
		got, err := io.Copy(io.Discard, c)
		if err == nil && got != n {
			err = fmt.Errorf("received %d bytes, want %d", got, n)
		}
		errs <- err
	}
	go pump(ca, ab)
	go pump(cb, ba)
	go drain(cb, ab)
	go drain(ca, ba)
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	select {
	case moved = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("relay did not end")
	}
	return loop.TID(), moved
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// innerPair returns the test's end of a loopback TCP connection and a
// non-blocking dup of the other end for the relay.
func innerPair(t *testing.T) (*net.TCPConn, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	outer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { outer.Close() })
	in, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	fd := sockFD(t, in.(*net.TCPConn), syscall.Dup)
	if err := syscall.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	return outer.(*net.TCPConn), fd
}

// sockFD applies f to c's descriptor.
func sockFD(t *testing.T, c *net.TCPConn, f func(int) (int, error)) int {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var ferr error
	if err := raw.Control(func(s uintptr) { v, ferr = f(int(s)) }); err != nil {
		t.Fatal(err)
	}
	if ferr != nil {
		t.Fatal(ferr)
	}
	return v
}

func within(got, want uint64, frac float64) bool {
	return math.Abs(float64(got)-float64(want)) <= frac*float64(want)
}

// TestIntegrationSendLengthBytes relays 96 MiB and checks that the bytes
// tp_btf/sock_send_length counted for the loop's thread match what the
// relay delivered and what the test sent.
func TestIntegrationSendLengthBytes(t *testing.T) {
	tel := openKernelOrSkip(t, "tp_btf/sock_send_length (kernel >= 6.3 with BTF)",
		func(s Source) bool { return s.Bytes == BytesSendLength })
	if _, err := tel.Sample(); err != nil {
		t.Fatal(err)
	}
	const ab, ba = 64 << 20, 32 << 20
	tid, moved := relayed(t, ab, ba)
	s, err := tel.Sample()
	if err != nil {
		t.Fatal(err)
	}
	th, ok := s.Thread(tid)
	if !ok {
		t.Fatalf("loop thread %d not in the snapshot", tid)
	}
	t.Logf("sent through the relay %d, relay counted %d, eBPF on the loop thread %d (%+.4f%%), whole process %d",
		ab+ba, moved, th.Sent, 100*(float64(th.Sent)-float64(moved))/float64(moved), s.Bytes)
	if moved != ab+ba {
		t.Errorf("relay counted %d bytes, want %d", moved, ab+ba)
	}
	if !within(th.Sent, ab+ba, 0.01) {
		t.Errorf("eBPF counted %d bytes sent by the loop thread, want %d within 1%%", th.Sent, ab+ba)
	}
	// The test's own senders moved the same bytes into the relay.
	if !within(s.Bytes, 2*(ab+ba), 0.01) {
		t.Errorf("eBPF counted %d bytes sent by the process, want %d within 1%%", s.Bytes, 2*(ab+ba))
	}
}

// TestIntegrationSockopsBytes checks the sockops program: bytes acked by
// every socket of the process (the test's and the relay's) against what
// they sent, and a live socket's RTT found by its cookie.
func TestIntegrationSockopsBytes(t *testing.T) {
	tel := openKernelOrSkip(t, "sockops on cgroup v2",
		func(s Source) bool { return s.RTT == RTTSockops })
	k := tel.kernel
	_, acked0, err := k.sockets()
	if err != nil {
		t.Fatal(err)
	}
	const ab, ba = 48 << 20, 16 << 20
	_, moved := relayed(t, ab, ba)
	want := 2 * moved // each byte was sent by a test socket, then by the relay
	var acked uint64
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		live, closed, err := k.sockets()
		if err != nil {
			t.Fatal(err)
		}
		acked = closed - acked0
		for _, s := range live {
			acked += s.AckedTotal
		}
		if within(acked, want, 0.01) {
			break
		}
	}
	t.Logf("sockets sent %d, sockops counted %d acked (%+.4f%%)", want, acked, 100*(float64(acked)-float64(want))/float64(want))
	if !within(acked, want, 0.01) {
		t.Errorf("sockops counted %d bytes acked, want %d within 1%%", acked, want)
	}

	// RTT of one live connection, found by its socket cookie.
	c, peer := loopbackConn(t)
	sent := make(chan error, 1)
	go func() { _, err := io.CopyN(c, zeros{}, 4<<20); sent <- err }()
	if _, err := io.CopyN(io.Discard, peer, 4<<20); err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the last ACK
	cookie := uint64(sockFD(t, c, func(fd int) (int, error) {
		v, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
		return int(v), err
	}))
	s, err := tel.Sample()
	if err != nil {
		t.Fatal(err)
	}
	var found *Socket
	for i := range s.Sockets {
		if s.Sockets[i].Cookie == cookie {
			found = &s.Sockets[i]
		}
	}
	if found == nil {
		t.Fatalf("socket cookie %d not among %d sockets", cookie, len(s.Sockets))
	}
	t.Logf("loopback socket: acked %d, srtt %v", found.AckedTotal, found.SRTT)
	// Live counters are as of the last ACK that gave an RTT sample.
	if !within(found.AckedTotal, 4<<20, 0.01) {
		t.Errorf("socket acked %d, want %d within 1%%", found.AckedTotal, 4<<20)
	}
	if found.SRTT <= 0 || found.SRTT > time.Second {
		t.Errorf("loopback srtt %v, want between 0 and 1s", found.SRTT)
	}
}

func loopbackConn(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	p, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return c.(*net.TCPConn), p.(*net.TCPConn)
}

// spinAgainstProc spins a thread for 1 s and compares the CPU time
// measure reports for it (measure gets the thread's id and run, which
// does the spin between two /proc readings) with /proc's, within 10%. The
// two clocks differ in grain (/proc counts 10 ms ticks; a switch timer
// counts wall time on the CPU, steal time included) on a machine that may
// be busy, so it tries up to 3 times: a wrong count (double, none) misses
// every time.
func spinAgainstProc(t *testing.T, name string, measure func(tid int, run func()) time.Duration) {
	t.Helper()
	var tries []string
	for range 3 {
		start := make(chan struct{})
		tid, done := spin(t, time.Second, start)
		time.Sleep(20 * time.Millisecond) // let it go to sleep, switched out
		var p0, p1 time.Duration
		got := measure(tid, func() {
			p0 = procCPU(t, tid)
			close(start)
			<-done
			time.Sleep(20 * time.Millisecond)
			p1 = procCPU(t, tid)
		})
		proc := p1 - p0
		t.Logf("spinning thread: %s %v, /proc %v (%+.2f%%)", name, got, proc, 100*(got.Seconds()-proc.Seconds())/proc.Seconds())
		if proc < time.Second/2 {
			t.Fatalf("the thread got only %v of CPU in 1 s: machine too busy to compare", proc)
		}
		if within(uint64(got), uint64(proc), 0.10) {
			return
		}
		tries = append(tries, fmt.Sprintf("%v against %v", got, proc))
	}
	t.Errorf("%s against /proc, 3 tries: %s; want within 10%%", name, strings.Join(tries, ", "))
}

// TestIntegrationThreadCPU checks sched_switch's on-CPU time of a spinning
// thread, and of a relay loop's thread, against /proc within 10%.
func TestIntegrationThreadCPU(t *testing.T) {
	tel := openKernelOrSkip(t, "raw_tracepoint/sched_switch",
		func(s Source) bool { return s.CPU == CPUSchedRuntime || s.CPU == CPUSchedSwitch })
	spinAgainstProc(t, "sched_switch", func(tid int, run func()) time.Duration {
		s0, err := tel.Sample()
		if err != nil {
			t.Fatal(err)
		}
		run()
		s1, err := tel.Sample()
		if err != nil {
			t.Fatal(err)
		}
		b0, _ := s0.Thread(tid)
		b1, _ := s1.Thread(tid)
		return b1.CPUTotal - b0.CPUTotal
	})

	// A relay loop: it sleeps in epoll_wait once the relay ends.
	tidLoop, _ := relayed(t, 1<<30, 0)
	time.Sleep(20 * time.Millisecond)
	s2, err := tel.Sample()
	if err != nil {
		t.Fatal(err)
	}
	th, _ := s2.Thread(tidLoop)
	procLoop := procCPU(t, tidLoop)
	t.Logf("relay loop thread: sched_switch %v, /proc %v", th.CPUTotal, procLoop)
	if procLoop >= 200*time.Millisecond && !within(uint64(th.CPUTotal), uint64(procLoop), 0.10) {
		t.Errorf("loop thread: sched_switch %v, /proc %v: want within 10%%", th.CPUTotal, procLoop)
	}
}

// TestIntegrationSwitchTimerCPU checks the program used on kernels without
// BTF, raw_tracepoint/sched_switch timing the switches, against /proc.
func TestIntegrationSwitchTimerCPU(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to load eBPF programs")
	}
	if err := features.HaveProgramType(ebpf.RawTracepoint); err != nil {
		t.Skipf("raw tracepoints unavailable: %v", err)
	}
	spec, err := loadTelemetry()
	if err != nil {
		t.Fatal(err)
	}
	if err := spec.Variables["target_tgid"].Set(uint32(os.Getpid())); err != nil {
		t.Fatal(err)
	}
	b := &bpfSource{}
	if err := b.openSwitchTimer(spec, nil); err != nil {
		t.Fatal(err)
	}
	defer b.close()
	spinAgainstProc(t, "switch timer", func(tid int, run func()) time.Duration {
		run()
		ts := []Thread{{TID: tid}}
		if err := b.threads(ts); err != nil {
			t.Fatal(err)
		}
		// Loaded while the thread slept: everything counted is the spin.
		return ts[0].CPUTotal
	})
}

func procCPU(t *testing.T, tid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/stat", tid))
	if err != nil {
		t.Fatal(err)
	}
	d, err := parseStatCPU(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// helperEnv makes the test binary act as a small sluice: open telemetry,
// print the cgroup it joined, Close on SIGTERM.
const helperEnv = "SLUICE_TELEMETRY_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helper())
	}
	os.Exit(m.Run())
}

func helper() int {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	tel, err := Open(Config{})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	b, _ := os.ReadFile("/proc/self/cgroup")
	fmt.Println("source", tel.Source().RTT, strings.TrimSpace(cgroupV2Line(string(b))))
	if os.Getenv(helperEnv) == "drop" {
		// What a daemon with `option user` does after opening telemetry.
		if err := syscall.Setuid(65534); err != nil {
			fmt.Println("setuid", err)
			return 1
		}
		s, err := tel.Sample()
		fmt.Printf("sample %v|%s\n", err, s.Source)
		fmt.Printf("close %v\n", tel.Close())
		return 0
	}
	<-sig
	if err := tel.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func cgroupV2Line(s string) string {
	for line := range strings.SplitSeq(s, "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p
		}
	}
	return ""
}

// startHelper runs the helper and returns it with the cgroup it joined.
func startHelper(t *testing.T, mode string) (*exec.Cmd, *bufio.Reader, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	out := bufio.NewReader(stdout)
	line, err := out.ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper: %v", err)
	}
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "source" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper said %q", line)
	}
	if f[1] != RTTSockops {
		cmd.Process.Kill()
		cmd.Wait()
		t.Skipf("sockops not loaded in the helper, no cgroup to check")
	}
	return cmd, out, f[2]
}

// TestIntegrationCgroupCleanup checks that sluice's cgroup holds only
// sluice and is removed on Close after SIGTERM, and that one left behind by
// a SIGKILLed process is removed by the next Open.
func TestIntegrationCgroupCleanup(t *testing.T) {
	tel := openKernelOrSkip(t, "sockops on cgroup v2", func(s Source) bool { return s.RTT == RTTSockops })
	root, err := cgroup2Mount("/proc")
	if err != nil {
		t.Fatal(err)
	}
	tel.Close() // the helpers below are the processes under test

	cmd, _, rel := startHelper(t, "term")
	dir := filepath.Join(root, rel)
	want := cgroupPrefix + strconv.Itoa(cmd.Process.Pid)
	if filepath.Base(dir) != want {
		t.Errorf("helper is in cgroup %s, want one named %s", rel, want)
	}
	procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(procs)) != strconv.Itoa(cmd.Process.Pid) {
		t.Errorf("cgroup %s holds %q, want only the helper %d", dir, procs, cmd.Process.Pid)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("helper after SIGTERM: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("cgroup %s still there after SIGTERM (stat: %v)", dir, err)
	}

	cmd, _, rel = startHelper(t, "kill")
	dir = filepath.Join(root, rel)
	cmd.Process.Kill()
	cmd.Wait()
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("after SIGKILL the cgroup %s should remain until the next start: %v", dir, err)
	}
	tel2, err := Open(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer tel2.Close()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("stale cgroup %s not removed by the next Open (stat: %v)", dir, err)
	}
}

// TestIntegrationPrivilegeDrop checks a process that drops root after
// Open: sampling goes on (from the maps where the kernel still lets the
// open map fds be read, from /proc where it refuses), Close cannot move
// the process back, and the cgroup left behind is removed by the next Open.
func TestIntegrationPrivilegeDrop(t *testing.T) {
	openKernelOrSkip(t, "sockops on cgroup v2", func(s Source) bool { return s.RTT == RTTSockops }).Close()
	root, err := cgroup2Mount("/proc")
	if err != nil {
		t.Fatal(err)
	}
	cmd, out, rel := startHelper(t, "drop")
	rest, _ := io.ReadAll(out)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v; said %s", err, rest)
	}
	t.Logf("helper after setuid: %s", rest)
	lines := strings.Split(strings.TrimSpace(string(rest)), "\n")
	if len(lines) != 2 {
		t.Fatalf("helper said %q, want a sample and a close line", rest)
	}
	switch {
	case strings.HasPrefix(lines[0], "sample <nil>|ebpf ("):
	case strings.HasPrefix(lines[0], "sample <nil>|proc (") && strings.Contains(lines[0], "reading eBPF maps failed"):
	default:
		t.Errorf("sample after dropping privileges: %q, want no error, and the reason if it fell back to /proc", lines[0])
	}
	dir := filepath.Join(root, rel)
	if _, err := os.Stat(dir); err != nil {
		if !strings.HasPrefix(lines[1], "close <nil>") {
			t.Errorf("close said %q and the cgroup is gone (stat: %v)", lines[1], err)
		}
		return // the kernel let the unprivileged process move back
	}
	tel, err := Open(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Close()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("cgroup %s left by the unprivileged process not removed by the next Open (stat: %v)", dir, err)
	}
}
