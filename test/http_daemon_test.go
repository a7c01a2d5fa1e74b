package test

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// httpSection is a config http_proxy section with extra option lines.
func httpSection(name, listen string, lines ...string) string {
	s := fmt.Sprintf("config http_proxy '%s'\n\toption listen '%s'\n", name, listen)
	for _, l := range lines {
		s += "\t" + l + "\n"
	}
	return s + "\n"
}

// TestDaemonHTTPProxy runs an http_proxy section with a user and rules
// under `sluice run`, reloads it with a new rule and stops it.
func TestDaemonHTTPProxy(t *testing.T) {
	o := startOrigin(t, false)
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	users := fmt.Sprintf("config user 'alice'\n\toption password '%s'\n\n", hash)
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg := newDaemonConfig(t)
	cfg.write(t, users+httpSection("web", listen, "option auth '1'", "option access_log '1'", "list rule 'deny host blocked.example'"))
	p := startSluice(t, "run", "-c", cfg.path)
	p.addr = listen
	url := "http://" + o.hostPort() + "/echo"

	if r := runCurl(t, p, url); r.status != 407 {
		t.Errorf("without credentials: %d, want 407", r.status)
	}
	if r := runCurl(t, p, "--proxy-user", "alice:pw", url); r.status != 200 {
		t.Fatalf("alice: %d %s", r.status, r.stderr)
	}
	if r := runCurl(t, p, "--proxy-user", "alice:pw", "http://blocked.example/"); r.status != 403 {
		t.Errorf("blocked host: %d, want 403", r.status)
	}
	if _, err := p.waitLog(5*time.Second, "log=access", "user=alice", "status=200"); err != nil {
		t.Error(err)
	}

	st := daemonStats(t, cfg)
	found := false
	for _, sv := range st["services"].([]any) {
		m := sv.(map[string]any)
		if m["type"] == "http_proxy" && m["name"] == "web" {
			found = true
			if m["relayed"].(float64) < 3 || m["accepted"].(float64) < 3 {
				t.Errorf("stats for the http proxy: %v", m)
			}
		}
	}
	if !found {
		t.Errorf("sluice stats lists no http_proxy: %v", st["services"])
	}

	cfg.write(t, users+httpSection("web", listen, "option auth '1'", "list rule 'deny dest 127.0.0.0/8'"))
	p.signal(syscall.SIGHUP)
	if _, err := p.waitLog(5*time.Second, "msg=reloaded", "problems=0"); err != nil {
		t.Fatal(err)
	}
	if r := runCurl(t, p, "--proxy-user", "alice:pw", url); r.status != 403 {
		t.Errorf("after reload denying 127.0.0.0/8: %d, want 403", r.status)
	}

	p.signal(syscall.SIGTERM)
	if code, _, err := p.waitExit(10 * time.Second); err != nil || code != 0 {
		t.Fatalf("after SIGTERM: exit %d, %v", code, err)
	}
}

// TestConfigHTTPProxyErrors checks that `sluice check` names the line of
// bad http_proxy and user options.
func TestConfigHTTPProxyErrors(t *testing.T) {
	cfg := newDaemonConfig(t)
	cfg.write(t, "config user 'bob'\n\toption password 'plaintext'\n\n"+
		httpSection("web", "127.0.0.1:3128", "option auth 'maybe'", "list rule 'deny colour red'", "list connect_port '0'"))
	res := runSluice(t, "check", "-c", cfg.path)
	if res.code == 0 {
		t.Fatalf("check accepted a bad file:\n%s", res.stdout)
	}
	for _, want := range []string{"user 'bob': option 'password'", "option 'auth'", "option 'rule'", "option 'connect_port'"} {
		if !containsAll(res.stderr, []string{want}) {
			t.Errorf("check output lacks %q:\n%s", want, res.stderr)
		}
	}
}
