package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-proxy/sluice/pkg/endpoint"
	"github.com/sluice-proxy/sluice/pkg/reactor"
)

// testLog shows the services' records with -v.
func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func newReactor(t *testing.T, loops int) *reactor.Reactor {
	t.Helper()
	r, err := reactor.New(reactor.Config{Loops: loops})
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

func freePort(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

func mustAddr(t *testing.T, s string) endpoint.Addr {
	t.Helper()
	a, err := endpoint.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// echoServer echoes every connection and half-closes after the echo.
func echoServer(t *testing.T) string {
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
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return ln.Addr().String()
}

type pair struct {
	srv  *Server
	cli  *Client
	port uint16
}

func startPair(t *testing.T, loops int, local string, mod func(*ServerConfig, *ClientConfig)) pair {
	t.Helper()
	r := newReactor(t, loops)
	port := freePort(t)
	sc := ServerConfig{Listen: mustAddr(t, "127.0.0.1:0"), Token: "s3cret", Bind: "127.0.0.1",
		Ports: []PortRange{{1024, 65535}}, Log: testLog(t)}
	cc := ClientConfig{Name: "home", Token: "s3cret", Pool: 2, MaxBackoff: 200 * time.Millisecond,
		Services: []Service{{Name: "echo", RemotePort: port, Local: mustAddr(t, local)}}, Log: testLog(t)}
	if mod != nil {
		mod(&sc, &cc)
	}
	srv, err := NewServer(context.Background(), r, sc)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.StopAccepting)
	cc.Server = mustAddr(t, srv.Addr())
	cli, err := NewClient(r, cc)
	if err != nil {
		t.Fatal(err)
	}
	cli.Start()
	t.Cleanup(cli.Stop)
	return pair{srv: srv, cli: cli, port: port}
}

// waitPublished waits until the client says its service is published.
func waitPublished(t *testing.T, c *Client, want string) ClientStatus {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := c.Snapshot(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Services) > 0 && strings.HasSuffix(st.Services[0], want) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("service not %q: %+v", want, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// roundTrip sends n random bytes through addr, half-closes and checks the
// echo by sha256.
func roundTrip(t testing.TB, addr string, n int) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	data := make([]byte, n)
	rand.Read(data)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	h := sha256.New()
	got, err := io.Copy(h, c)
	if err != nil {
		return err
	}
	if err := <-errc; err != nil {
		return err
	}
	want := sha256.Sum256(data)
	if got != int64(n) || !bytes.Equal(h.Sum(nil), want[:]) {
		return errors.New("echo differs from what was sent")
	}
	return nil
}

func TestTunnelEcho(t *testing.T) {
	p := startPair(t, 2, echoServer(t), nil)
	waitPublished(t, p.cli, "published")
	// Regression: pooled data connections were closed as soon as they
	// were pooled (their frame was handled twice), so every public
	// connection waited for a new one.
	waitIdleData(t, p.srv, 2)
	time.Sleep(100 * time.Millisecond)
	waitIdleData(t, p.srv, 2)
	pub := net.JoinHostPort("127.0.0.1", itoa(p.port))
	if err := roundTrip(t, pub, 4<<20); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- roundTrip(t, pub, 100_000)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	st, cs, err := p.srv.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Logins != 1 || len(cs) != 1 || cs[0].Name != "home" {
		t.Fatalf("server stats %+v clients %+v", st, cs)
	}
	want := uint64(4<<20 + 50*100_000)
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, _, _ = p.srv.Snapshot(context.Background())
		if st.BytesUp == want && st.BytesDown == want || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st.BytesUp != want || st.BytesDown != want {
		t.Fatalf("server counted %d up, %d down; want %d", st.BytesUp, st.BytesDown, want)
	}
}

func itoa(p uint16) string { return strconv.Itoa(int(p)) }

// waitIdleData waits until the server pools n data connections of its one client.
func waitIdleData(t *testing.T, s *Server, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, cs, err := s.Snapshot(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) == 1 && cs[0].IdleData == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server pools %+v, want %d idle data connections", cs, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWrongTokenAndSilentConnections: a wrong token gets an Error frame
// with the auth code; connections that never log in count against the
// bound until they close or time out, and are released after.
func TestWrongTokenAndSilentConnections(t *testing.T) {
	p := startPair(t, 1, echoServer(t), func(sc *ServerConfig, cc *ClientConfig) {
		sc.HandshakeTimeout = 300 * time.Millisecond
		cc.Token = "wrong"
	})
	addr := p.srv.Addr()
	var silent []net.Conn
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		silent = append(silent, c)
	}
	// Each silent connection gets a challenge and is closed at the timeout.
	for _, c := range silent {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c)
		if len(b) != headerLen+1+NonceLen || b[0] != tChallenge {
			t.Fatalf("silent connection read %d bytes (%v), want one challenge then close", len(b), err)
		}
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.srv.hellos.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still counted as not logged in", p.srv.hellos.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	st, cs, err := p.srv.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.AuthFailures == 0 || st.Logins != 0 || len(cs) != 0 {
		t.Fatalf("wrong token: stats %+v, clients %+v", st, cs)
	}
	cst, _ := p.cli.Snapshot(context.Background())
	if !strings.Contains(cst.LastErr, "wrong client name or token") {
		t.Fatalf("client's last error %q does not say why", cst.LastErr)
	}
}
