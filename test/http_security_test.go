package test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// TestHTTPProxySmuggling sends the request shapes two parsers can disagree
// on; each must get 400 (or 431/414/501) and never reach the origin.
func TestHTTPProxySmuggling(t *testing.T) {
	o := startOrigin(t, false)
	p := startHTTPProxy(t)
	h := o.hostPort()
	start := "POST http://" + h + "/echo HTTP/1.1\r\nHost: " + h + "\r\n"
	tests := []struct {
		name   string
		raw    string
		status int
	}{
		{"CL.TE", start + "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG", 400},
		{"TE.CL", start + "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n", 400},
		{"CL.CL", start + "Content-Length: 3\r\nContent-Length: 40\r\n\r\nabc", 400},
		{"CL list", start + "Content-Length: 3, 40\r\n\r\nabc", 400},
		{"TE space before colon", start + "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400},
		{"TE obs-fold", start + "Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400},
		{"TE xchunked", start + "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 501},
		{"TE chunked twice", start + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"TE empty", start + "Transfer-Encoding:\r\nContent-Length: 3\r\n\r\nabc", 400},
		{"CL plus sign", start + "Content-Length: +3\r\n\r\nabc", 400},
		{"NUL in field", start + "X-A: a\x00b\r\nContent-Length: 0\r\n\r\n", 400},
		{"bare LF", "GET http://" + h + "/echo HTTP/1.1\nHost: " + h + "\n\n", 400},
		{"bare CR", start + "X-A: a\rContent-Length: 3\r\n\r\nabc", 400},
		{"two Host", "GET http://" + h + "/echo HTTP/1.1\r\nHost: " + h + "\r\nHost: evil.example\r\n\r\n", 400},
		{"huge field", "GET http://" + h + "/echo HTTP/1.1\r\nHost: " + h + "\r\nX-Big: " + strings.Repeat("a", 10000) + "\r\n\r\n", 431},
		{"many fields", "GET http://" + h + "/echo HTTP/1.1\r\nHost: " + h + "\r\n" + strings.Repeat("X-A: 1\r\n", 200) + "\r\n", 431},
		{"huge URI", "GET http://" + h + "/" + strings.Repeat("a", 10000) + " HTTP/1.1\r\nHost: " + h + "\r\n\r\n", 414},
		// Last: their heads are valid and reach the origin; the body is
		// cut at the bad chunk line and the client gets 400.
		{"bad chunk size", start + "Transfer-Encoding: chunked\r\n\r\n-5\r\nabc\r\n0\r\n\r\n", 400},
		{"chunk data overrun", start + "Transfer-Encoding: chunked\r\n\r\n3\r\nabcGET / HTTP/1.1\r\n0\r\n\r\n", 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := o.requests.Load()
			got := rawExchange(t, p, tt.raw)
			if s := statusOf(got); s != tt.status {
				t.Errorf("got %q, want status %d", got, tt.status)
			}
			if tt.name != "bad chunk size" && tt.name != "chunk data overrun" && o.requests.Load() != before {
				t.Errorf("the request reached the origin")
			}
			if strings.Count(got, "HTTP/1.1 ") > 1 {
				t.Errorf("more than one response: %q", got)
			}
		})
	}
}

// TestHTTPProxySlowloris sends a request head one byte every 200 ms; sluice
// must answer 408 and close within its header timeout, and a connection
// that sends nothing is closed too.
func TestHTTPProxySlowloris(t *testing.T) {
	o := startOrigin(t, false)
	p := startHTTPProxy(t, "--header-timeout", "1s")
	c := p.dial(t)
	head := "GET http://" + o.hostPort() + "/echo HTTP/1.1\r\nHost: " + o.hostPort() + "\r\nX-Slow: " + strings.Repeat("z", 100)
	start := time.Now()
	closed := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(c)
		closed <- string(b)
	}()
	var got string
loop:
	for i := 0; i < len(head); i++ {
		if _, err := c.Write([]byte{head[i]}); err != nil {
			break
		}
		select {
		case got = <-closed:
			break loop
		case <-time.After(200 * time.Millisecond):
		}
	}
	if got == "" {
		select {
		case got = <-closed:
		case <-time.After(5 * time.Second):
			t.Fatal("slow client still connected after 5 s")
		}
	}
	took := time.Since(start)
	if statusOf(got) != 408 {
		t.Errorf("slow client got %q, want 408", got)
	}
	if took > 3*time.Second {
		t.Errorf("slow client closed after %v, want about 1 s", took)
	}

	// A connection that never sends a byte is closed as well.
	idle := p.dial(t)
	_ = idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	start = time.Now()
	if _, err := idle.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("silent connection: read err %v, want EOF", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("silent connection closed after %v", took)
	}
}

// addressSpellings are ways to write 127.0.0.1 that a naive ACL misses.
var addressSpellings = []string{
	"127.0.0.1", "2130706433", "0177.0.0.1", "0x7f.0.0.1", "0x7f000001", "127.1", "0x7F.1",
	"017700000001", "127.0.1", "[::ffff:127.0.0.1]", "[::FFFF:7f00:1]", "127.0.0.1.", "localhost", "LocalHost.",
}

// TestHTTPProxyACLSpellings denies 127.0.0.0/8 and tries every spelling
// of 127.0.0.1, by GET and by CONNECT: none may reach the origin.
func TestHTTPProxyACLSpellings(t *testing.T) {
	o := startOrigin(t, false)
	port := o.port()
	p := startHTTPProxy(t, "--rule", "deny dest 127.0.0.0/8", "--connect-port", port)
	for _, host := range addressSpellings {
		authority := host + ":" + port
		get := rawExchange(t, p, "GET http://"+authority+"/echo HTTP/1.1\r\nHost: "+authority+"\r\n\r\n")
		if statusOf(get) != 403 {
			t.Errorf("GET via %s: %q, want 403", host, firstLine(get))
		}
		conn := rawExchange(t, p, "CONNECT "+authority+" HTTP/1.1\r\nHost: "+authority+"\r\n\r\n")
		if statusOf(conn) != 403 {
			t.Errorf("CONNECT via %s: %q, want 403", host, firstLine(conn))
		}
	}
	if n := o.requests.Load() + o.conns.Load(); n != 0 {
		t.Errorf("origin saw %d connections or requests", n)
	}

	// The same spellings do reach the origin when nothing denies them:
	// they are addresses, not unknown names.
	open := startHTTPProxy(t)
	for _, host := range addressSpellings {
		authority := host + ":" + port
		got := rawExchange(t, open, "GET http://"+authority+"/echo HTTP/1.1\r\nHost: "+authority+"\r\nConnection: close\r\n\r\n")
		if statusOf(got) != 200 {
			t.Errorf("allowed GET via %s: %q, want 200", host, firstLine(got))
		}
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\r\n")
	return line
}

// TestHTTPProxyAuth requires users from an htpasswd file of bcrypt hashes.
func TestHTTPProxyAuth(t *testing.T) {
	o := startOrigin(t, false)
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret pass"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(file, []byte("# users\nalice:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startHTTPProxy(t, "--users", file, "--access-log", "--rule", "deny user alice host blocked.example")
	url := "http://" + o.hostPort() + "/echo"

	r := runCurl(t, p, url)
	if r.status != 407 || !strings.Contains(r.header("Proxy-Authenticate"), "Basic") {
		t.Errorf("no credentials: status %d, Proxy-Authenticate %q", r.status, r.header("Proxy-Authenticate"))
	}
	r = runCurl(t, p, "--proxy-user", "alice:wrong", url)
	if r.status != 407 {
		t.Errorf("wrong password: status %d, want 407", r.status)
	}
	for i := range 3 { // the first verifies with bcrypt, the others hit the cache
		r = runCurl(t, p, "--proxy-user", "alice:s3cret pass", url)
		if r.status != 200 {
			t.Fatalf("right password, try %d: status %d %s", i, r.status, r.stderr)
		}
		if r.header("X-Seen-Proxy-Authorization") != "" {
			t.Error("Proxy-Authorization was forwarded to the origin")
		}
	}
	if _, err := p.waitLog(5*time.Second, "log=access", "user=alice", "status=200"); err != nil {
		t.Error(err)
	}
	r = runCurl(t, p, "--proxy-user", "alice:s3cret pass", "http://blocked.example/")
	if r.status != 403 {
		t.Errorf("user rule: status %d, want 403", r.status)
	}

	// Failed logins from one address are limited: after 5 failures even
	// the right password is refused for a while.
	for range 5 {
		runCurl(t, p, "--proxy-user", "mallory:guess", url)
	}
	r = runCurl(t, p, "--proxy-user", "alice:s3cret pass", url)
	if r.status != 200 {
		// alice's credentials are cached, so she still passes; a new
		// name from the same address is not even hashed.
		t.Errorf("cached user after failures: status %d", r.status)
	}
	r = runCurl(t, p, "--proxy-user", "bob:"+fmt.Sprint(time.Now().UnixNano()), url)
	if r.status != 407 {
		t.Errorf("after 5 failures: status %d, want 407", r.status)
	}
	if _, err := p.waitLog(5*time.Second, "too many failed logins"); err != nil {
		t.Error(err)
	}
}

// TestHTTPProxyConnectPortDefault checks that CONNECT reaches only port
// 443 by default.
func TestHTTPProxyConnectPortDefault(t *testing.T) {
	p := startHTTPProxy(t)
	for _, target := range []string{"127.0.0.1:22", "127.0.0.1:25", "[::1]:80"} {
		got := rawExchange(t, p, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
		if statusOf(got) != 403 {
			t.Errorf("CONNECT %s: %q, want 403", target, firstLine(got))
		}
	}
}

// TestHTTPProxyGarbage sends 300 connections of random bytes, and random
// mutations of a valid request: sluice must answer or close each, and
// still serve a normal request afterwards.
func TestHTTPProxyGarbage(t *testing.T) {
	o := startOrigin(t, false)
	p := startHTTPProxy(t, "--header-timeout", "1s")
	valid := "POST http://" + o.hostPort() + "/echo HTTP/1.1\r\nHost: " + o.hostPort() + "\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
	rng := rand.New(rand.NewPCG(7, 7))
	for i := range 300 {
		var b []byte
		if i%2 == 0 {
			b = make([]byte, 1+rng.IntN(2000))
			for j := range b {
				b[j] = byte(rng.IntN(256))
			}
		} else {
			b = []byte(valid)
			for range 1 + rng.IntN(4) {
				b[rng.IntN(len(b))] = byte(rng.IntN(256))
			}
		}
		c := p.dial(t)
		_, _ = c.Write(b)
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(c); err != nil {
			t.Fatalf("connection %d: %v (sluice neither answered nor closed)", i, err)
		}
		c.Close()
	}
	if p.exited() {
		t.Fatalf("sluice exited: %s", p.stderr.String())
	}
	r := runCurl(t, p, "http://"+o.hostPort()+"/echo")
	if r.status != 200 {
		t.Errorf("after the garbage: status %d", r.status)
	}
}
