package reactor

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func startReactor(t *testing.T, loops int) *Reactor {
	t.Helper()
	r, err := New(Config{Loops: loops, Workers: 2, Queue: 4})
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

func TestPostRunsOnLoopInOrder(t *testing.T) {
	r := startReactor(t, 2)
	const n = 1000
	for _, l := range r.Loops() {
		var got []int // touched only on l's goroutine
		done := make(chan struct{})
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range n {
					l.Post(func() { got = append(got, g*n+i) })
				}
			}()
		}
		wg.Wait()
		l.Post(func() { close(done) })
		<-done
		if len(got) != 4*n {
			t.Fatalf("loop %d ran %d posted funcs, want %d", l.ID(), len(got), 4*n)
		}
		last := map[int]int{0: -1, 1: -1, 2: -1, 3: -1}
		for _, v := range got {
			g, i := v/n, v%n
			if i <= last[g] {
				t.Fatalf("loop %d: posts of goroutine %d out of order: %d after %d", l.ID(), g, i, last[g])
			}
			last[g] = i
		}
	}
}

func TestTimersFireInOrder(t *testing.T) {
	r := startReactor(t, 1)
	l := r.Loops()[0]
	fired := make(chan int, 10)
	timers := make([]*Timer, 6)
	delays := []time.Duration{50, 10, 40, 20, 30, 60}
	l.Post(func() {
		for i, d := range delays {
			timers[i] = &Timer{Func: func() { fired <- int(d) }}
			l.Schedule(timers[i], d*time.Millisecond)
		}
		l.Cancel(timers[2])                             // 40 never fires
		l.Schedule(timers[5], 5*time.Millisecond)       // 60 moves to the front
		l.Cancel(&Timer{Func: func() { t.Error("x") }}) // cancelling an idle timer is a no-op
	})
	var got []int
	for range 5 {
		select {
		case v := <-fired:
			got = append(got, v)
		case <-time.After(5 * time.Second):
			t.Fatalf("timers fired %v, then nothing", got)
		}
	}
	want := []int{60, 10, 20, 30, 50}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("timers fired in order %v, want %v", got, want)
		}
	}
	select {
	case v := <-fired:
		t.Fatalf("cancelled timer %d fired", v)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestTimerHeapRandom(t *testing.T) {
	var h timerHeap
	ts := make([]*Timer, 200)
	for i := range ts {
		ts[i] = &Timer{when: int64((i * 7919) % 1000)}
		h.push(ts[i])
	}
	for i := 0; i < len(ts); i += 3 { // remove a third, from the middle
		h.remove(ts[i].index - 1)
	}
	prev := int64(-1)
	for len(h) > 0 {
		top := h[0]
		if top.when < prev {
			t.Fatalf("heap popped %d after %d", top.when, prev)
		}
		prev = top.when
		h.remove(0)
		if top.Scheduled() {
			t.Fatal("removed timer still reports Scheduled")
		}
	}
}

func TestPoolPostsBackAndBounds(t *testing.T) {
	r := startReactor(t, 1)
	l := r.Loops()[0]
	release := make(chan struct{})
	var running atomic.Int32
	var maxRunning atomic.Int32
	results := make(chan int, 10)
	submitted := 0
	var full error
	for i := range 10 {
		err := r.Pool().Submit(l, func() func() {
			n := running.Add(1)
			for {
				m := maxRunning.Load()
				if n <= m || maxRunning.CompareAndSwap(m, n) {
					break
				}
			}
			<-release
			running.Add(-1)
			return func() { results <- i }
		})
		if err != nil {
			full = err
			break
		}
		submitted++
	}
	if !errors.Is(full, ErrPoolFull) {
		t.Fatalf("10 blocked jobs in a pool of 2 workers and 4 queued: got %v, want ErrPoolFull", full)
	}
	close(release)
	for range submitted {
		select {
		case <-results:
		case <-time.After(5 * time.Second):
			t.Fatal("pool result not posted back")
		}
	}
	if m := maxRunning.Load(); m > 2 {
		t.Fatalf("%d jobs ran at once, want at most 2 workers", m)
	}
}
