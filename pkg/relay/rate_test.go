package relay_test

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/sluice-proxy/sluice/pkg/ratelimit"
	"github.com/sluice-proxy/sluice/pkg/relay"
)

// clock is a bucket clock: the time since the test started.
func clock() func() time.Duration {
	base := time.Now()
	return func() time.Duration { return time.Since(base) }
}

// transfer sends size seeded bytes from src to dst, checks they arrived
// intact, and returns how long until dst had read them all.
func transfer(t *testing.T, src, dst *net.TCPConn, seed uint64, size int64) time.Duration {
	deadline := time.Now().Add(60 * time.Second)
	src.SetWriteDeadline(deadline)
	dst.SetReadDeadline(deadline)
	start := time.Now()
	var sent [32]byte
	var serr error
	done := make(chan struct{})
	go func() { defer close(done); sent, serr = send(src, seed, size) }()
	got, n, err := receive(dst, false)
	took := time.Since(start)
	<-done
	if serr != nil || err != nil {
		t.Errorf("send: %v, receive: %v", serr, err)
	}
	if n != size || got != sent {
		t.Errorf("got %d bytes sha256 %x, want %d bytes sha256 %x", n, got[:8], size, sent[:8])
	}
	return took
}

// within fails unless took is the time size bytes need at rate +-25%
// (the bucket's first burst, at most 50 ms of the rate, comes on top).
func within(t *testing.T, what string, took time.Duration, size, rate int64) {
	want := time.Duration(float64(size) / float64(rate) * float64(time.Second))
	if took < want*75/100-50*time.Millisecond || took > want*125/100 {
		t.Errorf("%s: %d bytes took %v, want %v at %d bytes/s (+-25%%)", what, size, took, want, rate)
		return
	}
	t.Logf("%s: %d bytes took %v, want %v (%.1f%% of the rate)", what, size, took, want, 100*want.Seconds()/took.Seconds())
}

// span is how long each limited transfer should take.
const span = 1500 * time.Millisecond

func TestRelayRateLimit(t *testing.T) {
	tests := []struct {
		name   string
		cfg    relay.PoolConfig
		ab, ba int64 // rates; 0: no limit
	}{
		{"splice a to b", relay.PoolConfig{}, 2 << 20, 0},
		{"splice b to a", relay.PoolConfig{}, 0, 2 << 20},
		{"copy path both ways", relay.PoolConfig{MaxPipes: -1}, 1 << 20, 3 << 20},
		{"small pipes and buffers", relay.PoolConfig{PipeSize: 4096, BufSize: 1000}, 512 << 10, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.cfg)
			opts := relay.Options{}
			if tt.ab > 0 {
				opts.LimitAB = ratelimit.NewBucket(tt.ab, clock())
			}
			if tt.ba > 0 {
				opts.LimitBA = ratelimit.NewBucket(tt.ba, clock())
			}
			a, b := h.start(opts)
			var wg sync.WaitGroup
			run := func(what string, src, dst *net.TCPConn, seed uint64, rate int64) {
				defer wg.Done()
				size := int64(8 << 20)
				if rate > 0 {
					size = int64(float64(rate) * span.Seconds())
				}
				took := transfer(t, src, dst, seed, size)
				if rate > 0 {
					within(t, what, took, size, rate)
				}
			}
			wg.Add(2)
			go run("a->b", a, b, 1, tt.ab)
			go run("b->a", b, a, 2, tt.ba)
			wg.Wait()
			if err := h.wait(); err != nil {
				t.Fatalf("relay ended with %v", err)
			}
		})
	}
}

// TestRelayRateShared runs four relays on one bucket: together they get
// the bucket's rate, and each about a quarter of it.
func TestRelayRateShared(t *testing.T) {
	const rate, relays = 4 << 20, 4
	h := newHarness(t, relay.PoolConfig{})
	bucket := ratelimit.NewBucket(rate, clock())
	size := int64(float64(rate) * span.Seconds() / relays)
	var wg sync.WaitGroup
	took := make([]time.Duration, relays)
	start := time.Now()
	for i := range relays {
		a, b := h.start(relay.Options{LimitAB: bucket})
		b.CloseWrite()
		wg.Add(1)
		go func() {
			defer wg.Done()
			took[i] = transfer(t, a, b, uint64(i), size)
		}()
	}
	wg.Wait()
	within(t, "all", time.Since(start), size*relays, rate)
	for _, d := range took {
		// Each one ends when a fair share allows, not sooner.
		within(t, "one relay", d, size, rate/relays)
	}
	for range relays {
		if err := h.wait(); err != nil {
			t.Fatalf("relay ended with %v", err)
		}
	}
}
