package autotune

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/sluice-proxy/sluice/pkg/endpoint"
	"github.com/sluice-proxy/sluice/pkg/forward"
	"github.com/sluice-proxy/sluice/pkg/reactor"
	"github.com/sluice-proxy/sluice/pkg/relay"
	"github.com/sluice-proxy/sluice/pkg/telemetry"
	"github.com/sluice-proxy/sluice/pkg/tune"
)

// TestTunerFollowsTraffic pushes bulk traffic through a real forward and
// checks the tuner steps while bytes move, applies its knobs, retires
// loops and stops its timer once traffic ends, and wakes again on Kick.
func TestTunerFollowsTraffic(t *testing.T) {
	r, err := reactor.New(reactor.Config{Loops: 2})
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	defer r.Stop()
	pools := relay.PoolSet(relay.PoolConfig{}, 2)

	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	go func() {
		for {
			c, err := backend.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	listen, _ := endpoint.Parse("127.0.0.1:0")
	up, _ := endpoint.Parse(backend.Addr().String())

	tel, err := telemetry.Open(telemetry.Config{ProcOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Close()
	var mu sync.Mutex
	var loopsSet []int
	tuner := Start(Config{
		Reactor:   r,
		Pools:     pools,
		Telemetry: tel,
		Tune:      tune.Config{MinLoops: 1, MaxLoops: 2},
		SetLoops: func(n int) {
			mu.Lock()
			loopsSet = append(loopsSet, n)
			mu.Unlock()
		},
		Interval: 50 * time.Millisecond,
	})
	defer tuner.Stop()

	svc, err := forward.New(context.Background(), r, forward.Config{
		Listen: listen, Upstream: up, Pools: pools,
		Admit: func() error { tuner.Kick(); return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(); err != nil {
		t.Fatal(err)
	}
	if !tuner.Stats().Sleeping {
		t.Fatal("tuner awake before any traffic")
	}
	c, err := net.Dial("tcp", svc.Addr())
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for end := time.Now().Add(400 * time.Millisecond); time.Now().Before(end); {
		if _, err := c.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	st := tuner.Stats()
	if st.Steps == 0 || st.Sleeping {
		t.Fatalf("after 400 ms of traffic: %+v, want steps taken and the tuner awake", st)
	}
	if st.Knobs.Pipe[tune.Bulk] == 0 {
		t.Fatalf("knobs %+v: want a bulk pipe size", st.Knobs)
	}
	c.Close()

	deadline := time.Now().Add(3 * time.Second)
	for !tuner.Stats().Sleeping {
		if time.Now().After(deadline) {
			t.Fatalf("tuner still awake 3 s after traffic stopped: %+v", tuner.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	steps := tuner.Stats().Steps
	time.Sleep(200 * time.Millisecond)
	if got := tuner.Stats().Steps; got != steps {
		t.Fatalf("a sleeping tuner took %d steps", got-steps)
	}
	mu.Lock()
	if len(loopsSet) == 0 || loopsSet[len(loopsSet)-1] != 1 {
		t.Errorf("active loops set to %v, want the last to retire down to 1 with no traffic", loopsSet)
	}
	mu.Unlock()

	// A new connection wakes it.
	c2, err := net.Dial("tcp", svc.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.Write(chunk)
	deadline = time.Now().Add(3 * time.Second)
	for tuner.Stats().Steps == steps {
		if time.Now().After(deadline) {
			t.Fatal("Kick from a new connection did not wake the tuner")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The knobs reached the pools.
	got := make(chan [2]int)
	r.Loops()[0].Post(func() { got <- [2]int{pools[0].PipeSize(), pools[0].BufSize()} })
	k := tuner.Stats().Knobs
	if g := <-got; g[0] != k.Pipe[tune.Bulk] || g[1] != k.Buf[tune.Interactive] {
		t.Errorf("pool 0 has pipe %d, buffer %d; want the tuner's %d, %d", g[0], g[1], k.Pipe[tune.Bulk], k.Buf[tune.Interactive])
	}
}
