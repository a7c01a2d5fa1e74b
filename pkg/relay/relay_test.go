package relay_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-proxy/sluice/pkg/endpoint"
	"github.com/sluice-proxy/sluice/pkg/reactor"
	"github.com/sluice-proxy/sluice/pkg/relay"
)

// harness runs one loop and starts relays between pairs of loopback TCP
// connections: the test holds the outer ends, the relay the inner ends.
type harness struct {
	t    testing.TB
	r    *reactor.Reactor
	loop *reactor.Loop
	pool *relay.Pool
	done chan error
}

func newHarness(t testing.TB, cfg relay.PoolConfig) *harness {
	t.Helper()
	r, err := reactor.New(reactor.Config{Loops: 1})
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	t.Cleanup(r.Stop)
	return &harness{t: t, r: r, loop: r.Loops()[0], pool: relay.PoolSet(cfg, 1)[0], done: make(chan error, 128)}
}

// innerPair returns the test's end of a loopback TCP connection and a
// non-blocking dup of the other end for the relay.
func innerPair(t testing.TB) (net.Conn, int) {
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
	raw, err := in.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
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

// start relays between two new connections and returns their outer ends.
func (h *harness) start(opts relay.Options) (a, b *net.TCPConn) {
	h.t.Helper()
	ca, fa := innerPair(h.t)
	cb, fb := innerPair(h.t)
	opts.Done = func(_ *relay.Relay, err error) { h.done <- err }
	h.loop.Post(func() {
		if err := h.loop.Register(fa, endpoint.ConnEvents, nil); err != nil {
			h.t.Error(err)
		}
		if err := h.loop.Register(fb, endpoint.ConnEvents, nil); err != nil {
			h.t.Error(err)
		}
		relay.Start(h.loop, h.pool, fa, fb, opts)
	})
	return ca.(*net.TCPConn), cb.(*net.TCPConn)
}

// wait returns the reason the next relay ended with.
func (h *harness) wait() error {
	h.t.Helper()
	select {
	case err := <-h.done:
		return err
	case <-time.After(10 * time.Second):
		h.t.Fatal("relay did not end")
		return nil
	}
}

// send writes n seeded random bytes to c, closes its write side and returns
// their sha256.
func send(c *net.TCPConn, seed uint64, n int64) ([32]byte, error) {
	h := sha256.New()
	src := io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{byte(seed)}), n), h)
	if _, err := io.Copy(c, src); err != nil {
		return [32]byte{}, err
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, c.CloseWrite()
}

// receive reads c to EOF, sleeping between reads when slow, and returns the
// sha256 and length of what it read.
func receive(c *net.TCPConn, slow bool) ([32]byte, int64, error) {
	h := sha256.New()
	var n int64
	buf := make([]byte, 32<<10)
	for {
		if slow {
			time.Sleep(time.Millisecond)
			buf = buf[:4096]
		}
		m, err := c.Read(buf)
		h.Write(buf[:m])
		n += int64(m)
		if err == io.EOF {
			var sum [32]byte
			copy(sum[:], h.Sum(nil))
			return sum, n, nil
		}
		if err != nil {
			return [32]byte{}, n, err
		}
	}
}

// exchange sends size bytes each way at once and checks they arrive intact.
func exchange(t *testing.T, a, b *net.TCPConn, size int64, slow bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	a.SetDeadline(deadline)
	b.SetDeadline(deadline)
	var wg sync.WaitGroup
	// Each field is written by one goroutine only: the sender's and the
	// receiver's errors apart (one err written by both was a data race).
	type result struct {
		sent, got        [32]byte
		n                int64
		sendErr, recvErr error
	}
	var ab, ba result
	wg.Add(4)
	go func() { defer wg.Done(); ab.sent, ab.sendErr = send(a, 1, size) }()
	go func() { defer wg.Done(); ba.sent, ba.sendErr = send(b, 2, size) }()
	go func() { defer wg.Done(); ab.got, ab.n, ab.recvErr = receive(b, slow) }()
	go func() { defer wg.Done(); ba.got, ba.n, ba.recvErr = receive(a, false) }()
	wg.Wait()
	for name, r := range map[string]result{"a->b": ab, "b->a": ba} {
		if err := errors.Join(r.sendErr, r.recvErr); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if r.n != size || r.sent != r.got {
			t.Errorf("%s: got %d bytes sha256 %x, want %d bytes sha256 %x", name, r.n, r.got[:8], size, r.sent[:8])
		}
	}
}

func TestRelayByteExact(t *testing.T) {
	tests := []struct {
		name string
		cfg  relay.PoolConfig
		size int64
		slow bool
	}{
		{"splice", relay.PoolConfig{}, 16 << 20, false},
		{"splice small pipes", relay.PoolConfig{PipeSize: 4096}, 4 << 20, false},
		{"copy path", relay.PoolConfig{MaxPipes: -1}, 16 << 20, false},
		{"copy path small buffers", relay.PoolConfig{MaxPipes: -1, BufSize: 1000}, 2 << 20, false},
		{"slow reader", relay.PoolConfig{}, 2 << 20, true},
		{"empty", relay.PoolConfig{}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.cfg)
			a, b := h.start(relay.Options{})
			exchange(t, a, b, tt.size, tt.slow)
			if err := h.wait(); err != nil {
				t.Errorf("relay ended with %v, want a clean end", err)
			}
		})
	}
}

// TestRelayPipeBudget runs more concurrent relays than there are pipes: the
// ones without a pipe must copy, and every byte must still arrive.
func TestRelayPipeBudget(t *testing.T) {
	h := newHarness(t, relay.PoolConfig{MaxPipes: 2})
	var wg sync.WaitGroup
	for range 6 {
		a, b := h.start(relay.Options{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			exchange(t, a, b, 4<<20, false)
		}()
	}
	wg.Wait()
	for range 6 {
		if err := h.wait(); err != nil {
			t.Errorf("relay ended with %v", err)
		}
	}
}

func TestRelayHalfClose(t *testing.T) {
	h := newHarness(t, relay.PoolConfig{})
	a, b := h.start(relay.Options{})
	a.SetDeadline(time.Now().Add(10 * time.Second))
	b.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := a.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	a.CloseWrite()
	got, err := io.ReadAll(b)
	if err != nil || string(got) != "request" {
		t.Fatalf("upstream read %q, %v; want \"request\" then EOF", got, err)
	}
	// The other direction still flows after the first FIN.
	resp := bytes.Repeat([]byte("response"), 100000)
	if _, err := b.Write(resp); err != nil {
		t.Fatalf("write after half-close: %v", err)
	}
	b.CloseWrite()
	got, err = io.ReadAll(a)
	if err != nil || !bytes.Equal(got, resp) {
		t.Fatalf("client read %d bytes, %v; want %d bytes then EOF", len(got), err, len(resp))
	}
	if err := h.wait(); err != nil {
		t.Errorf("relay ended with %v, want a clean end", err)
	}
}

func TestRelayResetPropagates(t *testing.T) {
	h := newHarness(t, relay.PoolConfig{})
	a, b := h.start(relay.Options{})
	b.SetLinger(0)
	b.Close()
	a.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := a.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read after upstream reset: %v, want ECONNRESET", err)
	}
	if err := h.wait(); err == nil {
		t.Error("relay ended cleanly, want the reset as its reason")
	}
}

func TestRelayIdleTimeout(t *testing.T) {
	h := newHarness(t, relay.PoolConfig{})
	a, b := h.start(relay.Options{IdleTimeout: 300 * time.Millisecond})
	// Activity keeps it open past the timeout.
	for range 5 {
		if _, err := a.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		b.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.ReadFull(b, make([]byte, 1)); err != nil {
			t.Fatalf("relay closed while active: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := h.wait(); !errors.Is(err, relay.ErrIdleTimeout) {
		t.Fatalf("relay ended with %v, want %v", err, relay.ErrIdleTimeout)
	}
	a.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := a.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("client read after idle timeout: %v, want EOF", err)
	}
}

// TestPoolKnobs changes pipe and buffer sizes between relays, as the tuner
// does, and checks every byte is still delivered and counted once.
func TestPoolKnobs(t *testing.T) {
	h := newHarness(t, relay.PoolConfig{})
	const size = 4 << 20
	for _, knobs := range []struct{ pipe, buf, sock int }{{16 << 10, 4 << 10, 0}, {1 << 20, 64 << 10, 256 << 10}, {64 << 10, 1 << 10, 0}} {
		h.loop.Post(func() {
			h.pool.SetPipeSize(knobs.pipe)
			h.pool.SetBufSize(knobs.buf)
			h.pool.SetSockBuf(knobs.sock)
		})
		a, b := h.start(relay.Options{})
		exchange(t, a, b, size, false)
		if err := h.wait(); err != nil {
			t.Fatalf("pipe %d buf %d: relay ended with %v", knobs.pipe, knobs.buf, err)
		}
	}
	got := make(chan [4]uint64)
	counts := make(chan [2]relay.Counters)
	h.loop.Post(func() {
		c := h.pool.Counters()
		got <- [4]uint64{c.SplicedBytes, c.CopiedBytes, uint64(h.pool.PipeSize()), uint64(h.pool.BufSize())}
		h.pool.NextInterval()
		counts <- [2]relay.Counters{c, h.pool.Counters()}
	})
	m := <-got
	c := <-counts
	if c[0].SplicedFlows != 6 || c[0].CopiedFlows != 6 || c[0].SplicedChunks == 0 || c[0].CopiedChunks == 0 {
		t.Errorf("counters %+v: want 6 flows (3 relays, 2 directions) on each path and chunks on both", c[0])
	}
	if c[1].SplicedFlows != 0 || c[1].CopiedFlows != 0 || c[1].SplicedBytes != c[0].SplicedBytes {
		t.Errorf("after NextInterval %+v: want flows reset and byte totals kept", c[1])
	}
	if m[0]+m[1] != 3*2*size {
		t.Errorf("pool counted %d spliced + %d copied bytes, want %d in all", m[0], m[1], 3*2*size)
	}
	if m[0] == 0 || m[1] == 0 {
		t.Errorf("spliced %d, copied %d: want both paths used (bulk splices, the first read copies)", m[0], m[1])
	}
	if m[2] != 64<<10 || m[3] != 1<<10 {
		t.Errorf("pool sizes %d/%d, want the last ones set, 65536/1024", m[2], m[3])
	}
}
