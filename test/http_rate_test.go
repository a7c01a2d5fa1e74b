package test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Rate classes end to end: `sluice run -c` with config class sections,
// curl as the client, a local origin, each transfer timed against the
// configured rate (+-25%: make test runs on a loaded machine; make bench
// measures precisely) and checked byte for byte by sha256.

// rateListen is the proxy address of the rate tests (helper B's ports).
func rateListen(i int) string { return fmt.Sprintf("127.0.0.1:%d", 23000+i) }

// rateTransfer is what one curl run through the proxy moved.
type rateTransfer struct {
	status int
	bytes  int64
	sha    string // sha256 of the body received
	took   time.Duration
	err    error
}

// curlThrough runs curl through the proxy at addr with args (the body goes
// to a file that is hashed) and times it.
func curlThrough(t *testing.T, addr string, args ...string) rateTransfer {
	curl := requireTool(t, "curl", "curl")
	out := filepath.Join(t.TempDir(), "body")
	all := append([]string{"-sS", "--max-time", "30", "--proxy", "http://" + addr, "-o", out, "-w", "%{http_code}"}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	start := time.Now()
	b, err := exec.CommandContext(ctx, curl, all...).Output()
	r := rateTransfer{took: time.Since(start), err: err}
	if ee, ok := err.(*exec.ExitError); ok {
		r.err = fmt.Errorf("%v: %s", err, ee.Stderr)
	}
	r.status, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	f, ferr := os.Open(out)
	if ferr == nil {
		h := sha256.New()
		r.bytes, _ = io.Copy(h, f)
		r.sha = hex.EncodeToString(h.Sum(nil))
		f.Close()
	}
	return r
}

// checkRate fails unless size bytes took their time at rate bytes/s
// +-25% (the bucket's first 50 ms burst comes on top).
func checkRate(t *testing.T, what string, took time.Duration, size, rate int64) {
	t.Helper()
	want := time.Duration(float64(size) / float64(rate) * float64(time.Second))
	got := float64(size) / took.Seconds()
	if took < want*75/100-50*time.Millisecond || took > want*125/100 {
		t.Errorf("%s: %d bytes in %v = %.0f bytes/s, want %d bytes/s +-25%% (%v)", what, size, took, got, rate, want)
		return
	}
	t.Logf("%s: %d bytes in %v = %.0f bytes/s, configured %d (%+.1f%%)", what, size, took, got, rate, 100*(got/float64(rate)-1))
}

// rateConfig is the config of the rate tests: classes slow (1 MB/s down,
// 500 KB/s up) and fast (2 MB/s down), class two (2 connections, no rate),
// and users in each; tv is an address identity (127.0.0.2) of class slow.
func rateConfig(t *testing.T, listen, extraOrigin, slowDown string) string {
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	user := func(name, class string, lines ...string) string {
		s := fmt.Sprintf("config user '%s'\n\toption password '%s'\n\toption class '%s'\n", name, hash, class)
		for _, l := range lines {
			s += "\t" + l + "\n"
		}
		return s + "\n"
	}
	return fmt.Sprintf("config class 'slow'\n\toption rate_down '%s'\n\toption rate_up '4mbit'\n\n", slowDown) +
		"config class 'fast'\n\toption rate_down '16mbit'\n\n" +
		"config class 'two'\n\toption max_conns '2'\n\n" +
		user("alice", "slow") + user("bob", "fast") + user("carol", "two") +
		user("dave", "slow", "option rate_down '4mbit'") + // override: 500 KB/s
		user("tv", "slow", "list address '127.0.0.2/32'") +
		user("free", "staff") + // a class without a section: no limits
		httpSection("web", listen, "option auth '1'", "list connect_port '"+extraOrigin+"'")
}

// startRateProxy starts `sluice run` with rateConfig.
func startRateProxy(t *testing.T, port int, tlsPort string) (*sluiceProc, *daemonConfig) {
	listen := rateListen(port)
	cfg := newDaemonConfig(t)
	cfg.write(t, rateConfig(t, listen, tlsPort, "8mbit"))
	p := startSluice(t, "run", "-c", cfg.path)
	p.addr = listen
	return p, cfg
}

const (
	slowRate = 1_000_000 // 8mbit
	fastRate = 2_000_000 // 16mbit
	upRate   = 500_000   // 4mbit
)

func TestHTTPRateDownloads(t *testing.T) {
	o := startOrigin(t, false)
	p, _ := startRateProxy(t, 0, "443")
	url := func(n int64) string { return fmt.Sprintf("http://%s/bytes/%d", o.hostPort(), n) }

	t.Run("one download", func(t *testing.T) {
		const size = 2_500_000
		r := curlThrough(t, p.addr, "--proxy-user", "alice:pw", url(size))
		if r.err != nil || r.status != 200 || r.bytes != size || r.sha != sha(pattern(size)) {
			t.Fatalf("status %d, %d bytes, sha %s, err %v", r.status, r.bytes, r.sha, r.err)
		}
		checkRate(t, "alice, 1 download", r.took, size, slowRate)
	})

	t.Run("8 parallel downloads share the user's rate", func(t *testing.T) {
		const n, size = 8, 312_500
		var wg sync.WaitGroup
		res := make([]rateTransfer, n)
		cpu0, err := procCPUTicks(p.pid())
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res[i] = curlThrough(t, p.addr, "--proxy-user", "alice:pw", url(size))
			}()
		}
		wg.Wait()
		took := time.Since(start)
		for i, r := range res {
			if r.err != nil || r.status != 200 || r.bytes != size || r.sha != sha(pattern(size)) {
				t.Fatalf("download %d: status %d, %d bytes, err %v", i, r.status, r.bytes, r.err)
			}
			// A fair share: none finishes much before the others.
			if r.took < took/2 {
				t.Errorf("download %d took %v of %v: more than its share", i, r.took, took)
			}
		}
		checkRate(t, "alice, 8 downloads", took, n*size, slowRate)
		// Waiting connections sleep on timers: no busy loop. A spinning
		// loop would take most of a core; this takes about 1%.
		cpu1, err := procCPUTicks(p.pid())
		if err != nil {
			t.Fatal(err)
		}
		if share := float64(cpu1-cpu0) / clockTicks / took.Seconds(); share > 0.25 {
			t.Errorf("sluice used %.0f%% of a CPU while 8 downloads waited for their rate", 100*share)
		} else {
			t.Logf("sluice CPU while rate limited: %.1f%% of a core", 100*share)
		}
	})

	t.Run("two users in two classes at once", func(t *testing.T) {
		var wg sync.WaitGroup
		var ra, rb rateTransfer
		wg.Add(2)
		go func() { defer wg.Done(); ra = curlThrough(t, p.addr, "--proxy-user", "alice:pw", url(2*slowRate)) }()
		go func() { defer wg.Done(); rb = curlThrough(t, p.addr, "--proxy-user", "bob:pw", url(2*fastRate)) }()
		wg.Wait()
		for _, r := range []rateTransfer{ra, rb} {
			if r.err != nil || r.status != 200 {
				t.Fatalf("status %d, err %v", r.status, r.err)
			}
		}
		if ra.sha != sha(pattern(2*slowRate)) || rb.sha != sha(pattern(2*fastRate)) {
			t.Fatal("a body differs from the origin's")
		}
		checkRate(t, "alice (slow)", ra.took, 2*slowRate, slowRate)
		checkRate(t, "bob (fast)", rb.took, 2*fastRate, fastRate)
	})

	t.Run("per-user override and address identity", func(t *testing.T) {
		var wg sync.WaitGroup
		var rd, rt rateTransfer
		wg.Add(2)
		go func() { defer wg.Done(); rd = curlThrough(t, p.addr, "--proxy-user", "dave:pw", url(upRate)) }()
		go func() { defer wg.Done(); rt = curlThrough(t, p.addr, "--interface", "127.0.0.2", url(slowRate)) }()
		wg.Wait()
		if rd.status != 200 || rd.sha != sha(pattern(upRate)) || rt.status != 200 || rt.sha != sha(pattern(slowRate)) {
			t.Fatalf("dave: %d %v; tv: %d %v", rd.status, rd.err, rt.status, rt.err)
		}
		checkRate(t, "dave (4mbit override)", rd.took, upRate, upRate)
		checkRate(t, "tv (address, slow)", rt.took, slowRate, slowRate)
	})

	t.Run("a class without a section limits nothing", func(t *testing.T) {
		const size = 8_000_000
		r := curlThrough(t, p.addr, "--proxy-user", "free:pw", url(size))
		if r.status != 200 || r.sha != sha(pattern(size)) {
			t.Fatalf("status %d, err %v", r.status, r.err)
		}
		if limited := time.Duration(size / slowRate * float64(time.Second)); r.took > limited/2 {
			t.Errorf("free: %d bytes took %v: limited?", size, r.took)
		}
	})
}

func TestHTTPRateUploadAndTunnel(t *testing.T) {
	o := startOrigin(t, false)
	tlsOrigin := startOrigin(t, true)
	p, _ := startRateProxy(t, 1, tlsOrigin.port())

	t.Run("upload at rate_up", func(t *testing.T) {
		const size = 2 * upRate
		data := pattern(size)
		path := writeFile(t, data)
		curl := requireTool(t, "curl", "curl")
		start := time.Now()
		out, err := exec.Command(curl, "-sS", "--max-time", "30", "--proxy", "http://"+p.addr, "--proxy-user", "alice:pw",
			"--data-binary", "@"+path, "-D", "-", "-o", "/dev/null", "http://"+o.hostPort()+"/echo").Output()
		took := time.Since(start)
		if err != nil || !strings.Contains(string(out), "X-Body-Sha256: "+sha(data)) {
			t.Fatalf("upload: %v\n%s", err, out)
		}
		checkRate(t, "alice, upload", took, size, upRate)
	})

	t.Run("CONNECT tunnel at rate_down", func(t *testing.T) {
		const size = 2 * fastRate
		r := curlThrough(t, p.addr, "--proxy-user", "bob:pw", "-k", fmt.Sprintf("https://%s/bytes/%d", tlsOrigin.hostPort(), size))
		if r.err != nil || r.status != 200 || r.sha != sha(pattern(size)) {
			t.Fatalf("status %d, %d bytes, err %v", r.status, r.bytes, r.err)
		}
		checkRate(t, "bob, tunnel", r.took, size, fastRate)
	})

	t.Run("CONNECT tunnel upload at rate_up", func(t *testing.T) {
		const size = upRate
		data := pattern(size)
		path := writeFile(t, data)
		curl := requireTool(t, "curl", "curl")
		start := time.Now()
		out, err := exec.Command(curl, "-sSk", "--max-time", "30", "--proxy", "http://"+p.addr, "--proxy-user", "alice:pw",
			"--data-binary", "@"+path, "-D", "-", "-o", "/dev/null", "https://"+tlsOrigin.hostPort()+"/echo").Output()
		took := time.Since(start)
		if err != nil || !strings.Contains(string(out), "X-Body-Sha256: "+sha(data)) {
			t.Fatalf("upload through the tunnel: %v\n%s", err, out)
		}
		checkRate(t, "alice, tunnel upload", took, size, upRate)
	})
}

// TestHTTPRateMaxConns: a user of a class with max_conns '2' gets 429 on a
// third connection, and a slot again once one closes.
func TestHTTPRateMaxConns(t *testing.T) {
	o := startOrigin(t, false)
	p, cfg := startRateProxy(t, 2, "443")
	req := fmt.Sprintf("GET http://%s/bytes/10 HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: Basic %s\r\n\r\n",
		o.hostPort(), o.hostPort(), "Y2Fyb2w6cHc=") // carol:pw
	open := func() (net.Conn, int) {
		c := p.dial(t)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		return c, statusOf(string(buf[:n]))
	}
	c1, s1 := open()
	c2, s2 := open()
	c3, s3 := open()
	defer c2.Close()
	defer c3.Close()
	if s1 != 200 || s2 != 200 || s3 != 429 {
		t.Fatalf("three keep-alive connections of carol: %d %d %d, want 200 200 429", s1, s2, s3)
	}
	if _, err := p.waitLog(5*time.Second, "connection limit reached", "user=carol", "max_conns=2"); err != nil {
		t.Error(err)
	}
	// sluice stats shows the limited users and carol's two connections.
	rates, _ := daemonStats(t, cfg)["rates"].([]any)
	got := map[string]map[string]any{}
	for _, r := range rates {
		m := r.(map[string]any)
		got[m["user"].(string)] = m
	}
	if c := got["carol"]; c == nil || c["conns"] != 2.0 || c["max_conns"] != 2.0 {
		t.Errorf("stats for carol: %v", c)
	}
	if a := got["alice"]; a == nil || a["rate_down"] != float64(slowRate) || a["rate_up"] != float64(upRate) {
		t.Errorf("stats for alice: %v", a)
	}
	if len(got) != 5 || got["free"] != nil {
		t.Errorf("stats list %d limited users, want alice, bob, carol, dave, tv: %v", len(got), rates)
	}
	if res := runSluice(t, "stats", "-c", cfg.path); !strings.Contains(res.stdout, "carol") ||
		!strings.Contains(res.stdout, "2 of 2") || !strings.Contains(res.stdout, "8mbit") {
		t.Errorf("sluice stats text:\n%s", res.stdout)
	}
	c1.Close()
	// The proxy sees the close on its loop; allow it a moment.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c4, s4 := open()
		c4.Close()
		if s4 == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after closing a connection: %d, want 200", s4)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Other users are not affected.
	if r := curlThrough(t, p.addr, "--proxy-user", "bob:pw", "http://"+o.hostPort()+"/bytes/10"); r.status != 200 {
		t.Errorf("bob: %d", r.status)
	}
}

// TestHTTPRateReload: a reload that changes a class's rate applies it at
// once, to a download already running too, and to the next ones.
func TestHTTPRateReload(t *testing.T) {
	o := startOrigin(t, false)
	p, cfg := startRateProxy(t, 3, "443")
	const size = 3 * slowRate
	done := make(chan rateTransfer, 1)
	go func() {
		done <- curlThrough(t, p.addr, "--proxy-user", "alice:pw", fmt.Sprintf("http://%s/bytes/%d", o.hostPort(), size))
	}()
	time.Sleep(time.Second) // about slowRate bytes at 8mbit
	cfg.write(t, rateConfig(t, p.addr, "443", "16mbit"))
	p.signal(syscall.SIGHUP)
	if _, err := p.waitLog(5*time.Second, "msg=reloaded", "problems=0"); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.status != 200 || r.sha != sha(pattern(size)) {
		t.Fatalf("running download: %d %v", r.status, r.err)
	}
	// 1 s at 8mbit, the other 2 MB at 16mbit: 2 s; 3 s if the rate had
	// stayed.
	if want := 2 * time.Second; r.took < want*75/100 || r.took > want*125/100 {
		t.Errorf("a download running over the reload took %v, want %v (3s without the new rate)", r.took, want)
	} else {
		t.Logf("a download running over the reload took %v (2s expected, 3s at the old rate)", r.took)
	}

	url := fmt.Sprintf("http://%s/bytes/%d", o.hostPort(), 2*slowRate)
	r = curlThrough(t, p.addr, "--proxy-user", "alice:pw", url)
	if r.status != 200 || r.sha != sha(pattern(2*slowRate)) {
		t.Fatalf("after reload: %d %v", r.status, r.err)
	}
	checkRate(t, "alice at 16mbit after reload", r.took, 2*slowRate, 2*slowRate)
}

// TestConfigRateErrors: `sluice check` names the file and line of bad
// class and user limit options, and accepts a good rate file.
func TestConfigRateErrors(t *testing.T) {
	cfg := newDaemonConfig(t)
	cfg.write(t, rateConfig(t, rateListen(4), "443", "8mbit"))
	res := runSluice(t, "check", "-c", cfg.path)
	if res.code != 0 {
		t.Fatalf("check refused the rate config: %s", res.stderr)
	}
	// The summary shows each user's limits as class and user combine.
	for _, want := range []string{
		"user 'alice': rate_up 4mbit, rate_down 8mbit (class 'slow')\n",
		"user 'dave': rate_up 4mbit, rate_down 4mbit (class 'slow')\n",
		"user 'carol': max_conns 2 (class 'two')\n",
	} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("check summary lacks %q:\n%s", want, res.stdout)
		}
	}
	if strings.Contains(res.stdout, "user 'free'") || strings.Contains(res.stdout, "note:") {
		t.Errorf("check summary:\n%s", res.stdout)
	}
	cfg.write(t, strings.Replace(rateConfig(t, rateListen(4), "443", "8mbit"), "option auth '1'", "option auth '0'", 1))
	// Without auth only tv (list address) is recognised.
	if res := runSluice(t, "check", "-c", cfg.path); !strings.Contains(res.stdout,
		"so only users with `list address` are recognised: the limits of 'alice', 'bob', 'carol', 'dave' never apply\n") {
		t.Errorf("check does not name the users whose limits never apply without auth:\n%s", res.stdout)
	}
	cfg.write(t, "config class 'kids'\n\toption rate_down '10 mbit'\n\toption burst '1'\n\toption max_conns '0'\n\n"+
		"config user 'bob'\n\toption password '$2a$04$Jo8bBfNbMO1QK4wz3wYsq.1BWLh9j6r.BNsydz2VJyFmb0FyvUZFu'\n\toption rate_up 'fast'\n")
	res = runSluice(t, "check", "-c", cfg.path)
	if res.code == 0 {
		t.Fatalf("check accepted a bad file:\n%s", res.stdout)
	}
	text, err := os.ReadFile(cfg.path)
	if err != nil {
		t.Fatal(err)
	}
	lineOf := func(stmt string) int { // 1-based line of stmt in the file
		for n, l := range strings.Split(string(text), "\n") {
			if strings.TrimSpace(l) == stmt {
				return n + 1
			}
		}
		t.Fatalf("no line %q", stmt)
		return 0
	}
	for _, c := range []struct{ stmt, want string }{
		{"option rate_down '10 mbit'", "class 'kids': option 'rate_down': \"10 mbit\": unknown unit"},
		{"option burst '1'", "class 'kids': option 'burst': unknown option for a class section"},
		{"option max_conns '0'", "class 'kids': option 'max_conns': \"0\": want a whole number from 1"},
		{"option rate_up 'fast'", "user 'bob': option 'rate_up': \"fast\": no number"},
	} {
		if w := fmt.Sprintf("%s:%d: %s", cfg.path, lineOf(c.stmt), c.want); !strings.Contains(res.stderr, w) {
			t.Errorf("check output lacks %q:\n%s", w, res.stderr)
		}
	}
}

// TestHTTPRateCacheHits: a cache hit is a download too: a limited user
// gets it at their rate, from memory and from disk (sendfile, after a
// restart), while a user without limits gets it at once.
func TestHTTPRateCacheHits(t *testing.T) {
	const size = slowRate // 1 s at alice's rate
	var originHits atomic.Int64
	body := pattern(size)
	var revalidated atomic.Int64
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		originHits.Add(1)
		if r.URL.Path == "/reval" {
			// Stored, but revalidated on every request.
			w.Header().Set("Cache-Control", "no-cache")
			w.Header().Set("ETag", `"v1"`)
			if r.Header.Get("If-None-Match") == `"v1"` {
				revalidated.Add(1)
				w.WriteHeader(http.StatusNotModified)
				return
			}
		} else {
			w.Header().Set("Cache-Control", "max-age=600")
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	}))
	defer o.Close()
	listen := rateListen(5)
	cfg := newDaemonConfig(t)
	conf := strings.Replace(rateConfig(t, listen, "443", "8mbit"), "option auth '1'",
		"option auth '1'\n\toption cache_size '16M'\n\toption cache_max_object '4M'\n\toption cache_dir '"+filepath.Join(cfg.dir, "cache")+"'", 1)
	cfg.write(t, conf)
	url := "http://" + o.Listener.Addr().String() + "/object"
	get := func(p *sluiceProc, user, what string, wantOrigin int64, limited bool) {
		t.Helper()
		r := curlThrough(t, p.addr, "--proxy-user", user+":pw", url)
		if r.err != nil || r.status != 200 || r.sha != sha(body) {
			t.Fatalf("%s: status %d, %d bytes, err %v", what, r.status, r.bytes, r.err)
		}
		if n := originHits.Load(); n != wantOrigin {
			t.Fatalf("%s: the origin saw %d requests, want %d", what, n, wantOrigin)
		}
		if limited {
			checkRate(t, what, r.took, size, slowRate)
		} else if r.took > 300*time.Millisecond {
			t.Errorf("%s: %v for %d bytes: limited?", what, r.took, size)
		}
	}
	p := startSluice(t, "run", "-c", cfg.path)
	p.addr = listen
	get(p, "alice", "alice, miss", 1, true)
	get(p, "alice", "alice, memory hit", 1, true)
	get(p, "free", "free, memory hit", 1, false)

	// Regression: the exchange's limits were dropped with its origin
	// connection, so a hit served after a 304 came unlimited.
	url = "http://" + o.Listener.Addr().String() + "/reval"
	get(p, "free", "free, miss of a no-cache object", 2, false)
	get(p, "alice", "alice, hit after a 304", 3, true)
	if revalidated.Load() != 1 {
		t.Fatalf("the origin answered %d 304s, want 1", revalidated.Load())
	}
	url = "http://" + o.Listener.Addr().String() + "/object"

	p.signal(syscall.SIGTERM)
	if code, _, err := p.waitExit(10 * time.Second); err != nil || code != 0 {
		t.Fatalf("after SIGTERM: exit %d, %v", code, err)
	}
	p = startSluice(t, "run", "-c", cfg.path)
	p.addr = listen
	get(p, "alice", "alice, disk hit after a restart", 3, true)
	get(p, "free", "free, hit after a restart", 3, false)
}
