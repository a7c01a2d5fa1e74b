package test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/net/proxy"
)

// SOCKS5 end to end: `sluice socks5` and `config socks5` sections with
// curl and golang.org/x/net/proxy as independent clients.

// startSOCKS5 runs `sluice socks5` on a free loopback port.
func startSOCKS5(t testing.TB, args ...string) *sluiceProc {
	t.Helper()
	return startSluice(t, append(append([]string{"socks5", "--loops", "2"}, args...), "127.0.0.1:0")...)
}

// socksCurl runs curl through the SOCKS5 proxy URL and returns the body,
// status and stderr.
func socksCurl(t testing.TB, proxyURL string, args ...string) curlResult {
	t.Helper()
	curl := requireTool(t, "curl", "curl")
	dir := t.TempDir()
	all := append([]string{"-sS", "--max-time", "20", "--proxy", proxyURL, "-D", filepath.Join(dir, "h"), "-w", "%{http_code}",
		"-o", filepath.Join(dir, "body")}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, curl, all...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	res := curlResult{stderr: errb.String(), err: err}
	fmt.Sscan(strings.TrimSpace(out.String()), &res.status)
	res.body, _ = os.ReadFile(filepath.Join(dir, "body"))
	h, _ := os.ReadFile(filepath.Join(dir, "h"))
	res.headers = string(h)
	return res
}

// TestSOCKS5Curl: GET and POST through curl's two SOCKS5 modes, checked by
// sha256 (--socks5-hostname sends the name, socks5:// resolves in curl and
// sends the address).
func TestSOCKS5Curl(t *testing.T) {
	o := startOrigin(t, false)
	p := startSOCKS5(t, "--access-log")
	const n = 3 << 20
	want := sha(pattern(n))
	body := make([]byte, 2<<20+17)
	rand.Read(body)
	file := writeFile(t, body)
	for _, scheme := range []string{"socks5h", "socks5"} {
		t.Run(scheme, func(t *testing.T) {
			px := scheme + "://" + p.addr
			url := fmt.Sprintf("http://localhost:%s", o.port())
			r := socksCurl(t, px, url+fmt.Sprintf("/bytes/%d", n))
			if r.status != 200 || sha(r.body) != want {
				t.Fatalf("GET: status %d, %d bytes, %s", r.status, len(r.body), r.stderr)
			}
			r = socksCurl(t, px, "--data-binary", "@"+file, url+"/echo")
			if r.status != 200 || r.header("X-Body-Sha256") != sha(body) {
				t.Fatalf("POST: status %d, sha %q want %q, %s", r.status, r.header("X-Body-Sha256"), sha(body), r.stderr)
			}
		})
	}
	if _, err := p.waitLog(5*time.Second, "log=access", "msg=session", "command=CONNECT", "target=localhost:", "reply=0"); err != nil {
		t.Error(err)
	}
}

// TestSOCKS5Auth: RFC 1929 logins through curl and x/net/proxy; a wrong
// password and a client without credentials are refused.
func TestSOCKS5Auth(t *testing.T) {
	o := startOrigin(t, false)
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	users := writeFile(t, []byte("alice:"+string(hash)+"\n"))
	p := startSOCKS5(t, "--users", users)
	url := "http://" + o.hostPort() + "/bytes/100000"
	if r := socksCurl(t, "socks5h://alice:pw@"+p.addr, url); r.status != 200 || sha(r.body) != sha(pattern(100000)) {
		t.Fatalf("alice: %d %s", r.status, r.stderr)
	}
	if r := socksCurl(t, "socks5h://alice:nope@"+p.addr, url); r.err == nil || r.status == 200 {
		t.Errorf("wrong password: status %d, %v", r.status, r.err)
	}
	if r := socksCurl(t, "socks5h://"+p.addr, url); r.err == nil || !strings.Contains(r.stderr, "authentication") {
		t.Errorf("no credentials: %v %q", r.err, r.stderr)
	}
	d, _ := proxy.SOCKS5("tcp", p.addr, &proxy.Auth{User: "alice", Password: "pw"}, proxy.Direct)
	echoBytes(t, d, startEchoServer(t), 4<<20)
	d, _ = proxy.SOCKS5("tcp", p.addr, &proxy.Auth{User: "alice", Password: "bad"}, proxy.Direct)
	if c, err := d.Dial("tcp", o.hostPort()); err == nil {
		c.Close()
		t.Error("x/net/proxy with a wrong password got through")
	}
	if _, err := p.waitLog(5*time.Second, "msg=\"failed login\"", "user=alice"); err != nil {
		t.Error(err)
	}
}

// startEchoServer echoes every connection until the client's FIN.
func startEchoServer(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
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
			}()
		}
	}()
	return ln.Addr().String()
}

// echoBytes sends n random bytes through d to the echo server at target
// and checks them on the way back (sha256).
func echoBytes(t testing.TB, d proxy.Dialer, target string, n int) {
	t.Helper()
	c, err := d.Dial("tcp", target)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := make([]byte, n)
	rand.Read(data)
	go func() {
		_, _ = c.Write(data)
		c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil || sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("echo through SOCKS5: %d of %d bytes back, %v", len(got), n, err)
	}
}

// TestSOCKS5Denials: the HTTP proxy's rules, in every spelling of a
// denied address, by domain, and after resolution; curl sees reply 2
// ("not allowed by ruleset") each time.
func TestSOCKS5Denials(t *testing.T) {
	o := startOrigin(t, false)
	port := o.port()
	p := startSOCKS5(t, "--rule", "deny dest 127.0.0.2/32", "--rule", "deny host .blocked.example", "--rule", "deny port 9")
	for _, tt := range []struct{ name, proxy, host string }{
		{"dotted", "socks5h", "127.0.0.2"},
		{"decimal", "socks5h", "2130706434"},
		{"hex", "socks5h", "0x7f000002"},
		{"octal", "socks5h", "0177.0.0.2"},
		{"short", "socks5h", "127.2"},
		{"mapped ipv6", "socks5h", "[::ffff:127.0.0.2]"},
		{"domain", "socks5h", "www.blocked.example"},
		{"domain upper case, trailing dot", "socks5h", "WWW.BLOCKED.EXAMPLE."},
		{"address sent by curl", "socks5", "127.0.0.2"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := socksCurl(t, tt.proxy+"://"+p.addr, "http://"+tt.host+":"+port+"/echo")
			if r.err == nil || !strings.Contains(r.stderr, "(2)") {
				t.Errorf("status %d, err %v, stderr %q: want reply 2", r.status, r.err, r.stderr)
			}
		})
	}
	// curl normalizes numeric hosts before it sends them; these go as
	// the client wrote them, in a domain-name request (ATYP 3).
	for _, name := range []string{"2130706434", "0x7f000002", "0177.0.0.02", "127.2", "[::ffff:127.0.0.2]", "::ffff:7f00:2", "Www.Blocked.Example."} {
		if rep := rawSOCKSConnect(t, p.addr, name, 80); rep != 2 {
			t.Errorf("domain-name request for %q: reply %d, want 2", name, rep)
		}
	}
	if r := socksCurl(t, "socks5h://"+p.addr, "http://127.0.0.1:9/"); r.err == nil || !strings.Contains(r.stderr, "(2)") {
		t.Errorf("denied port: %q", r.stderr)
	}
	if r := socksCurl(t, "socks5h://"+p.addr, "http://127.0.0.1:"+port+"/echo"); r.status != 200 {
		t.Errorf("allowed address: %d %s", r.status, r.stderr)
	}

	// After resolution: no rule names localhost, but it resolves into a
	// denied range.
	q := startSOCKS5(t, "--rule", "deny dest 127.0.0.0/8,::1/128")
	if r := socksCurl(t, "socks5h://"+q.addr, "http://localhost:"+port+"/echo"); r.err == nil || !strings.Contains(r.stderr, "(2)") {
		t.Errorf("localhost after resolution: %d %q", r.status, r.stderr)
	}
	if _, err := q.waitLog(5*time.Second, "msg=\"request denied\"", "target=localhost:"); err != nil {
		t.Error(err)
	}
}

// TestSOCKS5Daemon: a socks5 section on two addresses with a user and a
// rule under `sluice run`; stats list it; a reload with a new rule keeps a
// live session running and applies to new ones.
func TestSOCKS5Daemon(t *testing.T) {
	echo := startEchoServer(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	users := fmt.Sprintf("config user 'alice'\n\toption password '%s'\n\n", hash)
	a1, a2 := fmt.Sprintf("127.0.0.1:%d", freePort(t)), fmt.Sprintf("127.0.0.1:%d", freePort(t))
	section := func(rule string) string {
		return fmt.Sprintf("config socks5 'lan'\n\tlist listen '%s'\n\tlist listen '%s'\n\toption auth '1'\n\toption access_log '1'\n\tlist rule '%s'\n\n", a1, a2, rule)
	}
	cfg := newDaemonConfig(t)
	cfg.write(t, users+section("deny host blocked.example"))
	p := startSluice(t, "run", "-c", cfg.path)
	alice := &proxy.Auth{User: "alice", Password: "pw"}
	for _, a := range []string{a1, a2} {
		d, _ := proxy.SOCKS5("tcp", a, alice, proxy.Direct)
		echoBytes(t, d, echo, 1<<20)
	}
	// A session that lives across the reload.
	d, _ := proxy.SOCKS5("tcp", a1, alice, proxy.Direct)
	live, err := d.Dial("tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	st := serviceStats(t, daemonStats(t, cfg), "lan")
	if st["type"] != "socks5" || st["relayed"].(float64) < 2 || len(st["listen"].([]any)) != 2 || st["active"].(float64) < 1 {
		t.Errorf("stats: %v", st)
	}

	cfg.write(t, users+section("deny dest 127.0.0.0/8"))
	p.signal(syscall.SIGHUP)
	if _, err := p.waitLog(5*time.Second, "msg=reloaded", "problems=0"); err != nil {
		t.Fatal(err)
	}
	msg := []byte("still here after the reload")
	if _, err := live.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	live.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(live, got); err != nil || string(got) != string(msg) {
		t.Fatalf("live session after reload: %q, %v", got, err)
	}
	d, _ = proxy.SOCKS5("tcp", a2, alice, proxy.Direct)
	if c, err := d.Dial("tcp", echo); err == nil {
		c.Close()
		t.Error("new session to 127.0.0.1 allowed after the reload denied it")
	} else if !strings.Contains(err.Error(), "not allowed") {
		t.Errorf("refusal: %v", err)
	}
	live.Close()
	if _, err := p.waitLog(5*time.Second, "log=access", "socks5=lan", "user=alice", "reply=0"); err != nil {
		t.Error(err)
	}
	p.signal(syscall.SIGTERM)
	if code, _, err := p.waitExit(10 * time.Second); err != nil || code != 0 {
		t.Fatalf("after SIGTERM: exit %d, %v", code, err)
	}
}

// rawSOCKSConnect sends a no-auth greeting and a CONNECT to the domain
// name host, and returns the reply code (-1: closed without one).
func rawSOCKSConnect(t testing.TB, addr, host string, port int) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	req := append([]byte{5, 1, 0, 5, 1, 0, 3, byte(len(host))}, host...)
	req = append(req, byte(port>>8), byte(port))
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	var resp [12]byte
	if _, err := io.ReadFull(c, resp[:]); err != nil {
		return -1
	}
	if resp[0] != 5 || resp[1] != 0 || resp[2] != 5 {
		t.Fatalf("bad answer %v", resp)
	}
	return int(resp[3])
}

// startDNSLike answers each datagram with its first two bytes (the ID)
// followed by "answer:" and the rest, as a DNS server answers a query.
func startDNSLike(t testing.TB) *net.UDPConn {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if n < 2 {
				continue
			}
			resp := append(append([]byte{buf[0], buf[1]}, "answer:"...), buf[2:n]...)
			_, _ = pc.WriteToUDP(resp, from)
		}
	}()
	return pc
}

// udpAssociation is a small RFC 1928 client of UDP ASSOCIATE: the TCP
// control connection and the UDP socket it sends from.
type udpAssociation struct {
	tcp   net.Conn
	udp   *net.UDPConn
	relay *net.UDPAddr // BND.ADDR:BND.PORT of the reply
}

func associate(t testing.TB, proxyAddr string) *udpAssociation {
	t.Helper()
	tcp, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tcp.Close() })
	tcp.SetDeadline(time.Now().Add(5 * time.Second))
	// Greeting (no auth), then UDP ASSOCIATE with DST 0.0.0.0:0: the
	// client does not know its address yet (RFC 1928 section 4).
	if _, err := tcp.Write([]byte{5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	var resp [12]byte
	if _, err := io.ReadFull(tcp, resp[:]); err != nil {
		t.Fatal(err)
	}
	if resp[0] != 5 || resp[1] != 0 || resp[2] != 5 || resp[3] != 0 || resp[5] != 1 {
		t.Fatalf("UDP ASSOCIATE answer %v", resp)
	}
	relay := &net.UDPAddr{IP: net.IP(resp[6:10]), Port: int(resp[10])<<8 | int(resp[11])}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { udp.Close() })
	return &udpAssociation{tcp: tcp, udp: udp, relay: relay}
}

// exchange sends payload to dst (header with FRAG frag) and returns the
// reply's source and data, or ok false when none came within wait.
func (a *udpAssociation) exchange(t testing.TB, frag byte, atyp byte, dst []byte, port int, payload []byte, wait time.Duration) (src string, data []byte, ok bool) {
	t.Helper()
	d := []byte{0, 0, frag, atyp}
	if atyp == 3 {
		d = append(d, byte(len(dst)))
	}
	d = append(append(d, dst...), byte(port>>8), byte(port))
	if _, err := a.udp.WriteToUDP(append(d, payload...), a.relay); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65535)
	a.udp.SetReadDeadline(time.Now().Add(wait))
	n, _, err := a.udp.ReadFromUDP(buf)
	if err != nil {
		return "", nil, false
	}
	b := buf[:n]
	if len(b) < 10 || b[0] != 0 || b[1] != 0 || b[2] != 0 || b[3] != 1 {
		t.Fatalf("reply header %v", b)
	}
	src = fmt.Sprintf("%s:%d", net.IP(b[4:8]), int(b[8])<<8|int(b[9]))
	return src, b[10:], true
}

// exchange6 is exchange to a domain name, accepting a reply header of
// either address family.
func (a *udpAssociation) exchange6(t testing.TB, name []byte, port int, payload []byte, wait time.Duration) (src string, data []byte, ok bool) {
	t.Helper()
	d := append([]byte{0, 0, 0, 3, byte(len(name))}, name...)
	d = append(d, byte(port>>8), byte(port))
	if _, err := a.udp.WriteToUDP(append(d, payload...), a.relay); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65535)
	a.udp.SetReadDeadline(time.Now().Add(wait))
	n, _, err := a.udp.ReadFromUDP(buf)
	if err != nil {
		return "", nil, false
	}
	b := buf[:n]
	switch {
	case len(b) >= 10 && b[3] == 1:
		return net.IP(b[4:8]).String(), b[10:], true
	case len(b) >= 22 && b[3] == 4:
		return net.IP(b[4:20]).String(), b[22:], true
	}
	t.Fatalf("reply header %v", b)
	return "", nil, false
}

// TestSOCKS5UDPAssociate: a DNS-style request and reply through the
// relay, by address and by name; fragments, strangers and denied
// destinations get nothing; the association ends with its TCP connection.
func TestSOCKS5UDPAssociate(t *testing.T) {
	dns := startDNSLike(t)
	dnsAddr := dns.LocalAddr().(*net.UDPAddr)
	denied := startDNSLike(t)
	p := startSOCKS5(t, "--rule", fmt.Sprintf("deny dest 127.0.0.1/32 port %d", denied.LocalAddr().(*net.UDPAddr).Port), "--access-log")
	a := associate(t, p.addr)
	query := append([]byte{0x12, 0x34}, make([]byte, 1000)...)
	rand.Read(query[2:])
	want := append(append([]byte{0x12, 0x34}, "answer:"...), query[2:]...)
	src, data, ok := a.exchange(t, 0, 1, dnsAddr.IP.To4(), dnsAddr.Port, query, 3*time.Second)
	if !ok || src != dnsAddr.String() || sha256.Sum256(data) != sha256.Sum256(want) {
		t.Fatalf("by address: ok %v, from %s (want %s), %d bytes", ok, src, dnsAddr, len(data))
	}
	// localhost may resolve to ::1 first: answer there too, on the same port.
	if pc6, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv6loopback, Port: dnsAddr.Port}); err == nil {
		go func() {
			buf := make([]byte, 65535)
			for {
				n, from, err := pc6.ReadFromUDP(buf)
				if err != nil {
					return
				}
				_, _ = pc6.WriteToUDP(append(append([]byte{buf[0], buf[1]}, "answer:"...), buf[2:n]...), from)
			}
		}()
		defer pc6.Close()
	}
	if _, data, ok := a.exchange6(t, []byte("localhost"), dnsAddr.Port, query, 3*time.Second); !ok || sha256.Sum256(data) != sha256.Sum256(want) {
		t.Errorf("by name: ok %v, %d bytes", ok, len(data))
	}
	if _, _, ok := a.exchange(t, 1, 1, dnsAddr.IP.To4(), dnsAddr.Port, query, 300*time.Millisecond); ok {
		t.Error("a fragment (FRAG 1) was relayed")
	}
	if _, _, ok := a.exchange(t, 0, 1, []byte{127, 0, 0, 1}, denied.LocalAddr().(*net.UDPAddr).Port, query, 300*time.Millisecond); ok {
		t.Error("a denied destination was relayed")
	}
	// A stranger (another socket of the same host, once the client's port
	// is known) is not relayed.
	stranger := &udpAssociation{tcp: a.tcp, relay: a.relay}
	var err error
	if stranger.udp, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
		t.Fatal(err)
	}
	defer stranger.udp.Close()
	if _, _, ok := stranger.exchange(t, 0, 1, dnsAddr.IP.To4(), dnsAddr.Port, query, 300*time.Millisecond); ok {
		t.Error("a datagram from another port than the client's was relayed")
	}
	a.tcp.Close()
	if _, err := p.waitLog(5*time.Second, "log=access", "command=UDP", "bytes_up=2004"); err != nil {
		t.Error(err)
	}
	if _, _, ok := a.exchange(t, 0, 1, dnsAddr.IP.To4(), dnsAddr.Port, query, 300*time.Millisecond); ok {
		t.Error("relayed after the TCP connection closed")
	}
}

// TestIntegrationSOCKS5InterfaceFollow checks `option interface` on a
// socks5 section: it listens on the addresses of a veth in a namespace
// and follows an added and a removed address; curl on the host uses it to
// reach an origin on the host side.
func TestIntegrationSOCKS5InterfaceFollow(t *testing.T) {
	ns, inner, subnet := vethNamespace(t)
	ln, err := net.Listen("tcp", subnet+".1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		fmt.Fprintf(w, "path=%s", req.URL.Path)
	})}
	go o.Serve(ln)
	t.Cleanup(func() { o.Close() })
	port := freePort(t)
	cfg := newDaemonConfig(t)
	cfg.write(t, fmt.Sprintf("config socks5 'lan'\n\toption listen ':%d'\n\toption interface '%s'\n\tlist rule 'allow client %s.0/24'\n\toption default 'deny'\n",
		port, inner, subnet))
	p := startSluiceWrapped(t, []string{"ip", "netns", "exec", ns}, "run", "-c", cfg.path)
	first, second := fmt.Sprintf("%s.2:%d", subnet, port), fmt.Sprintf("%s.3:%d", subnet, port)
	if p.addr != first {
		t.Fatalf("sluice listens on %s, want %s", p.addr, first)
	}
	url := "http://" + ln.Addr().String() + "/x"
	if r := socksCurl(t, "socks5h://"+first, "--connect-timeout", "2", url); r.status != 200 || string(r.body) != "path=/x" {
		t.Fatalf("through %s: %d %q %s", first, r.status, r.body, r.stderr)
	}
	ipCmd(t, "-n", ns, "addr", "add", subnet+".3/24", "dev", inner)
	if _, err := p.waitLog(5*time.Second, "msg=listening", "addr="+second); err != nil {
		t.Fatalf("address added: %v", err)
	}
	if r := socksCurl(t, "socks5h://"+second, "--connect-timeout", "2", url); r.status != 200 {
		t.Fatalf("through the added address %s: %d %s", second, r.status, r.stderr)
	}
	ipCmd(t, "-n", ns, "addr", "del", subnet+".3/24", "dev", inner)
	if _, err := p.waitLog(5*time.Second, "address gone", "addr=tcp:"+second); err != nil {
		t.Fatalf("address removed: %v", err)
	}
	if r := socksCurl(t, "socks5h://"+second, "--connect-timeout", "1", url); r.err == nil {
		t.Errorf("%s still proxies after its address was removed", second)
	}
}

// TestSOCKS4Curl: curl's socks4:// and socks4a:// through the same
// server, byte-exact; a denied address is rejected.
func TestSOCKS4Curl(t *testing.T) {
	o := startOrigin(t, false)
	p := startSOCKS5(t, "--rule", "deny dest 127.0.0.2/32")
	const n = 1 << 20
	for _, scheme := range []string{"socks4", "socks4a"} {
		t.Run(scheme, func(t *testing.T) {
			r := socksCurl(t, scheme+"://"+p.addr, fmt.Sprintf("http://localhost:%s/bytes/%d", o.port(), n))
			if r.status != 200 || sha(r.body) != sha(pattern(n)) {
				t.Fatalf("GET: %d, %d bytes, %s", r.status, len(r.body), r.stderr)
			}
			if r := socksCurl(t, scheme+"://"+p.addr, "http://127.0.0.2:"+o.port()+"/"); r.err == nil {
				t.Errorf("denied address: status %d", r.status)
			}
		})
	}
}

// TestSOCKS5CLIErrors: bad command lines of `sluice socks5` exit 2 with a
// clear message; `sluice help socks5` documents it.
func TestSOCKS5CLIErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"socks5"}, "want LISTEN"},
		{[]string{"socks5", "unix:/tmp/s"}, "a SOCKS5 server listens on TCP"},
		{[]string{"socks5", "--rule", "permit all", ":0"}, "--rule"},
		{[]string{"socks5", "--connect-port", "0", ":0"}, "--connect-port"},
	} {
		res := runSluice(t, tt.args...)
		if res.code != 2 || !strings.Contains(res.stderr, tt.want) {
			t.Errorf("sluice %v: exit %d, stderr %q; want 2 and %q", tt.args, res.code, res.stderr, tt.want)
		}
	}
	res := runSluice(t, "help", "socks5")
	if res.code != 0 || !strings.Contains(res.stdout+res.stderr, "UDP") || !strings.Contains(res.stdout+res.stderr, "--users") {
		t.Errorf("help socks5: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
}
