// Command httpconf runs one set of HTTP proxy requests against sluice
// http-proxy and tinyproxy (Debian's) side by side on loopback and prints
// docs/HTTP-CONFORMANCE.md: for every request, what the client got back
// and whether it reached the origin, per proxy.
//
//	go run ./test/httpconf -sluice bin/sluice > docs/HTTP-CONFORMANCE.md
//
// Each proxy runs twice: open, and with its way of denying 127.0.0.0/8
// (sluice: a dest rule; tinyproxy: a domain filter on the address, the
// only destination control it has) for the address-spelling cases.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

func main() {
	sluiceBin := flag.String("sluice", "bin/sluice", "sluice binary")
	tinyBin := flag.String("tinyproxy", "tinyproxy", "tinyproxy binary")
	slowFor := flag.Duration("slow", 60*time.Second, "how long the slowloris client keeps trickling")
	flag.Parse()
	if err := run(*sluiceBin, *tinyBin, *slowFor); err != nil {
		fmt.Fprintln(os.Stderr, "httpconf:", err)
		os.Exit(1)
	}
}

// origin records the requests that reach it.
type origin struct {
	ln   net.Listener
	mu   sync.Mutex
	seen []string // "METHOD PATH" + fields of interest
}

func startOrigin() (*origin, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	o := &origin{ln: ln}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var b strings.Builder
		path := r.URL.Path
		if len(path) > 40 {
			path = fmt.Sprintf("%s... (%d bytes)", path[:20], len(path))
		}
		fmt.Fprintf(&b, "%s %s body=%d", r.Method, path, len(body))
		for _, h := range []string{"Via", "X-Forwarded-For", "X-Hop", "Connection", "Proxy-Connection"} {
			if v := r.Header.Get(h); v != "" {
				fmt.Fprintf(&b, " %s=%q", h, v)
			}
		}
		o.mu.Lock()
		o.seen = append(o.seen, b.String())
		o.mu.Unlock()
		fmt.Fprintf(w, "ok %s\n", r.URL.Path)
	})}
	go func() { _ = srv.Serve(ln) }()
	return o, nil
}

func (o *origin) port() int { return o.ln.Addr().(*net.TCPAddr).Port }

// take returns and forgets what reached the origin so far.
func (o *origin) take() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := o.seen
	o.seen = nil
	return s
}

// proxy is one running proxy under test.
type proxy struct {
	name string
	addr string
	cmd  *exec.Cmd
}

func (p *proxy) stop() {
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func waitListen(addr string) error {
	for range 100 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not listen", addr)
}

func startSluice(bin string, originPort int, deny bool) (*proxy, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	args := []string{"http-proxy", "--header-timeout", "10s", "--connect-port", fmt.Sprint(originPort)}
	if deny {
		args = append(args, "--rule", "deny dest 127.0.0.0/8")
	}
	cmd := exec.Command(bin, append(args, addr)...)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proxy{name: "sluice", addr: addr, cmd: cmd}
	if err := waitListen(addr); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

func startTinyproxy(bin, dir string, originPort int, deny bool) (*proxy, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	conf := fmt.Sprintf("Port %d\nListen 127.0.0.1\nTimeout 600\nMaxClients 100\nAllow 127.0.0.1\nConnectPort %d\nConnectPort 443\nLogLevel Critical\n",
		port, originPort)
	if deny {
		filter := filepath.Join(dir, fmt.Sprintf("filter-%d", port))
		if err := os.WriteFile(filter, []byte("^127\\.0\\.0\\.1$\n"), 0o644); err != nil {
			return nil, err
		}
		conf += fmt.Sprintf("Filter %q\nFilterExtended On\n", filter)
	}
	confPath := filepath.Join(dir, fmt.Sprintf("tinyproxy-%d.conf", port))
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-d", "-c", confPath)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proxy{name: "tinyproxy", addr: addr, cmd: cmd}
	if err := waitListen(addr); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// outcome is what one request did through one proxy.
type outcome struct {
	status  string // first line's code, "closed" or "timeout"
	reached []string
}

func (o outcome) String() string {
	reached := "not forwarded"
	if len(o.reached) > 0 {
		reached = "origin got: " + strings.Join(o.reached, "; ")
	}
	return o.status + "; " + reached
}

// exchange sends raw to the proxy and reads the first response (or until
// close) for at most 3 s.
func exchange(addr, raw string) string {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "connect error"
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte(raw)); err != nil {
		return "closed"
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "no answer in 3 s"
		}
		return "closed without a response"
	}
	resp.Body.Close()
	return fmt.Sprint(resp.StatusCode)
}

// testCase is one request, built for a given origin port.
type testCase struct {
	name  string
	deny  bool // run against the proxies that deny 127.0.0.0/8
	build func(port int) string
}

func get(host, path string) func(int) string {
	return func(port int) string {
		a := fmt.Sprintf("%s:%d", host, port)
		return "GET http://" + a + path + " HTTP/1.1\r\nHost: " + a + "\r\nConnection: close\r\n\r\n"
	}
}

func post(extra, body string) func(int) string {
	return func(port int) string {
		a := fmt.Sprintf("127.0.0.1:%d", port)
		return "POST http://" + a + "/post HTTP/1.1\r\nHost: " + a + "\r\nConnection: close\r\n" + extra + "\r\n" + body
	}
}

func cases() []testCase {
	cs := []testCase{
		{"GET absolute-form", false, get("127.0.0.1", "/get")},
		{"HEAD", false, func(p int) string {
			return fmt.Sprintf("HEAD http://127.0.0.1:%d/head HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n", p, p)
		}},
		{"POST with Content-Length", false, post("Content-Length: 5\r\n", "hello")},
		{"POST chunked", false, post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n")},
		{"HTTP/1.0 GET", false, func(p int) string {
			return fmt.Sprintf("GET http://127.0.0.1:%d/http10 HTTP/1.0\r\n\r\n", p)
		}},
		{"CONNECT to the origin port", false, func(p int) string {
			return fmt.Sprintf("CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\nGET /tunnel HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", p, p)
		}},
		{"hop-by-hop named in Connection (X-Hop)", false, func(p int) string {
			a := fmt.Sprintf("127.0.0.1:%d", p)
			return "GET http://" + a + "/hop HTTP/1.1\r\nHost: " + a + "\r\nConnection: close, X-Hop\r\nX-Hop: secret\r\nProxy-Connection: keep-alive\r\n\r\n"
		}},
		{"Host differs from the URI", false, func(p int) string {
			return fmt.Sprintf("GET http://127.0.0.1:%d/host HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n", p)
		}},
		{"Content-Length + Transfer-Encoding (CL.TE)", false, post("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\nG")},
		{"Transfer-Encoding + Content-Length (TE.CL)", false, post("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", "8\r\nSMUGGLED\r\n0\r\n\r\n")},
		{"two different Content-Length", false, post("Content-Length: 3\r\nContent-Length: 5\r\n", "hello")},
		{"Content-Length: 3, 5", false, post("Content-Length: 3, 5\r\n", "hello")},
		{"Transfer-Encoding with space before colon", false, post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n")},
		{"obs-fold", false, post("Transfer-Encoding:\r\n chunked\r\n", "0\r\n\r\n")},
		{"Transfer-Encoding: xchunked", false, post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n")},
		{"NUL in a field value", false, func(p int) string {
			a := fmt.Sprintf("127.0.0.1:%d", p)
			return "GET http://" + a + "/nul HTTP/1.1\r\nHost: " + a + "\r\nX-A: a\x00b\r\nConnection: close\r\n\r\n"
		}},
		{"bare LF line endings", false, func(p int) string {
			a := fmt.Sprintf("127.0.0.1:%d", p)
			return "GET http://" + a + "/lf HTTP/1.1\nHost: " + a + "\nConnection: close\n\n"
		}},
		{"64 KB header field", false, func(p int) string {
			a := fmt.Sprintf("127.0.0.1:%d", p)
			return "GET http://" + a + "/big HTTP/1.1\r\nHost: " + a + "\r\nX-Big: " + strings.Repeat("b", 65536) + "\r\nConnection: close\r\n\r\n"
		}},
		{"16 KB request URI", false, get("127.0.0.1", "/"+strings.Repeat("u", 16384))},
		{"200 header fields", false, func(p int) string {
			a := fmt.Sprintf("127.0.0.1:%d", p)
			return "GET http://" + a + "/many HTTP/1.1\r\nHost: " + a + "\r\n" + strings.Repeat("X-F: 1\r\n", 200) + "Connection: close\r\n\r\n"
		}},
	}
	for _, h := range []string{"127.0.0.1", "2130706433", "0177.0.0.1", "0x7f.0.0.1", "0x7f000001", "127.1", "[::ffff:127.0.0.1]", "127.0.0.1.", "localhost"} {
		cs = append(cs, testCase{"denied 127.0.0.0/8, GET via " + h, true, get(h, "/deny")})
		host := h
		cs = append(cs, testCase{"denied 127.0.0.0/8, CONNECT via " + h, true, func(p int) string {
			a := fmt.Sprintf("%s:%d", host, p)
			return "CONNECT " + a + " HTTP/1.1\r\nHost: " + a + "\r\n\r\nGET /deny-tunnel HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
		}})
	}
	return cs
}

// slowloris trickles a request head one byte per 500 ms and returns how
// long the proxy kept the connection, capped at limit.
func slowloris(addr string, port int, limit time.Duration) string {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "connect error"
	}
	defer c.Close()
	head := fmt.Sprintf("GET http://127.0.0.1:%d/slow HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Slow: %s", port, port, strings.Repeat("z", 1000))
	start := time.Now()
	closed := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(c)
		closed <- b
	}()
	for i := 0; time.Since(start) < limit; i++ {
		if _, err := c.Write([]byte{head[i%len(head)]}); err != nil {
			break
		}
		select {
		case b := <-closed:
			status := "closed"
			if resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), nil); err == nil {
				status = fmt.Sprintf("%d and closed", resp.StatusCode)
			}
			return fmt.Sprintf("%s after %.1f s", status, time.Since(start).Seconds())
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Sprintf("still open after %.0f s", limit.Seconds())
}

func run(sluiceBin, tinyBin string, slowFor time.Duration) error {
	o, err := startOrigin()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "httpconf-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	port := o.port()
	type pair struct{ open, deny *proxy }
	var proxies []pair
	for _, start := range []func(bool) (*proxy, error){
		func(d bool) (*proxy, error) { return startSluice(sluiceBin, port, d) },
		func(d bool) (*proxy, error) { return startTinyproxy(tinyBin, dir, port, d) },
	} {
		open, err := start(false)
		if err != nil {
			return err
		}
		defer open.stop()
		deny, err := start(true)
		if err != nil {
			return err
		}
		defer deny.stop()
		proxies = append(proxies, pair{open, deny})
	}
	version := func(bin string, args ...string) string {
		out, _ := exec.Command(bin, args...).CombinedOutput()
		return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# HTTP proxy conformance: sluice and tinyproxy\n\n")
	fmt.Fprintf(&b, "Generated by `go run ./test/httpconf -sluice bin/sluice > docs/HTTP-CONFORMANCE.md` (%s).\n", time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(&b, "Each request is sent raw over TCP to each proxy on loopback; a Go net/http origin records\n")
	fmt.Fprintf(&b, "what reaches it. sluice: `%s`; tinyproxy: `%s` (Debian). The denied-address rows use a\n", version(sluiceBin, "version"), version(tinyBin, "-v"))
	fmt.Fprintf(&b, "second instance of each: sluice with `--rule 'deny dest 127.0.0.0/8'`, tinyproxy with a\n")
	fmt.Fprintf(&b, "`Filter` of `^127\\.0\\.0\\.1$` (it has no destination-address rules). A status is the code\n")
	fmt.Fprintf(&b, "the client got; \"origin got\" lists what the origin received.\n\n")
	fmt.Fprintf(&b, "| request | sluice | tinyproxy |\n|---|---|---|\n")
	for _, tc := range cases() {
		row := []string{tc.name}
		for _, pr := range proxies {
			p := pr.open
			if tc.deny {
				p = pr.deny
			}
			o.take()
			status := exchange(p.addr, tc.build(port))
			time.Sleep(100 * time.Millisecond) // let a forwarded request land
			row = append(row, outcome{status: status, reached: o.take()}.String())
		}
		fmt.Fprintf(&b, "| %s |\n", strings.Join(escape(row), " | "))
	}
	row := []string{fmt.Sprintf("slowloris: one header byte per 500 ms for up to %.0f s", slowFor.Seconds())}
	results := make([]string, len(proxies))
	var wg sync.WaitGroup
	for i, pr := range proxies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = slowloris(pr.open.addr, port, slowFor)
		}()
	}
	wg.Wait()
	row = append(row, results...)
	fmt.Fprintf(&b, "| %s |\n", strings.Join(escape(row), " | "))
	_, err = os.Stdout.WriteString(b.String())
	return err
}

func escape(cells []string) []string {
	out := make([]string, len(cells))
	for i, c := range cells {
		out[i] = strings.ReplaceAll(strings.ReplaceAll(c, "|", "\\|"), "\n", " ")
	}
	return out
}
