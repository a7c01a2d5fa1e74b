package tlsconn

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/sluice-proxy/sluice/pkg/reactor"
	"github.com/sluice-proxy/sluice/pkg/sys"
)

// DefaultTimeout is the handshake timeout when zero is given.
const DefaultTimeout = 10 * time.Second

// Client starts a TLS client handshake on fd (a connected non-blocking
// socket of loop l) in pool p and calls done on l with the result; see the
// package doc for who owns fd. cfg is cloned; its ServerName must be set
// unless InsecureSkipVerify is.
func Client(p *reactor.Pool, l *reactor.Loop, fd int, cfg *tls.Config, timeout time.Duration, done func(*Conn, error)) {
	start(p, l, fd, cfg, timeout, false, done)
}

// Server is [Client] for the server side: cfg must hold certificates (or
// GetCertificate / GetConfigForClient).
func Server(p *reactor.Pool, l *reactor.Loop, fd int, cfg *tls.Config, timeout time.Duration, done func(*Conn, error)) {
	start(p, l, fd, cfg, timeout, true, done)
}

func start(p *reactor.Pool, l *reactor.Loop, fd int, cfg *tls.Config, timeout time.Duration, server bool, done func(*Conn, error)) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	err := p.Submit(l, func() func() {
		c, err := handshake(fd, cfg, timeout, server)
		return func() {
			if c != nil {
				c.loop = l
			}
			done(c, err)
		}
	})
	if err != nil {
		l.Post(func() { done(nil, fmt.Errorf("tls handshake: %w", err)) })
	}
}

// keyLog catches the traffic secrets crypto/tls logs for one connection.
type keyLog struct {
	mu             sync.Mutex
	client, server []byte
}

func (k *keyLog) Write(line []byte) (int, error) {
	f := bytes.Fields(line)
	if len(f) != 3 {
		return len(line), nil
	}
	secret, err := hex.DecodeString(string(f[2]))
	if err != nil {
		return len(line), nil
	}
	k.mu.Lock()
	switch string(f[0]) {
	case "CLIENT_TRAFFIC_SECRET_0":
		k.client = secret
	case "SERVER_TRAFFIC_SECRET_0":
		k.server = secret
	}
	k.mu.Unlock()
	return len(line), nil
}

// recordReader reads no byte past the end of the current TLS record, so
// crypto/tls keeps nothing buffered when the handshake ends.
type recordReader struct {
	net.Conn
	hdr  [5]byte
	nhdr int // header bytes seen of the current record
	left int // body bytes left of the current record
}

func (r *recordReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if r.nhdr < 5 {
		p = p[:min(len(p), 5-r.nhdr)]
		n, err := r.Conn.Read(p)
		copy(r.hdr[r.nhdr:], p[:n])
		r.nhdr += n
		if r.nhdr == 5 {
			r.left = int(r.hdr[3])<<8 | int(r.hdr[4])
			if r.left == 0 {
				r.nhdr = 0
			}
		}
		return n, err
	}
	n, err := r.Conn.Read(p[:min(len(p), r.left)])
	r.left -= n
	if r.left == 0 {
		r.nhdr = 0
	}
	return n, err
}

func handshake(fd int, cfg *tls.Config, timeout time.Duration, server bool) (*Conn, error) {
	dup, err := sys.Dup(fd)
	if err != nil {
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	f := os.NewFile(uintptr(dup), "tls")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	defer nc.Close()
	kl := &keyLog{}
	cfg = cfg.Clone()
	cfg.KeyLogWriter = kl
	cfg.MinVersion = tls.VersionTLS13
	if server {
		cfg.SessionTicketsDisabled = true
	}
	rr := &recordReader{Conn: nc}
	var tc *tls.Conn
	if server {
		tc = tls.Server(rr, cfg)
	} else {
		tc = tls.Client(rr, cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_ = nc.SetDeadline(time.Now().Add(timeout))
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	st := tc.ConnectionState()
	s, ok := suiteFor(st.CipherSuite)
	kl.mu.Lock()
	cs, ss := kl.client, kl.server
	kl.mu.Unlock()
	if st.Version != tls.VersionTLS13 || !ok || cs == nil || ss == nil {
		return nil, fmt.Errorf("tls handshake: %w", errUnsupported)
	}
	c := &Conn{fd: fd, state: st}
	in, out := ss, cs
	if server {
		in, out = cs, ss
	}
	if err := c.in.setSecret(s, in); err != nil {
		return nil, fmt.Errorf("tls keys: %w", err)
	}
	if err := c.out.setSecret(s, out); err != nil {
		return nil, fmt.Errorf("tls keys: %w", err)
	}
	return c, nil
}
