package socks5

import (
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/sluice-proxy/sluice/pkg/accounting"
	"github.com/sluice-proxy/sluice/pkg/ratelimit"
)

// TestConnectionLimitAndAccounting: a user's max_conns (pkg/ratelimit)
// refuses a second session with reply 2 while the first lives, and gives
// the slot back when it ends; pkg/accounting counts the sessions and their
// bytes for the identity; the refused one is not counted (the HTTP
// proxy does not count a 429 either).
func TestConnectionLimitAndAccounting(t *testing.T) {
	rates := ratelimit.NewRegistry(nil)
	rates.Update(map[string]ratelimit.Limits{"alice": {MaxConns: 1}})
	acc, err := accounting.New(accounting.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer acc.Close()
	s := startServer(t, Config{Users: testUsers(t), Rates: rates, Accounting: acc})
	echo := startEcho(t)
	d, _ := proxy.SOCKS5("tcp", s.Addr(), &proxy.Auth{User: "alice", Password: "secret"}, proxy.Direct)
	first, err := d.Dial("tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := d.Dial("tcp", echo); err == nil {
		c.Close()
		t.Fatal("a second session passed max_conns 1")
	}
	first.Write(make([]byte, 1000))
	io.ReadFull(first, make([]byte, 1000))
	first.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := d.Dial("tcp", echo)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slot was not given back: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for {
		e := acc.Snapshot("alice")
		if len(e) == 1 && e[0].Requests == 2 && e[0].Conns == 2 && e[0].BytesUp == 1000 && e[0].BytesDown == 1000 && e[0].Live == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("accounting: %+v", e)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestQuota: an identity over its byte quota is refused (reply 2), and a
// live session is cut when the quota watch finds it over.
func TestQuota(t *testing.T) {
	acc, err := accounting.New(accounting.Config{QuotaCheck: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer acc.Close()
	acc.SetQuotas(map[string]accounting.Quota{"addr:127.0.0.1": {Period: accounting.Day, Bytes: 100 << 10}})
	s := startServer(t, Config{Accounting: acc})
	echo := startEcho(t)
	d, _ := proxy.SOCKS5("tcp", s.Addr(), nil, proxy.Direct)
	c, err := d.Dial("tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		buf := make([]byte, 64<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the session was not cut at its quota (%d bytes back)", n)
	}
	if c2, err := d.Dial("tcp", echo); err == nil {
		c2.Close()
		t.Fatal("a session over quota was allowed")
	}
	if got := handshake(t, s.Addr(), connectReq(AtypIPv4, []byte{127, 0, 0, 1}, 80)); got != int(RepNotAllowed) {
		t.Errorf("over quota: reply %d, want %d", got, RepNotAllowed)
	}
}

// FuzzHandshake feeds arbitrary client bytes to a live server: it must
// answer and close within the handshake (or connect) timeout, never panic
// or hang.
func FuzzHandshake(f *testing.F) {
	f.Add([]byte{5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 9})
	f.Add([]byte{5, 2, 0, 2, 5, 1, 0, 3, 3, 'a', '.', 'b', 0, 80})
	f.Add([]byte{5, 1, 2, 1, 3, 'b', 'o', 'b', 1, 'x'})
	f.Add([]byte{5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{5, 1, 0, 5, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	s := startServer(f, Config{Users: testUsers(f), HandshakeTimeout: 300 * time.Millisecond, ConnectTimeout: 300 * time.Millisecond})
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Skip(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		c.Write(in)
		c.(*net.TCPConn).CloseWrite()
		if _, err := io.ReadAll(c); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("no close within 3 s for %v", in)
			}
		}
	})
}
