package test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// natLab is a LAN behind a NAT router and a WAN: the tunnel client and
// its local service live in lan, the server and the public clients in
// wan, and lan reaches wan only through router's MASQUERADE (wan has no
// route back to the LAN).
type natLab struct {
	lan, router, wan string
}

const (
	labServer = "10.2.0.2" // the tunnel server's address in wan
	labToken  = "lab-token-1"
)

func newNATLab(t *testing.T) natLab {
	t.Helper()
	requireTool(t, "nft", "nftables")
	lan, inLan := newNetns(t)
	router, inRouter := newNetns(t)
	wan, inWan := newNetns(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(inRouter("link", "add", "r-lan", "type", "veth", "peer", "name", "lan0", "netns", lan))
	must(inRouter("link", "add", "r-wan", "type", "veth", "peer", "name", "wan0", "netns", wan))
	must(inRouter("addr", "add", "10.1.0.1/24", "dev", "r-lan"))
	must(inRouter("addr", "add", "10.2.0.1/24", "dev", "r-wan"))
	must(inRouter("link", "set", "r-lan", "up"))
	must(inRouter("link", "set", "r-wan", "up"))
	must(inLan("addr", "add", "10.1.0.2/24", "dev", "lan0"))
	must(inLan("link", "set", "lan0", "up"))
	must(inLan("route", "add", "default", "via", "10.1.0.1"))
	must(inWan("addr", "add", labServer+"/24", "dev", "wan0"))
	must(inWan("link", "set", "wan0", "up"))
	if out, err := exec.Command("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1").CombinedOutput(); err != nil {
		t.Fatalf("ip_forward: %v %s", err, out)
	}
	nftCmd(t, router, "add", "table", "ip", "nat")
	nftCmd(t, router, "add", "chain", "ip", "nat", "post", "{ type nat hook postrouting priority 100 ; }")
	nftCmd(t, router, "add", "rule", "ip", "nat", "post", "oifname", "r-wan", "masquerade")
	return natLab{lan: lan, router: router, wan: wan}
}

// in runs f on a thread inside network namespace ns: sockets f creates
// belong to ns (and work from any thread afterwards).
func in(t testing.TB, ns string, f func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(err) // a thread left in the wrong namespace must not run more tests
		}
	}()
	f()
}

// labEcho listens in ns on addr and echoes, half-closing after the echo.
func labEcho(t *testing.T, ns, addr string) {
	t.Helper()
	var ln net.Listener
	var err error
	in(t, ns, func() { ln, err = net.Listen("tcp", addr) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
}

// labDial connects from ns to addr.
func labDial(t testing.TB, ns, addr string) (net.Conn, error) {
	var c net.Conn
	var err error
	in(t, ns, func() { c, err = net.DialTimeout("tcp", addr, 5*time.Second) })
	return c, err
}

// echoCheck sends n random bytes on c, half-closes, and checks that the
// same bytes come back (sha256) followed by the peer's half-close.
func echoCheck(c net.Conn, n int) error {
	defer c.Close()
	data := make([]byte, n)
	_, _ = rand.Read(data)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	h := sha256.New()
	got, err := io.Copy(h, c)
	if err != nil {
		return fmt.Errorf("read after %d bytes: %w", got, err)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	want := sha256.Sum256(data)
	if got != int64(n) || !bytes.Equal(h.Sum(nil), want[:]) {
		return fmt.Errorf("got %d bytes back with another sha256, want %d", got, n)
	}
	return nil
}

func startTunnelServer(t *testing.T, lab natLab, args ...string) *sluiceProc {
	t.Helper()
	argv := append([]string{"tunnel-server", "--token", labToken, "--ports", "20000-20100", "--heartbeat", "1s", "--log-level", "debug"}, args...)
	argv = append(argv, labServer+":7000")
	return startSluiceWrapped(t, []string{"ip", "netns", "exec", lab.wan}, argv...)
}

func spawnTunnelClient(t *testing.T, lab natLab, token string, services ...string) *sluiceProc {
	t.Helper()
	argv := append([]string{"tunnel-client", "--name", "home", "--token", token, "--max-backoff", "1s", "--log-level", "debug",
		labServer + ":7000"}, services...)
	return spawnSluice(t, []string{"ip", "netns", "exec", lab.lan}, argv...)
}

// TestTunnelThroughNAT: a client behind MASQUERADE publishes a LAN echo
// service on the server; public clients in the WAN reach it byte-exact
// both ways with half-close, 100 at once; then the server is killed and
// restarted and the client is back within its backoff.
func TestTunnelThroughNAT(t *testing.T) {
	lab := newNATLab(t)
	labEcho(t, lab.lan, "127.0.0.1:9000")
	srv := startTunnelServer(t, lab)
	cli := spawnTunnelClient(t, lab, labToken, "20001=127.0.0.1:9000")
	if _, err := cli.waitLog(10*time.Second, "service published", "public_port=20001"); err != nil {
		t.Fatalf("client did not publish: %v", err)
	}
	if _, err := srv.waitLog(time.Second, "client logged in", "client=home", "addr=10.2.0.1"); err != nil {
		t.Fatalf("server did not see the login from the router's address: %v", err)
	}
	pub := labServer + ":20001"
	c, err := labDial(t, lab.wan, pub)
	if err != nil {
		t.Fatal(err)
	}
	if err := echoCheck(c, 64<<20); err != nil {
		t.Fatalf("64 MiB echo: %v", err)
	}

	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := labDial(t, lab.wan, pub)
			if err == nil {
				err = echoCheck(c, 256<<10)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("one of 100 concurrent connections: %v", err)
		}
	}

	// The server dies and comes back: the client logs in and publishes again.
	srv.signal(syscall.SIGKILL)
	if _, _, err := srv.waitExit(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.waitLog(10*time.Second, "tunnel server unreachable, retrying"); err != nil {
		t.Fatalf("client did not notice the server's death: %v", err)
	}
	start := time.Now()
	srv2 := startTunnelServer(t, lab)
	if _, err := srv2.waitLog(10*time.Second, "public port open", "client=home"); err != nil {
		t.Fatalf("client not back after the server restarted: %v", err)
	}
	t.Logf("client back %s after the server restarted", time.Since(start).Round(time.Millisecond))
	var c2 net.Conn
	for try := 0; ; try++ {
		if c2, err = labDial(t, lab.wan, pub); err == nil || try == 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := echoCheck(c2, 1<<20); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
}

// TestTunnelClientBeforeServer: a client started before its server exists
// keeps retrying and publishes once the server is up.
func TestTunnelClientBeforeServer(t *testing.T) {
	lab := newNATLab(t)
	labEcho(t, lab.lan, "127.0.0.1:9000")
	cli := spawnTunnelClient(t, lab, labToken, "20002=127.0.0.1:9000")
	if _, err := cli.waitLog(10*time.Second, "tunnel server unreachable, retrying"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	startTunnelServer(t, lab)
	if _, err := cli.waitLog(10*time.Second, "service published", "public_port=20002"); err != nil {
		t.Fatalf("client did not publish once the server came: %v", err)
	}
	c, err := labDial(t, lab.wan, labServer+":20002")
	if err != nil {
		t.Fatal(err)
	}
	if err := echoCheck(c, 1<<20); err != nil {
		t.Fatal(err)
	}
}

// TestTunnelRefusals: a wrong token is refused with a log line on both
// sides (and the address named on the server); a port outside the range
// is refused with the reason on both sides, while the client's other
// service is published.
func TestTunnelRefusals(t *testing.T) {
	lab := newNATLab(t)
	labEcho(t, lab.lan, "127.0.0.1:9000")
	srv := startTunnelServer(t, lab)
	bad := spawnTunnelClient(t, lab, "wrong-token", "20003=127.0.0.1:9000")
	if _, err := srv.waitLog(10*time.Second, "login refused: wrong client name or token", "addr=10.2.0.1", "client=home"); err != nil {
		t.Fatalf("server: %v", err)
	}
	if _, err := bad.waitLog(10*time.Second, "login refused by the server"); err != nil {
		t.Fatalf("client: %v", err)
	}
	bad.signal(syscall.SIGKILL)
	_, _, _ = bad.waitExit(5 * time.Second)

	cli := spawnTunnelClient(t, lab, labToken, "30000=127.0.0.1:9000", "20004=127.0.0.1:9000")
	line, err := cli.waitLog(10*time.Second, "service refused by the server", "public_port=30000")
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	if !strings.Contains(line, "outside the server's range 20000-20100") {
		t.Errorf("refusal does not say why: %s", line)
	}
	if _, err := srv.waitLog(time.Second, "public port refused", "port=30000"); err != nil {
		t.Fatalf("server: %v", err)
	}
	if _, err := cli.waitLog(10*time.Second, "service published", "public_port=20004"); err != nil {
		t.Fatalf("the other service: %v", err)
	}
	if !srv.exited() && !cli.exited() {
		return
	}
	t.Fatal("a refusal ended a process")
}
