package tlsconn_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-proxy/sluice/pkg/reactor"
	"github.com/sluice-proxy/sluice/pkg/relay"
	"github.com/sluice-proxy/sluice/pkg/sys"
	"github.com/sluice-proxy/sluice/pkg/tlsconn"
)

// testCert makes a self-signed certificate for "test.local".
func testCert(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test.local"},
		DNSNames: []string{"test.local"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// pair returns the test's end of a loopback connection and a non-blocking
// dup of the other end.
func pair(t testing.TB) (net.Conn, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	outer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { outer.Close() })
	in, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	raw, _ := in.(*net.TCPConn).SyscallConn()
	fd := -1
	var derr error
	raw.Control(func(s uintptr) { fd, derr = syscall.Dup(int(s)) })
	if derr != nil {
		t.Fatal(derr)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	return outer, fd
}

type env struct {
	r    *reactor.Reactor
	loop *reactor.Loop
	hs   *reactor.Pool
	pool *relay.Pool
}

func newEnv(t testing.TB) *env {
	r, err := reactor.New(reactor.Config{Loops: 1})
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	t.Cleanup(r.Stop)
	return &env{r: r, loop: r.Loops()[0], hs: reactor.NewPool(4, 16), pool: relay.PoolSet(relay.PoolConfig{}, 1)[0]}
}

// pump drives a Conn on the loop: it reads everything into a hash and
// writes send bytes of a pattern, then CloseWrite.
type pump struct {
	c       *tlsconn.Conn
	l       *reactor.Loop
	send    int
	sent    int
	closed  bool
	out     []byte
	buf     []byte
	h       [32]byte
	hash    interface{ Write([]byte) (int, error) }
	got     int
	done    chan error
	ended   bool
	readEOF bool
	sumFn   func() [32]byte
	// keyUpdateAt sends a KeyUpdate (not asking for the peer's: see docs/TLS.md, open bug) once this many
	// bytes are sent (0: never).
	keyUpdateAt int
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>11)
	}
	return b
}

func (p *pump) HandleEvent(uint32) { p.run() }

func (p *pump) finish(err error) {
	if !p.ended {
		p.ended = true
		p.c.Release()
		p.l.Close(p.c.Fd())
		p.done <- err
	}
}

func (p *pump) run() {
	if p.ended {
		return
	}
	for !p.readEOF {
		n, err := p.c.Read(p.buf)
		p.hash.Write(p.buf[:n])
		p.got += n
		if err == io.EOF {
			p.readEOF = true
			break
		}
		if errors.Is(err, tlsconn.ErrAgain) {
			break
		}
		if err != nil {
			p.finish(err)
			return
		}
	}
	if err := p.c.Flush(); err != nil && !errors.Is(err, tlsconn.ErrAgain) {
		p.finish(err)
		return
	}
	for p.sent < p.send && !p.c.Pending() {
		if p.keyUpdateAt > 0 && p.sent >= p.keyUpdateAt {
			p.keyUpdateAt = 0
			if err := p.c.KeyUpdate(false); err != nil && !errors.Is(err, tlsconn.ErrAgain) {
				p.finish(err)
				return
			}
			continue
		}
		chunk := p.out[p.sent%len(p.out):]
		chunk = chunk[:min(len(chunk), p.send-p.sent)]
		n, err := p.c.Write(chunk)
		p.sent += n
		if err != nil && !errors.Is(err, tlsconn.ErrAgain) {
			p.finish(err)
			return
		}
	}
	if p.sent == p.send && !p.closed {
		p.closed = true
		if err := p.c.CloseWrite(); err != nil && !errors.Is(err, tlsconn.ErrAgain) {
			p.finish(err)
			return
		}
	}
	if p.readEOF && p.closed && !p.c.Pending() {
		p.finish(nil)
	}
}

func newPump(c *tlsconn.Conn, l *reactor.Loop, send int) *pump {
	h := sha256.New()
	return &pump{c: c, l: l, send: send, out: pattern(1 << 16), buf: make([]byte, 40000), hash: h,
		sumFn: func() (s [32]byte) { copy(s[:], h.Sum(nil)); return }, done: make(chan error, 1)}
}

func sumPattern(n int) [32]byte {
	h := sha256.New()
	p := pattern(1 << 16)
	for n > 0 {
		k := min(n, len(p))
		h.Write(p[:k])
		n -= k
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// startPump runs the handshake and a pump on the loop.
func (e *env) startPump(t *testing.T, fd int, server bool, cfg *tls.Config, send int) (*pump, chan error) {
	hs := make(chan error, 1)
	res := make(chan *pump, 1)
	e.loop.Post(func() {
		done := func(c *tlsconn.Conn, err error) {
			if err != nil {
				e.loop.Close(fd)
				hs <- err
				return
			}
			c.UsePool(e.pool)
			p := newPump(c, e.loop, send)
			res <- p
			hs <- nil
			if err := e.loop.Register(fd, sys.EventIn|sys.EventOut|sys.EventRdHup|sys.EventEdge, p); err != nil {
				p.finish(err)
				return
			}
			p.run()
		}
		if server {
			tlsconn.Server(e.hs, e.loop, fd, cfg, 2*time.Second, done)
		} else {
			tlsconn.Client(e.hs, e.loop, fd, cfg, 2*time.Second, done)
		}
	})
	if err := <-hs; err != nil {
		return nil, hs
	}
	p := <-res
	return p, hs
}

// peerSide runs crypto/tls on the other end: it sends n bytes of the
// pattern and close_notify, and hashes what it reads until EOF.
func peerSide(tc *tls.Conn, n int, keyUpdate bool) (chan [32]byte, chan error) {
	sum := make(chan [32]byte, 1)
	errc := make(chan error, 2)
	go func() {
		h := sha256.New()
		_, err := io.Copy(h, tc)
		if err != nil {
			errc <- err
		}
		var s [32]byte
		copy(s[:], h.Sum(nil))
		sum <- s
	}()
	go func() {
		p := pattern(1 << 16)
		left := n
		for left > 0 {
			k := min(left, len(p))
			if _, err := tc.Write(p[:k]); err != nil {
				errc <- err
				return
			}
			left -= k
		}
		if err := tc.CloseWrite(); err != nil {
			errc <- err
		}
	}()
	return sum, errc
}

func TestByteExactBothWays(t *testing.T) {
	cert, roots := testCert(t)
	const n = 64 << 20
	for _, tc := range []struct {
		name   string
		server bool
		suite  uint16
	}{
		{"client", false, 0},
		{"server", true, 0},
		{"keyupdate", false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			outer, fd := pair(t)
			var peer *tls.Conn
			var cfg *tls.Config
			if tc.server {
				peer = tls.Client(outer, &tls.Config{RootCAs: roots, ServerName: "test.local"})
				cfg = &tls.Config{Certificates: []tls.Certificate{cert}}
			} else {
				peer = tls.Server(outer, &tls.Config{Certificates: []tls.Certificate{cert}})
				cfg = &tls.Config{RootCAs: roots, ServerName: "test.local"}
			}
			go peer.Handshake()
			p, hs := e.startPump(t, fd, tc.server, cfg, n)
			if p == nil {
				t.Fatalf("handshake: %v", <-hs)
			}
			if tc.suite == 1 {
				e.loop.Post(func() { p.keyUpdateAt = n / 3 })
			}
			sum, errc := peerSide(peer, n, false)
			select {
			case err := <-p.done:
				if err != nil {
					t.Fatalf("conn: %v", err)
				}
			case err := <-errc:
				t.Fatalf("peer: %v", err)
			case <-time.After(60 * time.Second):
				t.Fatal("timeout")
			}
			want := sumPattern(n)
			if got := <-sum; got != want {
				t.Fatalf("peer got sha256 %x, want %x", got, want)
			}
			if got := p.sumFn(); got != want || p.got != n {
				t.Fatalf("conn got %d bytes sha256 %x, want %d %x", p.got, got, n, want)
			}
		})
	}
}
