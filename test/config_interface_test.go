package test

import (
	"fmt"
	"math/rand/v2"
	"net"
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
	requireRoot(t)
	requireTool(t, "ip", "iproute2")
	id := rand.IntN(1 << 20)
	ns := fmt.Sprintf("sluice-if-%d", id)
	host, inner := fmt.Sprintf("slh%d", id), fmt.Sprintf("sln%d", id)
	subnet := fmt.Sprintf("10.%d.%d", 100+rand.IntN(100), rand.IntN(250))
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
