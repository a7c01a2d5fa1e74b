package test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// waitFile waits up to d for path to exist.
func waitFile(t testing.TB, path string, d time.Duration) {
	t.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if _, err := os.Stat(path); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s did not appear within %v", path, d)
}

// roundTrip dials addr and checks one echo round trip.
func roundTrip(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	return echoRoundTrip(c, []byte("ping through sluice"), 5*time.Second)
}

// TestDaemonSIGHUP checks SIGHUP reloads: an upstream fixed in the file
// is used from then on, an added service listens, and `sluice run` exits 0
// on SIGTERM and removes its control socket.
func TestDaemonSIGHUP(t *testing.T) {
	echoB := startEcho(t)
	cfg := newDaemonConfig(t)
	mainAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	extraAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.write(t, forwardSection("main", mainAddr, "tcp:"+closedPort(t)))
	p := startSluice(t, "run", "-c", cfg.path)
	if err := roundTrip(mainAddr); err == nil {
		t.Fatal("round trip to a closed upstream succeeded")
	}
	cfg.write(t, forwardSection("main", mainAddr, echoB.upstream())+forwardSection("extra", extraAddr, echoB.upstream()))
	p.signal(syscall.SIGHUP)
	if _, err := p.waitLog(5*time.Second, "msg=reloaded", "added=1", "changed=1"); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{mainAddr, extraAddr} {
		if err := roundTrip(a); err != nil {
			t.Errorf("after SIGHUP, %s: %v", a, err)
		}
	}
	p.signal(syscall.SIGTERM)
	if code, _, err := p.waitExit(10 * time.Second); err != nil || code != 0 {
		t.Fatalf("after SIGTERM: exit %d, %v", code, err)
	}
	if _, err := os.Stat(cfg.socket); err == nil {
		t.Errorf("control socket %s left behind", cfg.socket)
	}
}

// TestDaemonStats checks `sluice stats` (text and --json) and the control
// socket's mode.
func TestDaemonStats(t *testing.T) {
	echoB := startEcho(t)
	cfg := newDaemonConfig(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.write(t, forwardSection("web", addr, echoB.upstream()))
	startSluice(t, "run", "-c", cfg.path)
	fi, err := os.Stat(cfg.socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("control socket mode %v, want a socket with 0600", fi.Mode())
	}
	for range 3 {
		if err := roundTrip(addr); err != nil {
			t.Fatal(err)
		}
	}
	held, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := echoRoundTrip(held, []byte("x"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// Counters of a connection are added when it ends on its loop, a
	// moment after the client closed it.
	checks := map[string]float64{"active": 1, "accepted": 4, "relayed": 3, "bytes_up": 3*19 + 1, "bytes_down": 3*19 + 1}
	var st map[string]any
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st = daemonStats(t, cfg)
		web := serviceStats(t, st, "web")
		var wrong []string
		for k, want := range checks {
			if got, _ := web[k].(float64); got != want {
				wrong = append(wrong, fmt.Sprintf("%s = %v, want %v", k, web[k], want))
			}
		}
		if len(wrong) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats: %s", strings.Join(wrong, "; "))
		}
	}
	if st["loops"].(float64) != 2 || st["pipes_max"].(float64) <= 0 {
		t.Errorf("stats loops %v, pipes_max %v", st["loops"], st["pipes_max"])
	}
	if _, ok := st["pipes_in_use"]; !ok {
		t.Error("stats have no pipes_in_use")
	}
	res := runSluice(t, "stats", "-c", cfg.path)
	if res.code != 0 || !strings.Contains(res.stdout, "forward web") || !strings.Contains(res.stdout, "BYTES UP") || !strings.Contains(res.stdout, "2 loops") {
		t.Errorf("sluice stats: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
}

// TestDaemonClientWithoutDaemon checks the message when nothing runs.
func TestDaemonClientWithoutDaemon(t *testing.T) {
	cfg := newDaemonConfig(t)
	cfg.write(t, forwardSection("web", "127.0.0.1:1", "127.0.0.1:2"))
	for _, cmd := range []string{"stats", "reload"} {
		res := runSluice(t, cmd, "-c", cfg.path)
		if res.code != 1 || !strings.Contains(res.stderr, cfg.socket) || !strings.Contains(res.stderr, "is sluice running") {
			t.Errorf("sluice %s: exit %d, stderr %q", cmd, res.code, res.stderr)
		}
	}
}

// TestDaemonMemoryCap checks that past max_memory new connections are
// refused with a log line instead of relayed.
func TestDaemonMemoryCap(t *testing.T) {
	echoB := startEcho(t)
	cfg := newDaemonConfig(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	// No Go program runs in 64K: every connection is past the cap.
	cfg.global = "\toption max_memory '64K'\n"
	cfg.write(t, forwardSection("web", addr, echoB.upstream()))
	p := startSluice(t, "run", "-c", cfg.path)
	if err := roundTrip(addr); err == nil {
		t.Fatal("a connection past the memory cap was relayed")
	}
	if _, err := p.waitLog(5*time.Second, "memory cap", "max_memory is 65536"); err != nil {
		t.Fatal(err)
	}
	// Removing the cap by reload lets connections through again.
	cfg.global = ""
	cfg.write(t, forwardSection("web", addr, echoB.upstream()))
	if res := runSluice(t, "reload", "-c", cfg.path); res.code != 0 {
		t.Fatalf("reload: %s", res.stderr)
	}
	if err := roundTrip(addr); err != nil {
		t.Fatalf("after removing the cap: %v", err)
	}
}

// TestDaemonBalanceAndFailover checks round-robin over two live upstreams
// and failover past a dead one.
func TestDaemonBalanceAndFailover(t *testing.T) {
	a, b := startEcho(t), startEcho(t)
	cfg := newDaemonConfig(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.write(t, forwardSection("web", addr, a.upstream(), b.upstream()))
	startSluice(t, "run", "-c", cfg.path)
	for range 10 {
		if err := roundTrip(addr); err != nil {
			t.Fatal(err)
		}
	}
	if a.accepted.Load() != 5 || b.accepted.Load() != 5 {
		t.Errorf("round robin: upstreams accepted %d and %d, want 5 and 5", a.accepted.Load(), b.accepted.Load())
	}
	dead := "tcp:" + closedPort(t)
	cfg.write(t, forwardSection("web", addr, dead, b.upstream())+"\toption balance 'least_conns'\n")
	if res := runSluice(t, "reload", "-c", cfg.path); res.code != 0 {
		t.Fatalf("reload: %s", res.stderr)
	}
	for range 4 {
		if err := roundTrip(addr); err != nil {
			t.Fatalf("failover past %s: %v", dead, err)
		}
	}
	if b.accepted.Load() != 9 {
		t.Errorf("failover: live upstream accepted %d, want 9", b.accepted.Load())
	}
}

// TestDaemonLogFileCap checks that a log file stays under log_size, with
// the previous part kept as FILE.1.
func TestDaemonLogFileCap(t *testing.T) {
	echoB := startEcho(t)
	cfg := newDaemonConfig(t)
	logPath := filepath.Join(cfg.dir, "sluice.log")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.global = fmt.Sprintf("\toption log '%s'\n\toption log_size '4K'\n\toption log_level 'debug'\n", logPath)
	cfg.write(t, forwardSection("web", addr, echoB.upstream()))
	p := spawnSluice(t, nil, "run", "-c", cfg.path)
	waitFile(t, cfg.socket, 10*time.Second)
	for range 40 { // every reload logs a few lines
		if res := runSluice(t, "reload", "-c", cfg.path); res.code != 0 {
			t.Fatalf("reload: %s", res.stderr)
		}
	}
	p.signal(syscall.SIGTERM)
	if _, _, err := p.waitExit(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{logPath, logPath + ".1"} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatalf("log file: %v", err)
		}
		if fi.Size() > 4096 {
			t.Errorf("%s is %d bytes, over log_size 4K", f, fi.Size())
		}
	}
	if b, _ := os.ReadFile(logPath); !strings.Contains(string(b), "msg=stopped") {
		t.Errorf("log file does not end with msg=stopped:\n%s", b)
	}
	if s := p.stderr.String(); s != "" {
		t.Errorf("stderr not empty with a log file: %q", s)
	}
}

// TestIntegrationDaemonDropsPrivileges checks that sluice binds a port
// below 1024 as root, then runs as user nobody.
func TestIntegrationDaemonDropsPrivileges(t *testing.T) {
	requireRoot(t)
	echoB := startEcho(t)
	cfg := newDaemonConfig(t)
	if err := os.Chmod(cfg.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var addr string
	for port := 990; port > 900; port-- {
		if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			ln.Close()
			addr = fmt.Sprintf("127.0.0.1:%d", port)
			break
		}
	}
	if addr == "" {
		t.Skip("skipped: no free port from 900 to 990")
	}
	cfg.global = "\toption user 'nobody'\n"
	cfg.write(t, forwardSection("low", addr, echoB.upstream()))
	p := startSluice(t, "run", "-c", cfg.path)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid()))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "Uid:") && !strings.Contains(line, "65534") {
			t.Errorf("sluice runs as %q, want nobody (65534)", line)
		}
	}
	if err := roundTrip(addr); err != nil {
		t.Error(err)
	}
	// The control socket still answers after the drop.
	if st := daemonStats(t, cfg); serviceStats(t, st, "low")["accepted"].(float64) != 1 {
		t.Errorf("stats after dropping privileges: %v", st["services"])
	}
}

// TestIntegrationDaemonPrivilegedPortHint checks the error when a port
// below 1024 cannot be bound: sluice runs as nobody through setpriv.
func TestIntegrationDaemonPrivilegedPortHint(t *testing.T) {
	requireRoot(t)
	setpriv := requireTool(t, "setpriv", "util-linux")
	cfg := newDaemonConfig(t)
	if err := os.Chmod(cfg.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg.write(t, forwardSection("low", "127.0.0.1:999", "127.0.0.1:1"))
	p := spawnSluice(t, []string{setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--"}, "run", "-c", cfg.path)
	code, _, err := p.waitExit(10 * time.Second)
	if err != nil || code != 1 {
		t.Fatalf("exit %d, %v; want 1", code, err)
	}
	for _, want := range []string{"forward 'low'", "127.0.0.1:999", "permission denied", "ports below 1024 need root or CAP_NET_BIND_SERVICE"} {
		if !strings.Contains(p.stderr.String(), want) {
			t.Errorf("stderr does not contain %q:\n%s", want, p.stderr)
		}
	}
}

// threadSwitches returns the context switches of every thread of pid, by
// "TID (wait channel)", so a failure says which thread woke up and where it
// sleeps.
func threadSwitches(t testing.TB, pid int) map[string]int64 {
	t.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("threads of %d: %v", pid, err)
	}
	out := make(map[string]int64, len(tasks))
	for _, dir := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, "status"))
		if err != nil {
			continue // the thread exited
		}
		wchan, _ := os.ReadFile(filepath.Join(dir, "wchan"))
		key := fmt.Sprintf("%s (%s)", filepath.Base(dir), wchan)
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
				var x int64
				fmt.Sscan(strings.TrimSpace(v), &x)
				out[key] += x
			}
		}
	}
	return out
}

// switchesSince sums the switches in now that are not in before, and
// names the threads that switched.
func switchesSince(before, now map[string]int64) (int64, []string) {
	var sum int64
	var who []string
	for k, v := range now {
		tid, _, _ := strings.Cut(k, " ")
		var prev int64
		for bk, bv := range before {
			if btid, _, _ := strings.Cut(bk, " "); btid == tid {
				prev = bv
			}
		}
		if v > prev {
			sum += v - prev
			who = append(who, fmt.Sprintf("%s +%d", k, v-prev))
		}
	}
	sort.Strings(who)
	return sum, who
}

// TestDaemonIdleNoWakeups checks that an idle `sluice run` with a memory
// cap, a control socket and an interface watch (netlink) does not wake up:
// none of them may poll.
func TestDaemonIdleNoWakeups(t *testing.T) {
	cfg := newDaemonConfig(t)
	cfg.global = "\toption max_memory '24M'\n"
	cfg.write(t, forwardSection("a", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "127.0.0.1:1")+
		fmt.Sprintf("config forward 'b'\n\toption listen ':%d'\n\toption interface 'lo'\n\tlist upstream '127.0.0.1:1'\n", freePort(t)))
	// In a network namespace of its own where one can be made: the
	// interface watch wakes for every link or address change on the host
	// (a busy CI host has them), which is an event, not polling.
	var wrap []string
	if os.Geteuid() == 0 {
		if ip, err := exec.LookPath("ip"); err == nil {
			ns, _ := newNetns(t)
			wrap = []string{ip, "netns", "exec", ns}
		}
	}
	if wrap == nil {
		t.Log("not root or no ip(8): sluice runs in the host's network namespace, where link changes wake it")
	}
	p := startSluiceWrapped(t, wrap, "run", "-c", cfg.path)
	if _, err := p.waitLog(5*time.Second, "msg=running"); err != nil {
		t.Fatal(err)
	}
	// Start-up is not idling: after loading eBPF programs the runtime has
	// a one-off burst of activity about a second later (seen here: 6-10
	// switches in one 250 ms window, then none), later on a slow or busy
	// machine, and a netlink event from elsewhere on the host wakes the
	// interface watch once. So look for a quiet stretch: three seconds in a
	// row with at most 3 switches in all, within 20 seconds. Anything that
	// polls at least every three seconds never gets one.
	const window, quiet, limit = 3, 3, 20
	var perSecond []int64
	var who []string
	last := threadSwitches(t, p.pid())
	for len(perSecond) < limit {
		time.Sleep(time.Second)
		now := threadSwitches(t, p.pid())
		var n int64
		n, who = switchesSince(last, now)
		perSecond = append(perSecond, n)
		last = now
		if n := len(perSecond); n >= window {
			var sum int64
			for _, v := range perSecond[n-window:] {
				sum += v
			}
			if sum <= quiet {
				return
			}
		}
	}
	t.Errorf("idle sluice never had %d quiet seconds in a row in %d s: context switches per second %v, want about 0; in the last second: %s", window, limit, perSecond, strings.Join(who, ", "))
}
