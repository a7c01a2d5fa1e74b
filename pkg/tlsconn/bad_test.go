package tlsconn_test

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"
)

func TestHandshakeGarbageClient(t *testing.T) {
	cert, _ := testCert(t)
	e := newEnv(t)
	outer, fd := pair(t)
	go outer.Write([]byte("GET / HTTP/1.0\r\nHost: x\r\n\r\n"))
	p, hs := e.startPump(t, fd, true, &tls.Config{Certificates: []tls.Certificate{cert}}, 0)
	if p != nil {
		t.Fatal("handshake with a plain HTTP client succeeded")
	}
	_ = hs
}

func TestHandshakeTimeout(t *testing.T) {
	cert, _ := testCert(t)
	e := newEnv(t)
	_, fd := pair(t)
	start := time.Now()
	p, _ := e.startPump(t, fd, true, &tls.Config{Certificates: []tls.Certificate{cert}}, 0)
	if p != nil {
		t.Fatal("handshake with a silent client succeeded")
	}
	if d := time.Since(start); d < 1900*time.Millisecond || d > 10*time.Second {
		t.Fatalf("handshake gave up after %v, want about 2s", d)
	}
}

func TestTruncatedRecord(t *testing.T) {
	cert, roots := testCert(t)
	e := newEnv(t)
	outer, fd := pair(t)
	peer := tls.Server(outer, &tls.Config{Certificates: []tls.Certificate{cert}})
	go peer.Handshake()
	p, hs := e.startPump(t, fd, false, &tls.Config{RootCAs: roots, ServerName: "test.local"}, 0)
	if p == nil {
		t.Fatalf("handshake: %v", <-hs)
	}
	// Half a record on the raw socket, then FIN.
	outer.Write([]byte{23, 3, 3, 0, 100, 1, 2, 3, 4, 5})
	outer.(interface{ CloseWrite() error }).CloseWrite()
	select {
	case err := <-p.done:
		if err == nil || !strings.Contains(err.Error(), "close_notify") {
			t.Fatalf("truncated record: got %v, want a closed-without-close_notify error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("truncated record left the conn stuck")
	}
}

func TestForgedRecord(t *testing.T) {
	cert, roots := testCert(t)
	e := newEnv(t)
	outer, fd := pair(t)
	peer := tls.Server(outer, &tls.Config{Certificates: []tls.Certificate{cert}})
	go peer.Handshake()
	p, hs := e.startPump(t, fd, false, &tls.Config{RootCAs: roots, ServerName: "test.local"}, 0)
	if p == nil {
		t.Fatalf("handshake: %v", <-hs)
	}
	rec := []byte{23, 3, 3, 0, 40}
	rec = append(rec, make([]byte, 40)...)
	outer.Write(rec)
	select {
	case err := <-p.done:
		if err == nil || !strings.Contains(err.Error(), "authentication") {
			t.Fatalf("forged record: got %v, want an authentication error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("forged record left the conn stuck")
	}
}
