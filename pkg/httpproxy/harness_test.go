package httpproxy

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/sluice-proxy/sluice/pkg/endpoint"
	"github.com/sluice-proxy/sluice/pkg/reactor"
	"github.com/sluice-proxy/sluice/pkg/relay"
)

// What the package's tests share: an origin made of raw sockets, a proxy
// in this process, and allocation counting.

// smallResponse is a 100-byte response with extra header lines.
func smallResponse(fields string) []byte {
	return []byte("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n" + fields + "Content-Length: 100\r\n\r\n" + string(bytes.Repeat([]byte("x"), 100)))
}

// startRawOrigin serves every request (a head without a body) with resp,
// on keep-alive connections, and counts the requests in asked (if not
// nil). It returns the origin's address.
func startRawOrigin(t testing.TB, resp []byte, asked *atomic.Int64) string {
	t.Helper()
	return serveConns(t, func(c net.Conn) { serveRaw(c, resp, asked) })
}

// serveConns listens on 127.0.0.1 until the test ends and runs handle on
// each accepted connection in a goroutine of its own, closing the
// connection when handle returns. It returns the address.
func serveConns(t testing.TB, handle func(net.Conn)) string {
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
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

func serveRaw(c net.Conn, resp []byte, asked *atomic.Int64) {
	r := bufio.NewReader(c)
	for {
		for {
			line, err := r.ReadSlice('\n')
			if err != nil {
				return
			}
			if len(line) <= 2 {
				break
			}
		}
		if asked != nil {
			asked.Add(1)
		}
		if _, err := c.Write(resp); err != nil {
			return
		}
	}
}

// testProxy is a running proxy of this process on 127.0.0.1, one loop.
type testProxy struct {
	s     *Service
	r     *reactor.Reactor
	pools []*relay.Pool
}

// startProxy starts a one-loop proxy with cfg (Listen and Pools filled
// in when empty); it stops at the end of the test.
func startProxy(t testing.TB, cfg Config) *testProxy {
	t.Helper()
	r, err := reactor.New(reactor.Config{Loops: 1})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen.Network == "" {
		cfg.Listen = endpoint.Addr{Network: endpoint.TCP, Host: "127.0.0.1"}
	}
	if cfg.Pools == nil {
		cfg.Pools = relay.PoolSet(relay.PoolConfig{}, 1)
	}
	s, err := New(context.Background(), r, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	t.Cleanup(r.Stop)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	return &testProxy{s: s, r: r, pools: cfg.Pools}
}

// counters reads the relay pool's counters on its loop.
func (p *testProxy) counters() relay.Counters {
	done := make(chan relay.Counters)
	p.r.Loops()[0].Post(func() { done <- p.pools[0].Counters() })
	return <-done
}

// allocsPer runs f 100 times to warm up, then n times, and returns the
// heap allocations and bytes per run (of the whole process).
func allocsPer(n int, f func()) (allocs, bytes float64) {
	for range 100 {
		f()
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		f()
	}
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / float64(n), float64(after.TotalAlloc-before.TotalAlloc) / float64(n)
}
