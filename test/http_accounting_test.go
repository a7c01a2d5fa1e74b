package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// acctPort returns a free port in 23500-23999 (this suite's range).
func acctPort(t testing.TB) int {
	t.Helper()
	for port := 23500 + int(time.Now().UnixNano()%400); port < 24000; port++ {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			ln.Close()
			return port
		}
	}
	t.Fatal("no free port in 23500-23999")
	return 0
}

// acctEntry is one identity of `sluice accounting show --json`.
type acctEntry struct {
	Key       string `json:"key"`
	BytesUp   uint64 `json:"bytes_up"`
	BytesDown uint64 `json:"bytes_down"`
	Requests  uint64 `json:"requests"`
	Conns     uint64 `json:"connections"`
	Live      int    `json:"live_connections"`
	OnlineS   int64  `json:"connected_s"`
	Quota     *struct {
		Period    string `json:"period"`
		Bytes     uint64 `json:"bytes"`
		UsedBytes uint64 `json:"used_bytes"`
		Exceeded  bool   `json:"exceeded"`
	} `json:"quota"`
}

// acctShow runs `sluice accounting show --json` and returns the entries by
// key.
func acctShow(t testing.TB, cfg *daemonConfig) map[string]acctEntry {
	t.Helper()
	res := runSluice(t, "accounting", "show", "-c", cfg.path, "--json")
	if res.code != 0 {
		t.Fatalf("sluice accounting show: exit %d\n%s", res.code, res.stderr)
	}
	var rep struct {
		Entries []acctEntry `json:"entries"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &rep); err != nil {
		t.Fatalf("accounting show --json: %v\n%s", err, res.stdout)
	}
	m := map[string]acctEntry{}
	for _, e := range rep.Entries {
		m[e.Key] = e
	}
	return m
}

// curlMoved runs curl through proxy addr and returns the status and the
// body bytes curl itself says it moved (size_download, size_upload).
func curlMoved(t testing.TB, proxy string, args ...string) (status int, down, up uint64, body []byte) {
	t.Helper()
	curl := requireTool(t, "curl", "curl")
	out := filepath.Join(t.TempDir(), "body")
	all := append([]string{"-sS", "--max-time", "20", "--proxy", "http://" + proxy, "-o", out,
		"-w", "%{http_code} %{size_download} %{size_upload}"}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, curl, all...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	_ = cmd.Run()
	if _, err := fmt.Sscanf(stdout.String(), "%d %d %d", &status, &down, &up); err != nil {
		t.Fatalf("curl %v: %q: %v\n%s", args, stdout.String(), err, stderr.String())
	}
	body, _ = os.ReadFile(out)
	return status, down, up, body
}

// tunnelThrough opens a CONNECT tunnel as user:pw to target, sends req and
// reads until the origin closes; it returns what it read.
func tunnelThrough(t testing.TB, proxy, user, target string, req []byte) []byte {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	cred := base64.StdEncoding.EncodeToString([]byte(user + ":pw"))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: Basic %s\r\n\r\n", target, target, cred)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatalf("CONNECT: %v", err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("CONNECT as %s: %d %s", user, resp.StatusCode, b)
	}
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("tunnel read: %v", err)
	}
	return got
}

// countingConn counts the bytes read from a connection.
type countingConn struct {
	net.Conn
	n int
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n += n
	return n, err
}

// liveTunnel opens a CONNECT tunnel as user to the origin and makes one
// keep-alive request of n bytes through it, leaving the tunnel open. It
// returns the tunnel and the bytes sent and received through it.
func liveTunnel(t testing.TB, proxy, user string, o *origin, n int) (c net.Conn, up, down int) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	cc := &countingConn{Conn: raw}
	_ = cc.SetDeadline(time.Now().Add(10 * time.Second))
	cred := base64.StdEncoding.EncodeToString([]byte(user + ":pw"))
	fmt.Fprintf(cc, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: Basic %s\r\n\r\n", o.hostPort(), o.hostPort(), cred)
	br := bufio.NewReader(cc)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT as %s: %v %v", user, resp, err)
	}
	cc.n = br.Buffered() // nothing but the 200 head came yet
	req := fmt.Sprintf("GET /bytes/%d HTTP/1.1\r\nHost: %s\r\n\r\n", n, o.hostPort())
	if _, err := io.WriteString(cc, req); err != nil {
		t.Fatal(err)
	}
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(body, pattern(n)) {
		t.Fatalf("through the tunnel: %d bytes, %v", len(body), err)
	}
	if br.Buffered() != 0 {
		t.Fatalf("%d bytes past the response", br.Buffered())
	}
	return cc, len(req), cc.n
}

// waitAcct polls `accounting show` until ok accepts the entries (5 s).
func waitAcct(t testing.TB, cfg *daemonConfig, what string, ok func(map[string]acctEntry) bool) map[string]acctEntry {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		m := acctShow(t, cfg)
		if ok(m) {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: accounting shows %+v", what, m)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// acctConfig writes a config with users alice (no quota), bob (100K a
// day, through class 'small') and dev (owner of 127.0.0.2), a proxy with
// auth and one without.
// The hash is made once per test: a new salt would be a change of users
// to a reload.
func acctConfig(t testing.TB, cfg *daemonConfig, authAddr, openAddr string, hash []byte) {
	t.Helper()
	acctConfigQuota(t, cfg, authAddr, openAddr, hash, "100K")
}

// acctConfigQuota is acctConfig with the class's quota_bytes.
func acctConfigQuota(t testing.TB, cfg *daemonConfig, authAddr, openAddr string, hash []byte, quota string) {
	t.Helper()
	cfg.write(t, fmt.Sprintf(`config class 'small'
	option quota_bytes '%s'
	option quota_period 'day'

config user 'alice'
	option password '%s'

config user 'bob'
	option password '%s'
	option class 'small'

config user 'dev'
	option password '%s'
	list address '127.0.0.2'

`, quota, hash, hash, hash)+
		httpSection("auth", authAddr, "option auth '1'", "list connect_port '*'")+
		httpSection("open", openAddr))
}

// acctDaemon writes the config of acctConfig with the given flush interval
// and returns it, the accounting directory, the two proxies' addresses and
// a func that rewrites the config with another quota for class 'small'.
func acctDaemon(t testing.TB, interval string) (cfg *daemonConfig, dir, authAddr, openAddr string, reconfigure func(quota string)) {
	t.Helper()
	cfg = newDaemonConfig(t)
	dir = filepath.Join(cfg.dir, "acct") // daemonConfig's accounting_dir
	cfg.global = fmt.Sprintf("\toption accounting_interval '%s'\n", interval)
	authAddr = fmt.Sprintf("127.0.0.1:%d", acctPort(t))
	openAddr = fmt.Sprintf("127.0.0.1:%d", acctPort(t))
	for openAddr == authAddr {
		openAddr = fmt.Sprintf("127.0.0.1:%d", acctPort(t))
	}
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	acctConfig(t, cfg, authAddr, openAddr, hash)
	reconfigure = func(quota string) { acctConfigQuota(t, cfg, authAddr, openAddr, hash, quota) }
	return cfg, dir, authAddr, openAddr, reconfigure
}

// TestHTTPAccounting checks the counts against what curl moved, tunnels,
// address identities, the quota's 403 and log line, reset, the JSON and
// table output, and that SIGHUP writes the file.
func TestHTTPAccounting(t *testing.T) {
	o := startOrigin(t, false)
	cfg, dir, authAddr, openAddr, reconfigure := acctDaemon(t, "1h")
	p := startSluice(t, "run", "-c", cfg.path)
	base := "http://" + o.hostPort()

	// alice: downloads (length and chunked) and an upload; the counts
	// must be exactly the body bytes curl moved: size_upload, and what it
	// received of each body (heads are not counted).
	var wantDown, wantUp uint64
	upload := writeFile(t, pattern(77777))
	for _, args := range [][]string{
		{base + "/bytes/123456"},
		{base + "/chunked/54321"},
		{"--data-binary", "@" + upload, base + "/echo"},
	} {
		// --raw: curl writes the body as it crossed the proxy, chunked
		// framing included (size_download counts only the decoded data).
		status, down, up, body := curlMoved(t, authAddr, append([]string{"--raw", "--proxy-user", "alice:pw"}, args...)...)
		if status != 200 {
			t.Fatalf("curl %v: status %d", args, status)
		}
		if strings.Contains(args[0], "chunked") {
			if uint64(len(body)) <= down {
				t.Fatalf("chunked body: %d raw bytes for %d of data", len(body), down)
			}
		} else if uint64(len(body)) != down {
			t.Fatalf("curl %v: %d bytes written, size_download %d", args, len(body), down)
		}
		wantDown += uint64(len(body))
		wantUp += up
	}
	if wantUp != 77777 || wantDown < 123456+54321 {
		t.Fatalf("curl moved %d up, %d down: the test itself is off", wantUp, wantDown)
	}
	m := waitAcct(t, cfg, "alice's three requests", func(m map[string]acctEntry) bool { return m["alice"].Requests == 3 })
	if a := m["alice"]; a.BytesDown != wantDown || a.BytesUp != wantUp || a.Conns != 3 {
		t.Errorf("alice: %d down, %d up, %d connections; curl moved %d down, %d up over 3", a.BytesDown, a.BytesUp, a.Conns, wantDown, wantUp)
	}

	// A CONNECT tunnel counts as one request with every byte each way.
	req := []byte("GET /bytes/40000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	got := tunnelThrough(t, authAddr, "alice", o.hostPort(), req)
	if !bytes.HasSuffix(got, pattern(40000)) {
		t.Fatalf("tunnel: %d bytes, not the origin's body", len(got))
	}
	m = waitAcct(t, cfg, "the tunnel", func(m map[string]acctEntry) bool { return m["alice"].Requests == 4 })
	if a := m["alice"]; a.BytesUp != wantUp+uint64(len(req)) || a.BytesDown != wantDown+uint64(len(got)) {
		t.Errorf("after the tunnel: %d up, %d down; want %d and %d", a.BytesUp, a.BytesDown, wantUp+uint64(len(req)), wantDown+uint64(len(got)))
	}

	// A tunnel still open: its bytes so far are in the counts (show syncs
	// the live tunnels), and the request is counted when it ends.
	tc, tUp, tDown := liveTunnel(t, authAddr, "alice", o, 25000)
	wantUp += uint64(len(req))
	wantDown += uint64(len(got))
	m = acctShow(t, cfg)
	if a := m["alice"]; a.BytesUp != wantUp+uint64(tUp) || a.BytesDown != wantDown+uint64(tDown) || a.Requests != 4 {
		t.Errorf("with a live tunnel: %+v, want %d up, %d down, 4 requests", a, wantUp+uint64(tUp), wantDown+uint64(tDown))
	}
	tc.Close()
	m = waitAcct(t, cfg, "the tunnel's end", func(m map[string]acctEntry) bool { return m["alice"].Requests == 5 })
	if a := m["alice"]; a.BytesUp != wantUp+uint64(tUp) || a.BytesDown != wantDown+uint64(tDown) {
		t.Errorf("after the live tunnel ended: %+v, want %d up and %d down (nothing twice)", a, wantUp+uint64(tUp), wantDown+uint64(tDown))
	}

	// Connected time: a keep-alive connection held for 2 s.
	c, err := net.Dial("tcp", authAddr)
	if err != nil {
		t.Fatal(err)
	}
	cred := base64.StdEncoding.EncodeToString([]byte("alice:pw"))
	fmt.Fprintf(c, "GET %s/bytes/10 HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: Basic %s\r\n\r\n", base, o.hostPort(), cred)
	if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("keep-alive request: %v", err)
	}
	if m := acctShow(t, cfg); m["alice"].Live != 1 {
		t.Errorf("alice has %d live connections, want 1", m["alice"].Live)
	}
	time.Sleep(2200 * time.Millisecond)
	c.Close()
	m = waitAcct(t, cfg, "the held connection", func(m map[string]acctEntry) bool { return m["alice"].Live == 0 })
	if s := m["alice"].OnlineS; s < 2 || s > 30 {
		t.Errorf("alice connected for %ds, want 2 to 30", s)
	}

	// A client that is no user is counted by its address.
	if status, down, _, _ := curlMoved(t, openAddr, base+"/bytes/999"); status != 200 || down != 999 {
		t.Fatalf("open proxy: %d, %d bytes", status, down)
	}
	waitAcct(t, cfg, "the address identity", func(m map[string]acctEntry) bool {
		e := m["addr:127.0.0.1"]
		return e.Requests == 1 && e.BytesDown == 999
	})
	// ... unless a user owns the address: then it counts as that user, on
	// a proxy without auth too.
	if status, down, _, _ := curlMoved(t, openAddr, "--interface", "127.0.0.2", base+"/bytes/555"); status != 200 || down != 555 {
		t.Fatalf("open proxy from 127.0.0.2: %d, %d bytes", status, down)
	}
	m = waitAcct(t, cfg, "the device of user dev", func(m map[string]acctEntry) bool { return m["dev"].Requests == 1 })
	if e, ok := m["addr:127.0.0.2"]; ok || m["dev"].BytesDown != 555 {
		t.Errorf("127.0.0.2 counted as %+v and addr %+v, want user dev with 555 bytes", m["dev"], e)
	}

	// bob's quota: 100K a day. 60000 + 60000 bytes pass (the second starts
	// under the quota), the third request and a CONNECT get 403.
	for i := range 2 {
		if status, _, _, _ := curlMoved(t, authAddr, "--proxy-user", "bob:pw", base+"/bytes/60000"); status != 200 {
			t.Fatalf("bob's download %d: %d", i+1, status)
		}
	}
	waitAcct(t, cfg, "bob's downloads", func(m map[string]acctEntry) bool { return m["bob"].BytesDown == 120000 })
	status, _, _, body := curlMoved(t, authAddr, "--proxy-user", "bob:pw", base+"/bytes/10")
	if status != 403 || !strings.Contains(string(body), "daily quota of 100.0 KiB of traffic used up") {
		t.Errorf("bob over quota: %d %q, want 403 saying the daily quota is used up", status, body)
	}
	if _, err := p.waitLog(5*time.Second, "quota exceeded", "user=bob"); err != nil {
		t.Error(err)
	}
	raw := rawExchange(t, &sluiceProc{network: "tcp", addr: authAddr}, fmt.Sprintf("CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: Basic %s\r\n\r\n",
		o.hostPort(), o.hostPort(), base64.StdEncoding.EncodeToString([]byte("bob:pw"))))
	if statusOf(raw) != 403 {
		t.Errorf("bob's CONNECT over quota: %q, want 403", raw)
	}
	m = acctShow(t, cfg)
	if q := m["bob"].Quota; q == nil || !q.Exceeded || q.Bytes != 100<<10 || q.Period != "day" || q.UsedBytes != 120000 {
		t.Errorf("bob's quota in show: %+v", q)
	}
	if m["bob"].Requests != 2 {
		t.Errorf("bob: %d requests counted, want 2 (refused ones are not)", m["bob"].Requests)
	}

	// The table.
	res := runSluice(t, "accounting", "show", "-c", cfg.path)
	if res.code != 0 || !containsAll(res.stdout, []string{"USER", "alice", "bob", "addr:127.0.0.1", "KiB", "117.2 KiB of 100.0 KiB a day (USED UP)"}) {
		t.Errorf("accounting show: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if res := runSluice(t, "accounting", "show", "nobody", "-c", cfg.path); res.code != 1 || !strings.Contains(res.stderr, "no counters for nobody") {
		t.Errorf("show nobody: exit %d %q", res.code, res.stderr)
	}

	// SIGHUP writes the file (nothing was written yet: the interval is 1h).
	file := filepath.Join(dir, "accounting")
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Fatalf("counters file written before the interval or a signal (%v)", err)
	}
	p.signal(syscall.SIGHUP)
	if _, err := p.waitLog(5*time.Second, "msg=reloaded"); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(file)
	if err != nil || !bytes.Contains(data, []byte("\nrec alice ")) || !bytes.Contains(data, []byte("\nrec bob ")) {
		t.Fatalf("after SIGHUP the file has %q (%v)", data, err)
	}

	// A reload that raises the class's quota lets bob through at once, and
	// keeps the proxy running (no replacement for a quota change).
	reconfigure("1M")
	p.signal(syscall.SIGHUP)
	if _, err := p.waitLog(5*time.Second, "msg=reloaded", "problems=0"); err != nil {
		t.Fatal(err)
	}
	if status, _, _, _ := curlMoved(t, authAddr, "--proxy-user", "bob:pw", base+"/bytes/10"); status != 200 {
		t.Errorf("bob after the quota was raised to 1M: %d, want 200", status)
	}
	if l := p.stderr.matching("http_proxy replaced or removed"); len(l) != 0 {
		t.Errorf("a quota change replaced the proxy: %q", l)
	}
	reconfigure("100K")
	p.signal(syscall.SIGHUP)
	if _, err := p.waitLog(5*time.Second, "msg=reloaded"); err != nil {
		t.Fatal(err)
	}
	if status, _, _, _ := curlMoved(t, authAddr, "--proxy-user", "bob:pw", base+"/bytes/10"); status != 403 {
		t.Errorf("bob after the quota went back to 100K: %d, want 403", status)
	}

	// Reset gives bob his quota back.
	if res := runSluice(t, "accounting", "reset", "bob", "-c", cfg.path); res.code != 0 {
		t.Fatalf("reset bob: exit %d %s", res.code, res.stderr)
	}
	if status, _, _, _ := curlMoved(t, authAddr, "--proxy-user", "bob:pw", base+"/bytes/10"); status != 200 {
		t.Errorf("bob after reset: %d, want 200", status)
	}
	m = waitAcct(t, cfg, "bob after reset", func(m map[string]acctEntry) bool { return m["bob"].Requests == 1 })
	if m["bob"].BytesDown != 10 || m["alice"].Requests != 6 {
		t.Errorf("after reset: bob %+v, alice %+v", m["bob"], m["alice"])
	}
}

// TestHTTPAccountingPersistence: with a 1 s interval, kill -9 loses at
// most what the last interval counted (live tunnels included); SIGTERM
// loses nothing.
func TestHTTPAccountingPersistence(t *testing.T) {
	o := startOrigin(t, false)
	cfg, _, authAddr, _, _ := acctDaemon(t, "1s")
	p := startSluice(t, "run", "-c", cfg.path)
	for range 3 {
		if status, _, _, _ := curlMoved(t, authAddr, "--proxy-user", "alice:pw", "http://"+o.hostPort()+"/bytes/1000"); status != 200 {
			t.Fatal(status)
		}
	}
	waitAcct(t, cfg, "three requests", func(m map[string]acctEntry) bool { return m["alice"].Requests == 3 })
	// A tunnel that is still open when sluice dies: what it moved up to
	// the last flush is kept.
	_, tUp, tDown := liveTunnel(t, authAddr, "alice", o, 20000)
	time.Sleep(2500 * time.Millisecond) // two intervals
	if err := syscall.Kill(p.pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.waitExit(5 * time.Second)

	p = startSluice(t, "run", "-c", cfg.path)
	m := acctShow(t, cfg)
	if a := m["alice"]; a.Requests != 3 || a.BytesDown != 3000+uint64(tDown) || a.BytesUp != uint64(tUp) {
		t.Fatalf("after kill -9 and restart: %+v, want 3 requests, %d bytes down and %d up", a, 3000+tDown, tUp)
	}

	// SIGTERM: one more request, counted within the interval, survives.
	if status, _, _, _ := curlMoved(t, authAddr, "--proxy-user", "alice:pw", "http://"+o.hostPort()+"/bytes/500"); status != 200 {
		t.Fatal(status)
	}
	p.signal(syscall.SIGTERM)
	if code, _, err := p.waitExit(10 * time.Second); code != 0 || err != nil {
		t.Fatalf("SIGTERM: exit %d %v", code, err)
	}
	startSluice(t, "run", "-c", cfg.path)
	if a := acctShow(t, cfg)["alice"]; a.Requests != 4 || a.BytesDown != 3500+uint64(tDown) {
		t.Fatalf("after SIGTERM and restart: %+v, want 4 requests and %d bytes down", a, 3500+tDown)
	}
}

// TestHTTPAccountingCorruptFile: a damaged counters file is reported by
// sluice check and in the log, set aside with a .corrupt suffix and counting starts from zero; it
// is never silently overwritten.
func TestHTTPAccountingCorruptFile(t *testing.T) {
	o := startOrigin(t, false)
	cfg, dir, authAddr, _, _ := acctDaemon(t, "1h")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	damaged := []byte("sluice-accounting 1\nrec alice 1763802000 1763802000 5 5 1 1 0 0 0 0 0 0 0 0 0 0 0 0 0\nend 1 0000")
	if err := os.WriteFile(filepath.Join(dir, "accounting"), damaged, 0o600); err != nil {
		t.Fatal(err)
	}
	res := runSluice(t, "check", "-c", cfg.path)
	if res.code != 0 || !containsAll(res.stdout, []string{"accounting: WARNING", "is corrupt", "end line is cut short", "user 'bob': quota 100.0 KiB a day"}) ||
		strings.Contains(res.stdout, "user 'alice': quota") {
		t.Errorf("sluice check with a corrupt counters file: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	p := startSluice(t, "run", "-c", cfg.path)
	if _, err := p.waitLog(5*time.Second, "level=ERROR", "corrupt", "aside="); err != nil {
		t.Fatal(err)
	}
	aside, _ := filepath.Glob(filepath.Join(dir, "accounting.*.corrupt"))
	if len(aside) != 1 {
		t.Fatalf("files set aside: %v", aside)
	}
	if kept, err := os.ReadFile(aside[0]); err != nil || !bytes.Equal(kept, damaged) {
		t.Errorf("set-aside file: %q %v, want the damaged bytes", kept, err)
	}
	if m := acctShow(t, cfg); len(m) != 0 {
		t.Errorf("counters read from a corrupt file: %+v", m)
	}
	if status, _, _, _ := curlMoved(t, authAddr, "--proxy-user", "alice:pw", "http://"+o.hostPort()+"/bytes/7"); status != 200 {
		t.Fatal(status)
	}
	p.signal(syscall.SIGHUP)
	if _, err := p.waitLog(5*time.Second, "msg=reloaded"); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "accounting"))
	if err != nil || !bytes.Contains(data, []byte("\nrec alice ")) {
		t.Fatalf("new file %q %v", data, err)
	}
	fields := strings.Fields(strings.Split(string(data), "\n")[1])
	if n, _ := strconv.Atoi(fields[5]); n != 7 {
		t.Errorf("bytes down in the new file: %s, want 7", fields[5])
	}
}

// TestCLIAccounting checks `sluice accounting`'s help, usage errors and
// the error without a daemon.
func TestCLIAccounting(t *testing.T) {
	cfg := newDaemonConfig(t)
	cfg.write(t, "")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"accounting", "--help"}, 0, "sluice accounting reset USER"},
		{[]string{"help", "accounting"}, 0, "connected time"},
		{[]string{"accounting"}, 2, "want show or reset"},
		{[]string{"accounting", "reset"}, 2, "reset needs one USER"},
		{[]string{"accounting", "show", "a", "b"}, 2, "show takes at most one USER"},
		{[]string{"accounting", "frob"}, 2, `unknown subcommand "frob"`},
		{[]string{"accounting", "show", "-c", cfg.path}, 1, "is sluice running with this config?"},
	} {
		res := runSluice(t, tc.args...)
		if out := res.stdout + res.stderr; res.code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("sluice %s: exit %d, want %d with %q:\n%s", strings.Join(tc.args, " "), res.code, tc.code, tc.want, out)
		}
		checkNoPanic(t, res.stdout+res.stderr)
	}
}

// TestHTTPAccountingOff: with option accounting '0' nothing is counted
// or written, and `accounting show` says so.
func TestHTTPAccountingOff(t *testing.T) {
	o := startOrigin(t, false)
	cfg := newDaemonConfig(t)
	cfg.global = "\toption accounting '0'\n"
	addr := fmt.Sprintf("127.0.0.1:%d", acctPort(t))
	cfg.write(t, httpSection("open", addr))
	startSluice(t, "run", "-c", cfg.path)
	if status, _, _, _ := curlMoved(t, addr, "http://"+o.hostPort()+"/bytes/100"); status != 200 {
		t.Fatal(status)
	}
	res := runSluice(t, "accounting", "show", "-c", cfg.path)
	if res.code != 1 || !strings.Contains(res.stderr, "accounting is off") {
		t.Errorf("show with accounting off: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if _, err := os.Stat(filepath.Join(cfg.dir, "acct")); !os.IsNotExist(err) {
		t.Errorf("accounting directory created with accounting off (%v)", err)
	}
}

// TestHTTPAccountingQuotaClosesTunnel: a live tunnel that takes its
// identity over quota is closed at the next sync (here the one `sluice
// accounting show` makes), with a log line; a new CONNECT is refused.
func TestHTTPAccountingQuotaClosesTunnel(t *testing.T) {
	o := startOrigin(t, false)
	cfg, _, authAddr, _, _ := acctDaemon(t, "1h")
	p := startSluice(t, "run", "-c", cfg.path)
	tc, _, _ := liveTunnel(t, authAddr, "bob", o, 150000) // bob's class: 100K a day
	if e := acctShow(t, cfg)["bob"]; e.Quota == nil || !e.Quota.Exceeded {
		t.Fatalf("bob after 150,000 bytes: %+v", e)
	}
	if _, err := p.waitLog(5*time.Second, "quota exceeded: tunnel closed", "user=bob"); err != nil {
		t.Fatal(err)
	}
	_ = tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := tc.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the tunnel is still open after the quota ran out: read %d, %v", n, err)
	}
	if status, _, _, _ := curlMoved(t, authAddr, "--proxy-user", "bob:pw", "http://"+o.hostPort()+"/bytes/10"); status != 403 {
		t.Errorf("bob's next request: status %d, want 403", status)
	}
}

// TestHTTPAccountingQuotaCutsDownload: a download that is running when its
// user goes over quota is cut within a few seconds (the accounting checks
// live connections of identities with a quota every 2 s), with no `show`
// or flush to help it; the counters keep what was sent.
func TestHTTPAccountingQuotaCutsDownload(t *testing.T) {
	o := startOrigin(t, false)
	cfg, _, authAddr, _, _ := acctDaemon(t, "1h")
	p := startSluice(t, "run", "-c", cfg.path)
	const size = 16 << 20
	start := time.Now()
	// bob's class allows 100K a day: the request starts under quota and
	// the origin sends at 1 MB/s, so the body would take 16 s.
	status, down, _, _ := curlMoved(t, authAddr, "--proxy-user", "bob:pw",
		"http://"+o.hostPort()+fmt.Sprintf("/drip/%d", size))
	took := time.Since(start)
	if status != 200 || down >= size {
		t.Fatalf("status %d, %d of %d bytes: want the 200 cut short", status, down, size)
	}
	// Checked every 2 s: about 2 MB got through; 5 s and 5 MB leave room
	// for a slow machine.
	if took > 5*time.Second || down > 5<<20 {
		t.Errorf("the download was cut after %v and %d bytes, want within a few seconds", took, down)
	}
	if _, err := p.waitLog(5*time.Second, "quota exceeded: connection closed", "user=bob"); err != nil {
		t.Fatal(err)
	}
	e := acctShow(t, cfg)["bob"]
	if e.Quota == nil || !e.Quota.Exceeded || e.BytesDown < down || e.Requests != 1 {
		t.Errorf("bob after a cut download of %d bytes: %+v", down, e)
	}
	t.Logf("cut after %v: curl got %d bytes, bob counted %d", took.Round(time.Millisecond), down, e.BytesDown)
}

// TestHTTPAccountingStartsWithFirstProxy: a daemon with only forwards
// counts nothing and makes no accounting directory; a reload that adds an
// http_proxy starts the counting.
func TestHTTPAccountingStartsWithFirstProxy(t *testing.T) {
	o := startOrigin(t, false)
	cfg := newDaemonConfig(t)
	cfg.write(t, forwardSection("fwd", fmt.Sprintf("127.0.0.1:%d", acctPort(t)), o.hostPort()))
	p := startSluice(t, "run", "-c", cfg.path)
	if _, err := os.Stat(filepath.Join(cfg.dir, "acct")); !os.IsNotExist(err) {
		t.Errorf("accounting directory created without an http_proxy (%v)", err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", acctPort(t))
	cfg.write(t, forwardSection("fwd", p.addr, o.hostPort())+httpSection("open", addr))
	p.signal(syscall.SIGHUP)
	if _, err := p.waitLog(5*time.Second, "msg=reloaded"); err != nil {
		t.Fatal(err)
	}
	if status, down, _, _ := curlMoved(t, addr, "http://"+o.hostPort()+"/bytes/4321"); status != 200 || down != 4321 {
		t.Fatalf("through the new proxy: %d, %d bytes", status, down)
	}
	if e, ok := acctShow(t, cfg)["addr:127.0.0.1"]; !ok || e.BytesDown != 4321 || e.Requests != 1 {
		t.Errorf("after the reload: %+v (found %v)", e, ok)
	}
}

// TestIntegrationAccountingDropsPrivileges: the counters directory is
// handed to the user sluice drops to, so its writes still work.
func TestIntegrationAccountingDropsPrivileges(t *testing.T) {
	requireRoot(t)
	o := startOrigin(t, false)
	cfg := newDaemonConfig(t)
	if err := os.Chmod(cfg.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg.global = "\toption user 'nobody'\n"
	addr := fmt.Sprintf("127.0.0.1:%d", acctPort(t))
	cfg.write(t, httpSection("open", addr))
	p := startSluice(t, "run", "-c", cfg.path)
	if status, _, _, _ := curlMoved(t, addr, "http://"+o.hostPort()+"/bytes/321"); status != 200 {
		t.Fatal(status)
	}
	p.signal(syscall.SIGHUP)
	if _, err := p.waitLog(5*time.Second, "msg=reloaded"); err != nil {
		t.Fatal(err)
	}
	if l := p.stderr.matching("flush failed"); len(l) != 0 {
		t.Fatalf("writing as nobody: %q", l)
	}
	file := filepath.Join(cfg.dir, "acct", "accounting")
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatalf("no counters file after SIGHUP as nobody: %v", err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Uid != 65534 {
		t.Errorf("counters file owned by %v, want nobody (65534)", fi.Sys())
	}
	if e := acctShow(t, cfg)["addr:127.0.0.1"]; e.BytesDown != 321 {
		t.Errorf("counted %+v, want 321 bytes down", e)
	}
}
