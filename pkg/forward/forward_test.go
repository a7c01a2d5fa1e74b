package forward

import (
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-proxy/sluice/pkg/endpoint"
	"github.com/sluice-proxy/sluice/pkg/reactor"
)

// echoServer counts connections and echoes their bytes.
type echoServer struct {
	ln       net.Listener
	accepted atomic.Int64
}

func startEcho(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echoServer{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.accepted.Add(1)
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return e
}

func (e *echoServer) addr(t *testing.T) endpoint.Addr {
	t.Helper()
	a, err := endpoint.Parse(e.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// deadAddr returns an address nothing listens on.
func deadAddr(t *testing.T) endpoint.Addr {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := endpoint.Parse(ln.Addr().String())
	ln.Close()
	return a
}

func startService(t *testing.T, cfg Config) *Service {
	t.Helper()
	r, err := reactor.New(reactor.Config{Loops: 2})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen.Network == "" {
		cfg.Listen, _ = endpoint.Parse("127.0.0.1:0")
	}
	s, err := New(context.Background(), r, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Drain(ctx)
		r.Stop()
	})
	return s
}

// ping makes one echo round trip through addr.
func ping(t *testing.T, addr string) error {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	_, err = io.ReadFull(c, buf)
	return err
}

func TestBalanceAndFailover(t *testing.T) {
	tests := []struct {
		name    string
		balance Balance
		dead    bool // a dead upstream first
		want    []int64
	}{
		{"round robin", RoundRobin, false, []int64{3, 3}},
		{"failover past a dead upstream", RoundRobin, true, []int64{6}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ups []endpoint.Addr
			var echoes []*echoServer
			if tt.dead {
				ups = append(ups, deadAddr(t))
			}
			for range tt.want {
				e := startEcho(t)
				echoes = append(echoes, e)
				ups = append(ups, e.addr(t))
			}
			s := startService(t, Config{Upstreams: ups, Balance: tt.balance})
			for range 6 {
				if err := ping(t, s.Addr()); err != nil {
					t.Fatal(err)
				}
			}
			for i, e := range echoes {
				if got := e.accepted.Load(); got != tt.want[i] {
					t.Errorf("upstream %d accepted %d, want %d", i, got, tt.want[i])
				}
			}
		})
	}
}

// TestLeastConns closes one of two live connections: the next two go to
// the emptier upstream first, then to the first of the tied ones, where
// round-robin would alternate.
func TestLeastConns(t *testing.T) {
	for _, tt := range []struct {
		balance Balance
		want    [2]int64
	}{{LeastConns, [2]int64{3, 1}}, {RoundRobin, [2]int64{2, 2}}} {
		t.Run(string(tt.balance), func(t *testing.T) {
			a, b := startEcho(t), startEcho(t)
			s := startService(t, Config{Upstreams: []endpoint.Addr{a.addr(t), b.addr(t)}, Balance: tt.balance})
			hold := func() net.Conn {
				c, err := net.Dial("tcp", s.Addr())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				buf := []byte("ping")
				if _, err := c.Write(buf); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					t.Fatal(err)
				}
				return c
			}
			first := hold()
			hold()
			first.Close()
			for deadline := time.Now().Add(5 * time.Second); s.Active() != 1; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("%d live connections, want 1", s.Active())
				}
			}
			hold()
			hold()
			if got := [2]int64{a.accepted.Load(), b.accepted.Load()}; got != tt.want {
				t.Errorf("upstreams accepted %v, want %v", got, tt.want)
			}
		})
	}
}

func TestUpdateKeepsListenerAndConnections(t *testing.T) {
	a, b := startEcho(t), startEcho(t)
	s := startService(t, Config{Upstream: a.addr(t)})
	held, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	// One round trip first: the connection has then reached upstream a.
	_ = held.SetDeadline(time.Now().Add(5 * time.Second))
	buf := []byte("held")
	if _, err := held.Write(buf); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(held, buf); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(Config{Upstreams: []endpoint.Addr{b.addr(t)}, MaxConns: 5}); err != nil {
		t.Fatal(err)
	}
	if err := ping(t, s.Addr()); err != nil {
		t.Fatal(err)
	}
	if a.accepted.Load() != 1 || b.accepted.Load() != 1 {
		t.Errorf("after Update: old upstream accepted %d, new %d; want 1 and 1", a.accepted.Load(), b.accepted.Load())
	}
	// The connection made before the update still goes to the old one.
	if _, err := held.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(held, buf); err != nil || string(buf) != "held" {
		t.Fatalf("held connection: %q, %v", buf, err)
	}
	if err := s.Update(Config{}); err == nil {
		t.Error("Update with no upstream succeeded")
	}
	// The ping's connection ends on the loop a moment after the client
	// closed it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := s.Snapshot(context.Background())
		if err == nil && st.Accepted == 2 && st.Relayed == 1 && st.BytesUp == 12 && st.BytesDown == 12 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Snapshot = %+v, %v; want 2 accepted, 1 relayed, 12 bytes each way (8 of them on the live connection)", st, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestAddRemoveListener(t *testing.T) {
	e := startEcho(t)
	s := startService(t, Config{Upstream: e.addr(t)})
	extra, _ := endpoint.Parse("127.0.0.2:0")
	got, err := s.AddListener(context.Background(), extra)
	if err != nil {
		t.Fatal(err)
	}
	if err := ping(t, got); err != nil {
		t.Fatalf("through the added listener: %v", err)
	}
	if len(s.Addrs()) != 2 {
		t.Errorf("Addrs = %q, want 2", s.Addrs())
	}
	if _, err := s.AddListener(context.Background(), extra); err == nil {
		t.Error("listening twice on the same address succeeded")
	}
	if !s.RemoveListener(extra) {
		t.Fatal("RemoveListener found nothing")
	}
	if c, err := net.DialTimeout("tcp", got, time.Second); err == nil {
		c.Close()
		t.Error("removed listener still accepts")
	}
	if err := ping(t, s.Addr()); err != nil {
		t.Fatalf("the first listener after a removal: %v", err)
	}
}
