package endpoint_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/mdlayher/vsock"

	"github.com/sluice-proxy/sluice/pkg/endpoint"
	"github.com/sluice-proxy/sluice/pkg/reactor"
	"github.com/sluice-proxy/sluice/pkg/relay"
	"github.com/sluice-proxy/sluice/pkg/sys"
)

// boardOnly skips tests that open AF_VSOCK sockets anywhere but inside a
// QEMU board guest (make board-test sets SLUICE_BOARD=1 there): the build
// host has no vsock loopback, and under qemu-user a socket would be the
// host kernel's. Inside a board, vsock must work.
func boardOnly(t *testing.T) {
	t.Helper()
	if os.Getenv("SLUICE_BOARD") != "1" {
		t.Skip("opens AF_VSOCK sockets: runs only inside a board guest (make board-test), where SLUICE_BOARD=1")
	}
	if err := sys.VsockSupported(); err != nil {
		t.Fatalf("SLUICE_BOARD=1 but: %v (are the vsock modules loaded?)", err)
	}
}

// TestIntegrationVsockListenDialRelay drives endpoint.Listen and
// endpoint.Dial on AF_VSOCK through the vsock_loopback transport, with
// mdlayher/vsock (Go's netpoller, not sluice's reactor) as the independent
// peer on both ends, and relays between them:
//
//	oracle client -> Listen(vsock:any:0) ~relay~ Dial(vsock:1:P) -> oracle server
//
// Bytes must arrive byte-exact both ways, and the client's FIN must reach
// the server while the reply still flows back (half-close). It runs once
// with splice and once on the copy path.
func TestIntegrationVsockListenDialRelay(t *testing.T) {
	boardOnly(t)
	for _, tt := range []struct {
		name     string
		maxPipes int
	}{{"splice", 0}, {"copy", -1}} {
		t.Run(tt.name, func(t *testing.T) { vsockRelayRoundTrip(t, tt.maxPipes) })
	}
}

func vsockRelayRoundTrip(t *testing.T, maxPipes int) {
	r, err := reactor.New(reactor.Config{Loops: 1})
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	defer r.Stop()
	pool := relay.PoolSet(relay.PoolConfig{MaxPipes: maxPipes}, 1)[0]

	server, err := vsock.ListenContextID(vsock.Local, 0, nil)
	if err != nil {
		t.Fatalf("oracle listen: %v", err)
	}
	defer server.Close()
	upstream := &sys.SockaddrVM{CID: vsock.Local, Port: server.Addr().(*vsock.Addr).Port}

	addr, err := endpoint.Parse("vsock:any:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := endpoint.Listen(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	bound, err := endpoint.Parse(ln.Addr())
	if err != nil {
		t.Fatalf("listener address %q: %v", ln.Addr(), err)
	}
	if bound.Network != endpoint.Vsock || bound.Port == 0 {
		t.Fatalf("listener address %q: want vsock with a port picked by the kernel", ln.Addr())
	}

	relayDone := make(chan error, 1)
	err = ln.Serve(r.Loops(), func(l *reactor.Loop, client int) {
		if err := l.Register(client, endpoint.ConnEvents, nil); err != nil {
			l.Close(client)
			relayDone <- err
			return
		}
		endpoint.Dial(l, upstream, 5*time.Second, func(fd int, err error) {
			if err != nil {
				l.Close(client)
				relayDone <- err
				return
			}
			relay.Start(l, pool, client, fd, relay.Options{Done: func(_ *relay.Relay, err error) { relayDone <- err }})
		})
	})
	if err != nil {
		t.Fatal(err)
	}

	up := make([]byte, 8<<20)
	down := make([]byte, 3<<20+17)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range up {
		up[i] = byte(rng.Uint32())
	}
	for i := range down {
		down[i] = byte(rng.Uint32())
	}

	// The server reads to EOF (the client's FIN, passed on by the relay),
	// then answers with the digest of what it got and the down stream.
	serverErr := make(chan error, 1)
	go func() {
		c, err := server.Accept()
		if err != nil {
			serverErr <- err
			return
		}
		defer c.Close()
		h := sha256.New()
		if _, err := io.Copy(h, c); err != nil {
			serverErr <- err
			return
		}
		if _, err := c.Write(h.Sum(nil)); err != nil {
			serverErr <- err
			return
		}
		_, err = c.Write(down)
		serverErr <- err
	}()

	c, err := vsock.Dial(vsock.Local, bound.Port, nil)
	if err != nil {
		t.Fatalf("oracle dial %s: %v", ln.Addr(), err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := c.Write(up); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatalf("close write: %v", err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read reply: %v", err)
	}
	if err := <-serverErr; err != nil {
		t.Fatalf("oracle server: %v", err)
	}
	want := sha256.Sum256(up)
	if len(got) < len(want) || !bytes.Equal(got[:len(want)], want[:]) {
		t.Fatalf("server saw other bytes than the %d sent (digest mismatch)", len(up))
	}
	if gd, wd := sha256.Sum256(got[len(want):]), sha256.Sum256(down); gd != wd {
		t.Fatalf("client got %d bytes back, want %d byte-exact", len(got)-len(want), len(down))
	}
	select {
	case err := <-relayDone:
		if err != nil {
			t.Fatalf("relay ended with %v, want a clean end", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("relay did not end after both sides closed")
	}
}
