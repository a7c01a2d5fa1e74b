package test

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// ipCmd runs ip(8) with args and fails t on error.
func ipCmd(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestIntegrationInterfaceFollow checks `option interface`: sluice runs in
// a network namespace the test creates, listening on the addresses of a
// veth, and follows them through netlink as the test adds and removes an
// address and takes the link down and up, without a restart.
func TestIntegrationInterfaceFollow(t *testing.T) {
	ns, inner, subnet := vethNamespace(t)
	echoB := startBackend(t, "tcp", subnet+".1:0", echo)
	port := freePort(t)
	cfg := newDaemonConfig(t)
	cfg.write(t, fmt.Sprintf("config forward 'wan'\n\toption listen ':%d'\n\toption interface '%s'\n\tlist upstream '%s'\n",
		port, inner, echoB.upstream()))
	p := startSluiceWrapped(t, []string{"ip", "netns", "exec", ns}, "run", "-c", cfg.path)
	first, second := fmt.Sprintf("%s.2:%d", subnet, port), fmt.Sprintf("%s.3:%d", subnet, port)
	if p.addr != first {
		t.Fatalf("sluice listens on %s, want %s", p.addr, first)
	}
	if err := roundTrip(first); err != nil {
		t.Fatalf("through %s: %v", first, err)
	}
	unreachable := func(addr string) {
		t.Helper()
		if c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond); err == nil {
			c.Close()
			t.Errorf("%s still accepts", addr)
		}
	}

	ipCmd(t, "-n", ns, "addr", "add", subnet+".3/24", "dev", inner)
	if _, err := p.waitLog(5*time.Second, "msg=listening", "addr="+second); err != nil {
		t.Fatalf("address added: %v", err)
	}
	if err := roundTrip(second); err != nil {
		t.Fatalf("through the added address %s: %v", second, err)
	}

	ipCmd(t, "-n", ns, "addr", "del", subnet+".3/24", "dev", inner)
	if _, err := p.waitLog(5*time.Second, "address gone", "addr=tcp:"+second); err != nil {
		t.Fatalf("address removed: %v", err)
	}
	unreachable(second)
	if err := roundTrip(first); err != nil {
		t.Fatalf("the other address after a removal: %v", err)
	}

	ipCmd(t, "-n", ns, "link", "set", inner, "down")
	if _, err := p.waitLog(5*time.Second, "address gone", "addr=tcp:"+first); err != nil {
		t.Fatalf("link down: %v", err)
	}
	ipCmd(t, "-n", ns, "link", "set", inner, "up")
	deadline := time.Now().Add(5 * time.Second)
	for len(p.stderr.matching("msg=listening", "addr="+first)) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("link up: sluice did not listen on %s again", first)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := roundTrip(first); err != nil {
		t.Fatalf("after link down and up: %v", err)
	}

	// A reload that changes only the upstreams keeps the listeners: no
	// new listening line, and the addresses still answer.
	echo2 := startBackend(t, "tcp", subnet+".1:0", echo)
	cfg.write(t, fmt.Sprintf("config forward 'wan'\n\toption listen ':%d'\n\toption interface '%s'\n\tlist upstream '%s'\n",
		port, inner, echo2.upstream()))
	if res := runSluice(t, "reload", "-c", cfg.path); res.code != 0 {
		t.Fatalf("reload: %s", res.stderr)
	}
	if err := roundTrip(first); err != nil {
		t.Fatalf("after a reload: %v", err)
	}
	if echo2.accepted.Load() != 1 {
		t.Errorf("the new upstream accepted %d connections, want 1", echo2.accepted.Load())
	}
	if n := len(p.stderr.matching("msg=listening", "addr="+first)); n != 2 {
		t.Errorf("%d listening lines for %s, want 2 (start and link up; none for the reload)", n, first)
	}
	if p.exited() {
		t.Fatal("sluice exited")
	}
}

// vethNamespace makes a network namespace (removed at cleanup) joined to
// the host by a veth pair in a random 10.x.y.0/24: the host end has .1,
// the namespace end (inner, up, like its lo) has .2.
func vethNamespace(t *testing.T) (ns, inner, subnet string) {
	t.Helper()
	requireRoot(t)
	requireTool(t, "ip", "iproute2")
	id := rand.IntN(1 << 20)
	ns = fmt.Sprintf("sluice-if-%d", id)
	host := fmt.Sprintf("slh%d", id)
	inner = fmt.Sprintf("sln%d", id)
	subnet = fmt.Sprintf("10.%d.%d", 100+rand.IntN(100), rand.IntN(250))
	ipCmd(t, "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	ipCmd(t, "link", "add", host, "type", "veth", "peer", "name", inner)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", host).Run() })
	ipCmd(t, "link", "set", inner, "netns", ns)
	ipCmd(t, "addr", "add", subnet+".1/24", "dev", host)
	ipCmd(t, "link", "set", host, "up")
	ipCmd(t, "-n", ns, "link", "set", "lo", "up")
	ipCmd(t, "-n", ns, "addr", "add", subnet+".2/24", "dev", inner)
	ipCmd(t, "-n", ns, "link", "set", inner, "up")
	return ns, inner, subnet
}

// TestIntegrationHTTPInterfaceFollow checks `option interface` on an
// http_proxy: it listens on the addresses of a veth in a namespace and
// follows an added and a removed address; curl on the host uses it to
// reach an origin on the host side.
func TestIntegrationHTTPInterfaceFollow(t *testing.T) {
	ns, inner, subnet := vethNamespace(t)
	curl := requireTool(t, "curl", "curl")
	o := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		fmt.Fprintf(w, "path=%s", req.URL.Path)
	}))
	ln, err := net.Listen("tcp", subnet+".1:0")
	if err != nil {
		t.Fatal(err)
	}
	o.Listener = ln
	o.Start()
	t.Cleanup(o.Close)
	port := freePort(t)
	cfg := newDaemonConfig(t)
	cfg.write(t, fmt.Sprintf("config http_proxy 'lan'\n\toption listen ':%d'\n\toption interface '%s'\n\tlist rule 'allow client %s.0/24'\n",
		port, inner, subnet))
	p := startSluiceWrapped(t, []string{"ip", "netns", "exec", ns}, "run", "-c", cfg.path)
	first, second := fmt.Sprintf("%s.2:%d", subnet, port), fmt.Sprintf("%s.3:%d", subnet, port)
	if p.addr != first {
		t.Fatalf("sluice listens on %s, want %s", p.addr, first)
	}
	get := func(proxy string) (string, error) {
		out, err := exec.Command(curl, "-sS", "--max-time", "5", "--connect-timeout", "1", "--proxy", "http://"+proxy, "http://"+o.Listener.Addr().String()+"/x").CombinedOutput()
		return string(out), err
	}
	if out, err := get(first); err != nil || out != "path=/x" {
		t.Fatalf("through %s: %q %v", first, out, err)
	}
	ipCmd(t, "-n", ns, "addr", "add", subnet+".3/24", "dev", inner)
	if _, err := p.waitLog(5*time.Second, "msg=listening", "addr="+second); err != nil {
		t.Fatalf("address added: %v", err)
	}
	if out, err := get(second); err != nil || out != "path=/x" {
		t.Fatalf("through the added address %s: %q %v", second, out, err)
	}
	ipCmd(t, "-n", ns, "addr", "del", subnet+".3/24", "dev", inner)
	if _, err := p.waitLog(5*time.Second, "address gone", "addr=tcp:"+second); err != nil {
		t.Fatalf("address removed: %v", err)
	}
	if _, err := get(second); err == nil {
		t.Errorf("%s still proxies after its address was removed", second)
	}
	res := runSluice(t, "stats", "-c", cfg.path)
	if res.code != 0 || !strings.Contains(res.stdout, first) {
		t.Errorf("stats do not list %s: %s %s", first, res.stdout, res.stderr)
	}
}
