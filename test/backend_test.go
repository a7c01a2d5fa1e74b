package test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// backend is a listener in the test process that runs a handler for every
// accepted connection, each in its own goroutine. The backend closes a
// connection when its handler returns, and closes the listener and every
// open connection in t.Cleanup.
type backend struct {
	ln       net.Listener
	handle   func(net.Conn)
	accepted atomic.Int64 // connections accepted so far

	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// startBackend listens on network/address ("tcp", "127.0.0.1:0"; "tcp6",
// "[::1]:0"; "unix", "/path") and serves connections with handle.
func startBackend(t testing.TB, network, address string, handle func(net.Conn)) *backend {
	t.Helper()
	ln, err := net.Listen(network, address)
	if err != nil {
		t.Fatalf("backend listen %s %s: %v", network, address, err)
	}
	b := &backend{ln: ln, handle: handle, conns: make(map[net.Conn]struct{})}
	b.wg.Add(1)
	go b.acceptLoop()
	t.Cleanup(b.close)
	return b
}

func (b *backend) acceptLoop() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: back off and go on, like a real server.
			time.Sleep(5 * time.Millisecond)
			continue
		}
		b.accepted.Add(1)
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			c.Close()
			return
		}
		b.conns[c] = struct{}{}
		b.wg.Add(1)
		b.mu.Unlock()
		go func() {
			defer b.wg.Done()
			defer func() {
				b.mu.Lock()
				delete(b.conns, c)
				b.mu.Unlock()
				c.Close()
			}()
			b.handle(c)
		}()
	}
}

// close stops the backend: closes the listener and every open connection
// and waits for the handlers to return.
func (b *backend) close() {
	b.mu.Lock()
	b.closed = true
	b.ln.Close()
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// upstream returns the backend's address in sluice's address syntax:
// tcp:HOST:PORT, tcp6:[ADDR]:PORT or unix:/path.
func (b *backend) upstream() string {
	switch a := b.ln.Addr().(type) {
	case *net.TCPAddr:
		if a.IP.To4() == nil {
			return "tcp6:" + a.String()
		}
		return "tcp:" + a.String()
	case *net.UnixAddr:
		return "unix:" + a.Name
	default:
		panic(fmt.Sprintf("backend: unexpected address type %T", a))
	}
}

// waitAccepted waits until the backend has accepted at least n connections.
func (b *backend) waitAccepted(ctx context.Context, n int64) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if got := b.accepted.Load(); got >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("backend accepted %d connections, want %d: %w", b.accepted.Load(), n, ctx.Err())
		case <-tick.C:
		}
	}
}

// echo is a backend handler that sends back everything it reads.
func echo(c net.Conn) { _, _ = io.Copy(c, c) }

// startEcho starts an echo backend on 127.0.0.1.
func startEcho(t testing.TB) *backend {
	t.Helper()
	return startBackend(t, "tcp", "127.0.0.1:0", echo)
}

// headerLen is the size of an encoded transferHeader.
const headerLen = 25

// transferHeader is what a client of the hash backend sends first. It says
// which pseudo-random streams the two sides exchange and how much of them.
type transferHeader struct {
	ID       uint64 // picks the streams; unique per connection in a test
	Up       int64  // bytes the client sends after the header
	Down     int64  // bytes the backend sends back
	SlowRead bool   // the backend reads slowly (see slowChunk)
}

func (h transferHeader) marshal() []byte {
	b := make([]byte, headerLen)
	binary.BigEndian.PutUint64(b[0:], h.ID)
	binary.BigEndian.PutUint64(b[8:], uint64(h.Up))
	binary.BigEndian.PutUint64(b[16:], uint64(h.Down))
	if h.SlowRead {
		b[24] = 1
	}
	return b
}

func parseHeader(b []byte) transferHeader {
	return transferHeader{
		ID:       binary.BigEndian.Uint64(b[0:]),
		Up:       int64(binary.BigEndian.Uint64(b[8:])),
		Down:     int64(binary.BigEndian.Uint64(b[16:])),
		SlowRead: b[24] == 1,
	}
}

// hashBackend is a sink and source: for each connection it reads a
// transferHeader, then at the same time hashes the Up bytes it receives and
// sends Down bytes of a seeded random stream, hashing what it sends. The
// outcome of every connection that sent a whole header is kept by ID.
// Connections that close before a whole header are ignored.
type hashBackend struct {
	*backend
	mu      sync.Mutex
	results map[uint64]sideResult
	changed chan struct{} // closed and replaced when a result arrives
}

// startHashBackend starts a hash backend on network/address. Every
// connection must finish within timeout.
func startHashBackend(t testing.TB, network, address string, timeout time.Duration) *hashBackend {
	t.Helper()
	hb := &hashBackend{results: make(map[uint64]sideResult), changed: make(chan struct{})}
	hb.backend = startBackend(t, network, address, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(timeout))
		h := make([]byte, headerLen)
		if _, err := io.ReadFull(c, h); err != nil {
			return
		}
		hdr := parseHeader(h)
		res := exchange(c, hdr.ID, dirDown, hdr.Down, hdr.Up, hdr.SlowRead, nil)
		hb.mu.Lock()
		hb.results[hdr.ID] = res
		close(hb.changed)
		hb.changed = make(chan struct{})
		hb.mu.Unlock()
	})
	return hb
}

// result waits for the backend's side of transfer id.
func (hb *hashBackend) result(ctx context.Context, id uint64) (sideResult, error) {
	for {
		hb.mu.Lock()
		r, ok := hb.results[id]
		changed := hb.changed
		hb.mu.Unlock()
		if ok {
			return r, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return sideResult{}, fmt.Errorf("backend side of transfer %d: %w", id, ctx.Err())
		}
	}
}

// transfer runs the client side of one hash-backend transfer over c: it
// sends hdr, then hdr.Up bytes while it reads hdr.Down bytes. slowRead makes
// the client a slow reader; p, if not nil, pauses both directions part way.
// The caller sets deadlines on c.
func transfer(c net.Conn, hdr transferHeader, slowRead bool, p *pause) sideResult {
	if _, err := c.Write(hdr.marshal()); err != nil {
		if p != nil {
			p.reached.Add(-2)
		}
		return sideResult{Err: fmt.Errorf("write header: %w", err)}
	}
	return exchange(c, hdr.ID, dirUp, hdr.Up, hdr.Down, slowRead, p)
}

// checkTransfer compares both sides of transfer hdr: what each side sent
// must be what the other received, byte count and sha256.
func checkTransfer(t testing.TB, name string, hdr transferHeader, client, server sideResult) {
	t.Helper()
	if client.Err != nil {
		t.Errorf("%s: client: %v", name, client.Err)
	}
	if server.Err != nil {
		t.Errorf("%s: backend: %v", name, server.Err)
	}
	if client.SentN != hdr.Up {
		t.Errorf("%s: client sent %d bytes, want %d", name, client.SentN, hdr.Up)
	}
	if server.SentN != hdr.Down {
		t.Errorf("%s: backend sent %d bytes, want %d", name, server.SentN, hdr.Down)
	}
	if server.RecvN != client.SentN || server.RecvSum != client.SentSum {
		t.Errorf("%s: client->backend: backend got %d bytes sha256 %x, want %d bytes sha256 %x",
			name, server.RecvN, server.RecvSum[:8], client.SentN, client.SentSum[:8])
	}
	if client.RecvN != server.SentN || client.RecvSum != server.SentSum {
		t.Errorf("%s: backend->client: client got %d bytes sha256 %x, want %d bytes sha256 %x",
			name, client.RecvN, client.RecvSum[:8], server.SentN, server.SentSum[:8])
	}
}
