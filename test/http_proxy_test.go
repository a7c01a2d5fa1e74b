package test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestHTTPProxyMethods sends every common method through sluice with curl
// and checks what the origin saw, byte-exact.
func TestHTTPProxyMethods(t *testing.T) {
	o := startOrigin(t, false)
	p := startHTTPProxy(t)
	body := pattern(300_000)
	file := writeFile(t, body)
	for _, m := range []string{"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "PROPFIND"} {
		t.Run(m, func(t *testing.T) {
			args := []string{"-X", m, "http://" + o.hostPort() + "/echo"}
			want := ""
			if m == "HEAD" {
				args = []string{"-I", "http://" + o.hostPort() + "/echo"}
			}
			if m == "POST" || m == "PUT" || m == "PATCH" {
				args = append(args, "--data-binary", "@"+file)
				want = sha(body)
			}
			r := runCurl(t, p, args...)
			if r.err != nil || r.status != 200 {
				t.Fatalf("curl: status %d err %v %s", r.status, r.err, r.stderr)
			}
			if got := r.header("X-Method"); got != m {
				t.Errorf("origin saw method %q, want %q", got, m)
			}
			if want != "" && r.header("X-Body-Sha256") != want {
				t.Errorf("origin got body sha256 %s (length %s), want %s", r.header("X-Body-Sha256"), r.header("X-Body-Length"), want)
			}
			if r.header("Via") != "1.1 sluice" {
				t.Errorf("Via = %q, want 1.1 sluice", r.header("Via"))
			}
			if m != "HEAD" && !strings.HasPrefix(string(r.body), m+" ") {
				t.Errorf("body %q", r.body)
			}
		})
	}
}

// TestHTTPProxyBodies streams bodies both ways, by Content-Length and
// chunked, and checks them byte for byte.
func TestHTTPProxyBodies(t *testing.T) {
	o := startOrigin(t, false)
	p := startHTTPProxy(t)
	const n = 5_000_003
	t.Run("download length", func(t *testing.T) {
		r := runCurl(t, p, fmt.Sprintf("http://%s/bytes/%d", o.hostPort(), n))
		if r.status != 200 || sha(r.body) != sha(pattern(n)) {
			t.Fatalf("status %d, %d bytes, sha mismatch: %s", r.status, len(r.body), r.stderr)
		}
	})
	t.Run("download chunked", func(t *testing.T) {
		r := runCurl(t, p, fmt.Sprintf("http://%s/chunked/%d", o.hostPort(), n))
		if r.status != 200 || sha(r.body) != sha(pattern(n)) {
			t.Fatalf("status %d, %d bytes, sha mismatch: %s", r.status, len(r.body), r.stderr)
		}
		if !strings.EqualFold(r.header("Transfer-Encoding"), "chunked") {
			t.Errorf("Transfer-Encoding = %q, want chunked passed through", r.header("Transfer-Encoding"))
		}
	})
	t.Run("upload chunked", func(t *testing.T) {
		body := pattern(n)
		r := runCurl(t, p, "-H", "Transfer-Encoding: chunked", "--data-binary", "@"+writeFile(t, body), "http://"+o.hostPort()+"/echo")
		if r.status != 200 || r.header("X-Body-Sha256") != sha(body) || r.header("X-Chunked") != "true" {
			t.Fatalf("status %d, origin got %s bytes sha %s chunked %s: %s", r.status, r.header("X-Body-Length"), r.header("X-Body-Sha256"), r.header("X-Chunked"), r.stderr)
		}
	})
	t.Run("upload expect 100-continue", func(t *testing.T) {
		body := pattern(2_000_000)
		start := time.Now()
		r := runCurl(t, p, "-H", "Expect: 100-continue", "--expect100-timeout", "10", "--data-binary", "@"+writeFile(t, body), "http://"+o.hostPort()+"/echo")
		if r.status != 200 || r.header("X-Body-Sha256") != sha(body) {
			t.Fatalf("status %d, origin sha %s: %s", r.status, r.header("X-Body-Sha256"), r.stderr)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("took %v: 100 Continue was not passed on", took)
		}
		if !strings.Contains(r.headers, "HTTP/1.1 100 Continue") {
			t.Errorf("curl saw no 100 Continue:\n%s", r.headers)
		}
	})
	t.Run("http/1.0 client gets chunked body unchunked", func(t *testing.T) {
		r := runCurl(t, p, "-0", fmt.Sprintf("http://%s/chunked/%d", o.hostPort(), 100_000))
		if r.status != 200 || sha(r.body) != sha(pattern(100_000)) {
			t.Fatalf("status %d, %d bytes: %s", r.status, len(r.body), r.stderr)
		}
		if r.header("Transfer-Encoding") != "" || !strings.EqualFold(r.header("Connection"), "close") {
			t.Errorf("HTTP/1.0 client got Transfer-Encoding %q, Connection %q", r.header("Transfer-Encoding"), r.header("Connection"))
		}
	})
	t.Run("http/1.0 client length", func(t *testing.T) {
		r := runCurl(t, p, "-0", fmt.Sprintf("http://%s/bytes/%d", o.hostPort(), 70_000))
		if r.status != 200 || sha(r.body) != sha(pattern(70_000)) {
			t.Fatalf("status %d, %d bytes: %s", r.status, len(r.body), r.stderr)
		}
	})
}

// TestHTTPProxyHeaders checks hop-by-hop removal, Via, Host from the URI
// and that the client address stays hidden unless --forwarded-for.
func TestHTTPProxyHeaders(t *testing.T) {
	o := startOrigin(t, false)
	p := startHTTPProxy(t)
	r := runCurl(t, p, "-H", "Connection: X-Private", "-H", "X-Private: secret", "-H", "Keep-Alive: 5",
		"-H", "Proxy-Connection: keep-alive", "-H", "TE: trailers", "-H", "X-Kept: yes", "http://"+o.hostPort()+"/echo")
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.stderr)
	}
	for _, h := range []string{"X-Private", "Keep-Alive", "Proxy-Connection", "Te", "X-Forwarded-For"} {
		if v := r.header("X-Seen-" + h); v != "" {
			t.Errorf("origin saw %s: %q", h, v)
		}
	}
	if r.header("X-Seen-X-Kept") != "yes" || r.header("X-Seen-Via") != "1.1 sluice" || r.header("X-Seen-Host") != o.hostPort() {
		t.Errorf("origin saw X-Kept %q Via %q Host %q", r.header("X-Seen-X-Kept"), r.header("X-Seen-Via"), r.header("X-Seen-Host"))
	}

	pf := startHTTPProxy(t, "--forwarded-for")
	r = runCurl(t, pf, "http://"+o.hostPort()+"/echo")
	if r.header("X-Seen-X-Forwarded-For") != "127.0.0.1" {
		t.Errorf("with --forwarded-for origin saw X-Forwarded-For %q", r.header("X-Seen-X-Forwarded-For"))
	}
}

// TestHTTPProxyKeepAlive makes 20 requests with Go's client through one
// proxy connection, and sluice makes them over one origin connection.
func TestHTTPProxyKeepAlive(t *testing.T) {
	o := startOrigin(t, false)
	p := startHTTPProxy(t)
	var dials atomic.Int64
	proxyURL, _ := url.Parse("http://" + p.addr)
	tr := &http.Transport{
		Proxy: http.ProxyURL(proxyURL),
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for i := range 20 {
		resp, err := client.Get(fmt.Sprintf("http://%s/bytes/%d", o.hostPort(), 1000+i))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if sha(b) != sha(pattern(1000+i)) {
			t.Fatalf("request %d: wrong body", i)
		}
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("%d connections to the proxy for 20 requests, want 1 (keep-alive)", n)
	}
	if n := o.requests.Load(); n != 20 {
		t.Errorf("origin saw %d requests, want 20", n)
	}
	if n := o.conns.Load(); n != 1 {
		t.Errorf("origin saw %d connections for 20 requests, want 1 (pooled)", n)
	}
}

// TestHTTPProxyPipelined sends two requests in one write; both must be
// answered in order.
func TestHTTPProxyPipelined(t *testing.T) {
	o := startOrigin(t, false)
	p := startHTTPProxy(t)
	c := p.dial(t)
	req := fmt.Sprintf("GET http://%[1]s/bytes/10 HTTP/1.1\r\nHost: %[1]s\r\n\r\nPOST http://%[1]s/echo HTTP/1.1\r\nHost: %[1]s\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc", o.hostPort())
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	for i, want := range []string{string(pattern(10)), "POST 3\n"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != want {
			t.Errorf("response %d body %q, want %q", i, b, want)
		}
	}
}

// TestHTTPProxyConnectTLS tunnels curl to a local TLS origin.
func TestHTTPProxyConnectTLS(t *testing.T) {
	o := startOrigin(t, true)
	p := startHTTPProxy(t, "--connect-port", o.port())
	const n = 3_000_000
	r := runCurl(t, p, "-k", fmt.Sprintf("https://%s/bytes/%d", o.hostPort(), n))
	if r.status != 200 || sha(r.body) != sha(pattern(n)) {
		t.Fatalf("status %d, %d bytes: %s", r.status, len(r.body), r.stderr)
	}
	if !strings.Contains(r.headers, "200 Connection established") {
		t.Errorf("no CONNECT 200 in %q", r.headers)
	}
	body := pattern(1_000_000)
	r = runCurl(t, p, "-k", "--data-binary", "@"+writeFile(t, body), "https://"+o.hostPort()+"/echo")
	if r.status != 200 || r.header("X-Body-Sha256") != sha(body) {
		t.Fatalf("upload through tunnel: status %d sha %s: %s", r.status, r.header("X-Body-Sha256"), r.stderr)
	}

	// Without --connect-port only 443 may be reached.
	p443 := startHTTPProxy(t)
	r = runCurl(t, p443, "-k", "https://"+o.hostPort()+"/bytes/1")
	if !strings.Contains(r.headers, "403") {
		t.Errorf("CONNECT to port %s without --connect-port: %q, want 403", o.port(), r.headers)
	}
}

// TestHTTPProxyErrors checks the responses sluice makes itself.
func TestHTTPProxyErrors(t *testing.T) {
	o := startOrigin(t, false)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	p := startHTTPProxy(t, "--read-timeout", "1s", "--rule", "deny host forbidden.example")
	tests := []struct {
		name   string
		raw    string
		status int
	}{
		{"origin-form", "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"https absolute-form", "GET https://" + o.hostPort() + "/ HTTP/1.1\r\nHost: " + o.hostPort() + "\r\n\r\n", 400},
		{"host mismatch", "GET http://" + o.hostPort() + "/echo HTTP/1.1\r\nHost: other.example\r\n\r\n", 400},
		{"userinfo", "GET http://u:p@" + o.hostPort() + "/ HTTP/1.1\r\nHost: " + o.hostPort() + "\r\n\r\n", 400},
		{"refused", "GET http://" + closedAddr + "/ HTTP/1.1\r\nHost: " + closedAddr + "\r\n\r\n", 502},
		{"unresolvable", "GET http://no-such-host.invalid/ HTTP/1.1\r\nHost: no-such-host.invalid\r\n\r\n", 502},
		{"denied", "GET http://forbidden.example/ HTTP/1.1\r\nHost: forbidden.example\r\n\r\n", 403},
		{"silent origin", "GET http://" + o.hostPort() + "/silent HTTP/1.1\r\nHost: " + o.hostPort() + "\r\n\r\n", 504},
		{"http/2.0", "GET http://" + o.hostPort() + "/ HTTP/2.0\r\nHost: a\r\n\r\n", 505},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := rawExchange(t, p, tt.raw)
			if statusOf(got) != tt.status {
				t.Errorf("got %q, want status %d", got, tt.status)
			}
		})
	}
}

// TestHTTPProxyAccessLog checks the one line per request.
func TestHTTPProxyAccessLog(t *testing.T) {
	o := startOrigin(t, false)
	p := startHTTPProxy(t, "--access-log")
	r := runCurl(t, p, "http://"+o.hostPort()+"/bytes/1234")
	if r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	line, err := p.waitLog(5*time.Second, "msg=request", "log=access")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"client=127.0.0.1", "method=GET", "url=http://" + o.hostPort() + "/bytes/1234", "status=200", "bytes_down=1234"} {
		if !strings.Contains(line, want) {
			t.Errorf("access line %q lacks %q", line, want)
		}
	}

	// A tunnel is logged when it ends, with the bytes it carried.
	tlsO := startOrigin(t, true)
	pt := startHTTPProxy(t, "--access-log", "--connect-port", tlsO.port())
	if r := runCurl(t, pt, "-k", "https://"+tlsO.hostPort()+"/bytes/100000"); r.status != 200 {
		t.Fatalf("tunnel: status %d %s", r.status, r.stderr)
	}
	line, err = pt.waitLog(5*time.Second, "msg=request", "method=CONNECT")
	if err != nil {
		t.Fatal(err)
	}
	down, _ := logAttr(line, "bytes_down")
	if !strings.Contains(line, "url="+tlsO.hostPort()) || !strings.Contains(line, "status=200") || len(down) < 6 {
		t.Errorf("tunnel access line %q: want the target, status 200 and over 100000 bytes down", line)
	}
}

// TestHTTPProxyStalePooledOrigin has an origin that closes a kept-alive
// connection instead of answering its second request, as one whose idle
// timeout struck just then would: sluice must send the request again on a
// fresh connection, and the client must not notice.
func TestHTTPProxyStalePooledOrigin(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := conns.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for i := 0; ; i++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					if n == 1 && i == 1 {
						return // the stale connection: close without answering
					}
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(req.URL.Path), req.URL.Path)
				}
			}()
		}
	}()
	p := startHTTPProxy(t)
	for i, path := range []string{"/first", "/second", "/third"} {
		r := runCurl(t, p, "http://"+ln.Addr().String()+path)
		if r.status != 200 || string(r.body) != path {
			t.Fatalf("request %d: status %d body %q: %s", i, r.status, r.body, r.stderr)
		}
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("origin saw %d connections, want 2 (one pooled, one after the stale one)", n)
	}
}

// TestHTTPProxyBackpressure downloads through a client that reads slowly
// and uploads to an origin that reads slowly, so both directions fill the
// socket buffers and wait for writability; bodies must arrive intact.
func TestHTTPProxyBackpressure(t *testing.T) {
	const n = 4_000_000
	o := startOrigin(t, false)
	slowOrigin := startOrigin(t, false)
	slowOrigin.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		buf := make([]byte, 16384)
		for {
			k, err := r.Body.Read(buf)
			h.Write(buf[:k])
			if err != nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
		fmt.Fprintf(w, "%x", h.Sum(nil))
	})
	p := startHTTPProxy(t)

	c := p.dial(t)
	fmt.Fprintf(c, "GET http://%[1]s/chunked/%[2]d HTTP/1.1\r\nHost: %[1]s\r\n\r\n", o.hostPort(), n)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	buf := make([]byte, 8192)
	for {
		k, err := resp.Body.Read(buf)
		h.Write(buf[:k])
		if err != nil {
			break
		}
		time.Sleep(100 * time.Microsecond)
	}
	if got := fmt.Sprintf("%x", h.Sum(nil)); got != sha(pattern(n)) {
		t.Errorf("slow reader got a different body")
	}

	r := runCurl(t, p, "--data-binary", "@"+writeFile(t, pattern(n)), "http://"+slowOrigin.hostPort()+"/")
	if r.status != 200 || string(r.body) != sha(pattern(n)) {
		t.Errorf("upload to a slow origin: status %d, origin sha %s", r.status, r.body)
	}
}

// TestHTTPProxyResponseFraming has a raw origin answer with every way a
// response body can end (or not exist) and checks what a keep-alive client
// gets through sluice, on one client connection where the framing allows.
func TestHTTPProxyResponseFraming(t *testing.T) {
	answers := map[string]string{
		"/close":    "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the origin closes",
		"/204":      "HTTP/1.1 204 No Content\r\n\r\n",
		"/304":      "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n",
		"/head":     "HTTP/1.1 200 OK\r\nContent-Length: 12345\r\n\r\n",
		"/trailers": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n4\r\nwiki\r\n5;ext=1\r\npedia\r\n0\r\nX-T: done\r\n\r\n",
		"/early":    "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					fmt.Fprint(c, answers[req.URL.Path])
					if req.URL.Path == "/close" {
						return
					}
				}
			}()
		}
	}()
	p := startHTTPProxy(t)
	c := p.dial(t)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	origin := ln.Addr().String()
	ask := func(method, path string) (*http.Response, string) {
		t.Helper()
		fmt.Fprintf(c, "%s http://%s%s HTTP/1.1\r\nHost: %s\r\n\r\n", method, origin, path, origin)
		req := &http.Request{Method: method}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s %s: body: %v", method, path, err)
		}
		resp.Body.Close()
		return resp, string(b)
	}
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/204", ""},
		{"GET", "/304", ""},
		{"HEAD", "/head", ""},
		{"GET", "/trailers", "wikipedia"},
		{"GET", "/early", "ok"},
	} {
		resp, body := ask(tc.method, tc.path)
		if tc.path == "/early" {
			// The interim 103 comes first, as the origin sent it.
			if resp.StatusCode != 103 || resp.Header.Get("Link") != "</a.css>" {
				t.Errorf("GET /early: first response %d Link %q, want the 103", resp.StatusCode, resp.Header.Get("Link"))
			}
			resp, err = http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("GET /early: final response: %v", err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
		}
		if body != tc.body || resp.Close {
			t.Errorf("%s %s: body %q close %v, want %q on a kept connection", tc.method, tc.path, body, resp.Close, tc.body)
		}
		if tc.path == "/trailers" && resp.Trailer.Get("X-T") != "done" {
			t.Errorf("trailer X-T = %q, want done", resp.Trailer.Get("X-T"))
		}
		if tc.path == "/head" && resp.ContentLength != 12345 {
			t.Errorf("HEAD Content-Length %d, want 12345", resp.ContentLength)
		}
	}
	resp, body := ask("GET", "/close")
	if body != "until the origin closes" || !resp.Close {
		t.Errorf("close-delimited body: %q close %v, want the body and Connection: close", body, resp.Close)
	}
}
