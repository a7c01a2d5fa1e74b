package test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRelayLargeBidirectional sends 256 MiB each way over one connection at
// the same time and checks both directions byte for byte (sha256).
func TestRelayLargeBidirectional(t *testing.T) {
	const size = 256 << 20
	hb := startHashBackend(t, "tcp", "127.0.0.1:0", 2*time.Minute)
	p := startSluice(t, "forward", "127.0.0.1:0", hb.upstream())

	c := p.dial(t)
	_ = c.SetDeadline(time.Now().Add(90 * time.Second))
	hdr := transferHeader{ID: 1, Up: size, Down: size}
	start := time.Now()
	client := transfer(c, hdr, false, nil)
	took := time.Since(start)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	server, err := hb.result(ctx, hdr.ID)
	if err != nil {
		t.Fatalf("%v (client side: %+v)", err, client.Err)
	}
	checkTransfer(t, "256MiB both ways", hdr, client, server)
	t.Logf("relayed %d MiB each way in %v", size>>20, took.Round(time.Millisecond))
}

// TestRelayConcurrentSlowReaders runs 64 connections of 8 MiB each way at
// once. One client in four and one backend in four read slowly, so sluice
// must hold back those directions without stalling the others.
func TestRelayConcurrentSlowReaders(t *testing.T) {
	const (
		conns = 64
		size  = 8 << 20
	)
	hb := startHashBackend(t, "tcp", "127.0.0.1:0", 2*time.Minute)
	p := startSluice(t, "forward", "127.0.0.1:0", hb.upstream())

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	deadline, _ := ctx.Deadline()
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("conn %d", i)
			hdr := transferHeader{ID: uint64(100 + i), Up: size, Down: size, SlowRead: i%4 == 2}
			slowClient := i%4 == 0
			c, err := p.tryDial()
			if err != nil {
				t.Errorf("%s: dial: %v", name, err)
				return
			}
			defer c.Close()
			_ = c.SetDeadline(deadline)
			client := transfer(c, hdr, slowClient, nil)
			server, err := hb.result(ctx, hdr.ID)
			if err != nil {
				t.Errorf("%s: %v (client side: %v)", name, err, client.Err)
				return
			}
			checkTransfer(t, name, hdr, client, server)
		}()
	}
	wg.Wait()
}

// ipv6Loopback reports whether [::1] can be listened on.
func ipv6Loopback() error {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return err
	}
	return ln.Close()
}

// TestRelayAddressFamilies relays 8 MiB each way through every address
// form sluice accepts: tcp:, bare HOST:PORT, tcp6:[::1] and unix: on either
// side.
func TestRelayAddressFamilies(t *testing.T) {
	const size = 8 << 20
	tests := []struct {
		name string
		// listen and backend may hold DIR, replaced by a fresh directory.
		listen                   string
		backendNet, backendAddr  string
		wantAddrPrefix           string // of the addr= sluice logs
		needIPv6                 bool
		wantAddrIsListenUnixPath bool
	}{
		{name: "tcp prefix", listen: "tcp:127.0.0.1:0", backendNet: "tcp", backendAddr: "127.0.0.1:0", wantAddrPrefix: "127.0.0.1:"},
		{name: "bare host port", listen: "127.0.0.1:0", backendNet: "tcp", backendAddr: "127.0.0.1:0", wantAddrPrefix: "127.0.0.1:"},
		{name: "ipv6", listen: "tcp6:[::1]:0", backendNet: "tcp6", backendAddr: "[::1]:0", wantAddrPrefix: "[::1]:", needIPv6: true},
		{name: "unix listen", listen: "unix:DIR/s.sock", backendNet: "tcp", backendAddr: "127.0.0.1:0", wantAddrIsListenUnixPath: true},
		{name: "unix upstream", listen: "127.0.0.1:0", backendNet: "unix", backendAddr: "DIR/b.sock", wantAddrPrefix: "127.0.0.1:"},
		{name: "unix both", listen: "unix:DIR/s.sock", backendNet: "unix", backendAddr: "DIR/b.sock", wantAddrIsListenUnixPath: true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.needIPv6 {
				if err := ipv6Loopback(); err != nil {
					t.Skipf("skipped: IPv6 loopback [::1] unavailable: %v", err)
				}
			}
			dir := shortTempDir(t)
			listen := strings.ReplaceAll(tt.listen, "DIR", dir)
			hb := startHashBackend(t, tt.backendNet, strings.ReplaceAll(tt.backendAddr, "DIR", dir), time.Minute)
			p := startSluice(t, "forward", listen, hb.upstream())
			if tt.wantAddrIsListenUnixPath {
				want := filepath.Join(dir, "s.sock")
				if p.addr != want || p.network != "unix" {
					t.Fatalf("listening addr=%q, want %q", p.addr, want)
				}
			} else if !strings.HasPrefix(p.addr, tt.wantAddrPrefix) || strings.HasSuffix(p.addr, ":0") {
				t.Fatalf("listening addr=%q, want %s<port> with the port resolved", p.addr, tt.wantAddrPrefix)
			}

			c := p.dial(t)
			_ = c.SetDeadline(time.Now().Add(time.Minute))
			hdr := transferHeader{ID: uint64(200 + i), Up: size, Down: size}
			client := transfer(c, hdr, false, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			server, err := hb.result(ctx, hdr.ID)
			if err != nil {
				t.Fatalf("%v (client side: %v)", err, client.Err)
			}
			checkTransfer(t, tt.name, hdr, client, server)
		})
	}
}
