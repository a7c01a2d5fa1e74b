package ratelimit

import (
	"testing"
	"time"

	"github.com/sluice-proxy/sluice/pkg/reactor"
)

// TestFlow runs a Flow on a real loop with a fake bucket clock: grants are
// handed out until the burst is gone, then the flow waits and its timer
// wakes it; Used gives back what a drained source left, and Stop cancels
// a wait and gives back the reservation.
func TestFlow(t *testing.T) {
	r, err := reactor.New(reactor.Config{Loops: 1})
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	defer r.Stop()
	l := r.Loops()[0]
	on := func(fn func()) { // run fn on the loop and wait
		done := make(chan struct{})
		l.Post(func() { fn(); close(done) })
		<-done
	}
	clk := &fakeClock{}
	b := NewBucket(1_000_000, clk.get) // grants of 20000, burst 50000
	woke := make(chan struct{}, 1)
	f := NewFlow(b, func() { woke <- struct{}{} })

	steps := []struct {
		name     string
		do       func() int
		want     int
		wantWake bool
	}{
		{"a grant as big as asked", func() int { return f.Grant(l, 5000) }, 5000, false},
		{"a whole grant", func() int { f.Used(5000, false); return f.Grant(l, 1<<20) }, 20000, false},
		{"the rest of it", func() int { f.Used(15000, false); return f.Grant(l, 1<<20) }, 5000, false},
		{"the last of the burst", func() int { f.Used(5000, false); return f.Grant(l, 1<<20) }, 20000, false},
		{"drained: 15000 go back and serve the next grant", func() int { f.Used(5000, true); return f.Grant(l, 1<<20) }, 20000, false},
		{"burst used up: wait 20ms", func() int { f.Used(20000, false); return f.Grant(l, 1<<20) }, 0, true},
		{"after the wake-up: the reserved grant", func() int { return f.Grant(l, 1<<20) }, 20000, false},
		{"a second wait, stopped", func() int {
			f.Used(20000, false)
			n := f.Grant(l, 1<<20)
			f.Stop(l)
			return n
		}, 0, false},
	}
	for _, s := range steps {
		var got int
		on(func() { got = s.do() })
		if got != s.want {
			t.Fatalf("%s: %d, want %d", s.name, got, s.want)
		}
		select {
		case <-woke:
			if !s.wantWake {
				t.Fatalf("%s: woken, want no wake-up", s.name)
			}
		case <-time.After(200 * time.Millisecond):
			if s.wantWake {
				t.Fatalf("%s: not woken", s.name)
			}
		}
	}
	// Stop gave the second reservation back: the debt is the grant read
	// after the first wait (20000), less 5 ms of the rate.
	clk.now += 5 * time.Millisecond
	if n, wait := b.Take(1 << 20); n != 20000 || wait != 35*time.Millisecond {
		t.Fatalf("after Stop: Take = %d, %v; want 20000, 35ms", n, wait)
	}
}
