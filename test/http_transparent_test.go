package test

import (
	"context"
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

// nftCmd runs `ip netns exec NS nft ARGS` and fails t on error.
func nftCmd(t testing.TB, ns string, args ...string) {
	t.Helper()
	argv := append([]string{"netns", "exec", ns, "nft"}, args...)
	if out, err := exec.Command("ip", argv...).CombinedOutput(); err != nil {
		t.Fatalf("nft %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestIntegrationHTTPTransparent runs sluice http-proxy --transparent in a
// router namespace R. A client namespace C routes through R, where an
// nftables REDIRECT sends its port-80-style traffic to sluice; the origin
// is the test process on the host side of R. The client never configures
// a proxy: curl asks the origin directly, sluice answers through
// SO_ORIGINAL_DST, and a Host field naming another server changes nothing.
func TestIntegrationHTTPTransparent(t *testing.T) { testTransparent(t, "redirect") }

// TestIntegrationHTTPTProxy is TestIntegrationHTTPTransparent with an
// nftables tproxy rule and policy routing instead of REDIRECT (no NAT:
// sluice --tproxy listens with IP_TRANSPARENT and takes the original
// destination from the accepted socket's local address).
func TestIntegrationHTTPTProxy(t *testing.T) { testTransparent(t, "tproxy") }

func testTransparent(t *testing.T, mode string) {
	requireRoot(t)
	requireTool(t, "ip", "iproute2")
	requireTool(t, "nft", "nftables")
	curl := requireTool(t, "curl", "curl")
	id := rand.IntN(1 << 20)
	r, c := fmt.Sprintf("sluice-tr-%d", id), fmt.Sprintf("sluice-tc-%d", id)
	hostIf, rUp := fmt.Sprintf("sth%d", id), fmt.Sprintf("str%d", id)
	rDown, cIf := fmt.Sprintf("srd%d", id), fmt.Sprintf("scl%d", id)
	a, b := 100+rand.IntN(100), rand.IntN(250)
	up := fmt.Sprintf("10.%d.%d", a, b)     // host .1, R .2
	down := fmt.Sprintf("10.%d.%d", a, b+1) // R .1, C .2
	for _, ns := range []string{r, c} {
		ipCmd(t, "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		ipCmd(t, "-n", ns, "link", "set", "lo", "up")
	}
	ipCmd(t, "link", "add", hostIf, "type", "veth", "peer", "name", rUp)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", hostIf).Run() })
	ipCmd(t, "link", "set", rUp, "netns", r)
	ipCmd(t, "addr", "add", up+".1/24", "dev", hostIf)
	ipCmd(t, "link", "set", hostIf, "up")
	ipCmd(t, "-n", r, "addr", "add", up+".2/24", "dev", rUp)
	ipCmd(t, "-n", r, "link", "set", rUp, "up")
	ipCmd(t, "-n", r, "link", "add", rDown, "type", "veth", "peer", "name", cIf)
	ipCmd(t, "-n", r, "link", "set", cIf, "netns", c)
	ipCmd(t, "-n", r, "addr", "add", down+".1/24", "dev", rDown)
	ipCmd(t, "-n", r, "link", "set", rDown, "up")
	ipCmd(t, "-n", c, "addr", "add", down+".2/24", "dev", cIf)
	ipCmd(t, "-n", c, "link", "set", cIf, "up")
	ipCmd(t, "-n", c, "route", "add", "default", "via", down+".1")

	// The origin, on the host side of R.
	o := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		fmt.Fprintf(w, "host=%s via=%s path=%s", req.Host, req.Header.Get("Via"), req.URL.Path)
	}))
	ln, err := net.Listen("tcp", up+".1:0")
	if err != nil {
		t.Fatal(err)
	}
	o.Listener = ln
	o.Start()
	t.Cleanup(o.Close)
	originPort := o.Listener.Addr().(*net.TCPAddr).Port

	port := 30000 + rand.IntN(2000)
	p := startSluiceWrapped(t, []string{"ip", "netns", "exec", r}, "http-proxy", "--"+map[string]string{"redirect": "transparent", "tproxy": "tproxy"}[mode],
		"--access-log", fmt.Sprintf("0.0.0.0:%d", port))
	nftCmd(t, r, "add", "table", "ip", "sluicetest")
	if mode == "tproxy" {
		nftCmd(t, r, "add", "chain", "ip", "sluicetest", "pre", "{ type filter hook prerouting priority mangle; }")
		nftCmd(t, r, "add", "rule", "ip", "sluicetest", "pre", "iifname", rDown, "tcp", "dport", fmt.Sprint(originPort),
			"tproxy", "to", fmt.Sprintf(":%d", port), "meta", "mark", "set", "1", "accept")
		ipCmd(t, "-n", r, "rule", "add", "fwmark", "1", "lookup", "100")
		ipCmd(t, "-n", r, "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100")
	} else {
		nftCmd(t, r, "add", "chain", "ip", "sluicetest", "pre", "{ type nat hook prerouting priority -100; }")
		nftCmd(t, r, "add", "rule", "ip", "sluicetest", "pre", "iifname", rDown, "tcp", "dport", fmt.Sprint(originPort),
			"redirect", "to", fmt.Sprintf(":%d", port))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, hostHdr := range []string{"", "elsewhere.example"} {
		args := []string{"netns", "exec", c, curl, "-sS", "--max-time", "10"}
		if hostHdr != "" {
			args = append(args, "-H", "Host: "+hostHdr)
		}
		args = append(args, fmt.Sprintf("http://%s.1:%d/hello", up, originPort))
		out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl in the client namespace: %v\n%s\nsluice: %s", err, out, p.stderr.String())
		}
		wantHost := fmt.Sprintf("%s.1:%d", up, originPort)
		if hostHdr != "" {
			wantHost = hostHdr + fmt.Sprintf(":%d", originPort)
		}
		if want := fmt.Sprintf("host=%s via=1.1 sluice path=/hello", wantHost); string(out) != want {
			t.Errorf("got %q, want %q", out, want)
		}
	}
	if _, err := p.waitLog(5*time.Second, "log=access", "status=200", "client="+down+".2"); err != nil {
		t.Error(err)
	}
}
