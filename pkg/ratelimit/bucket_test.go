package ratelimit

import (
	"container/heap"
	"math"
	"testing"
	"time"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct{ now time.Duration }

func (c *fakeClock) get() time.Duration { return c.now }

func TestBucketTake(t *testing.T) {
	type step struct {
		advance  time.Duration // clock moves first
		want     int           // Take(want); 0: Return(ret) instead
		ret      int
		wantN    int
		wantWait time.Duration
	}
	tests := []struct {
		name  string
		rate  int64
		steps []step
	}{
		{"full bucket grants at once, then reserves", 1_000_000, []step{
			// grant 20 KB (20 ms), burst 50 KB (50 ms)
			{want: 1 << 20, wantN: 20000},
			{want: 1 << 20, wantN: 20000},
			{want: 1 << 20, wantN: 20000, wantWait: 10 * time.Millisecond},
			{want: 1 << 20, wantN: 20000, wantWait: 30 * time.Millisecond}, // queued behind the previous one
		}},
		{"small wants are granted as asked", 1_000_000, []step{
			{want: 100, wantN: 100},
			{want: 1, wantN: 1},
		}},
		{"refill is capped at the burst", 1_000_000, []step{
			{want: 1 << 20, wantN: 20000},
			{want: 1 << 20, wantN: 20000},
			{want: 1 << 20, wantN: 20000, wantWait: 10 * time.Millisecond},
			{advance: time.Hour, want: 1 << 20, wantN: 20000},
			{want: 1 << 20, wantN: 20000},
			{want: 1 << 20, wantN: 20000, wantWait: 10 * time.Millisecond},
		}},
		{"time pays off the debt", 1_000_000, []step{
			{want: 50000, wantN: 20000},
			{want: 50000, wantN: 20000},
			{want: 50000, wantN: 20000, wantWait: 10 * time.Millisecond},
			{advance: 10 * time.Millisecond, want: 1000, wantN: 1000, wantWait: time.Millisecond},
		}},
		{"returned bytes serve the next reader", 1_000_000, []step{
			{want: 1 << 20, wantN: 20000},
			{want: 1 << 20, wantN: 20000},
			{want: 1 << 20, wantN: 20000, wantWait: 10 * time.Millisecond},
			{ret: 15000},
			{want: 5000, wantN: 5000},
		}},
		{"returns are capped at the burst", 1_000_000, []step{
			{ret: 1 << 30},
			{want: 1 << 20, wantN: 20000},
			{want: 1 << 20, wantN: 20000},
			{want: 1 << 20, wantN: 20000, wantWait: 10 * time.Millisecond},
		}},
		{"low rates grant at least 1 KB", 1000, []step{
			// grant 1024, burst 2048
			{want: 1 << 20, wantN: 1024},
			{want: 1 << 20, wantN: 1024},
			{want: 1 << 20, wantN: 1024, wantWait: 1024 * time.Millisecond},
		}},
		{"high rates grant at most 256 KB", 1_000_000_000, []step{
			{want: 1 << 30, wantN: 256 << 10},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &fakeClock{}
			b := NewBucket(tt.rate, clk.get)
			for i, s := range tt.steps {
				clk.now += s.advance
				if s.want == 0 {
					b.Return(s.ret)
					continue
				}
				n, wait := b.Take(s.want)
				if n != s.wantN || (wait-s.wantWait).Abs() > time.Microsecond {
					t.Fatalf("step %d: Take(%d) = %d, %v; want %d, %v", i, s.want, n, wait, s.wantN, s.wantWait)
				}
			}
		})
	}
}

func TestBucketSetRate(t *testing.T) {
	clk := &fakeClock{}
	b := NewBucket(1_000_000, clk.get)
	for range 3 {
		b.Take(1 << 20) // 60 KB taken of 50: 10 KB in debt
	}
	b.SetRate(2_000_000) // grant 40 KB, burst 100 KB; the debt stays
	if b.Rate() != 2_000_000 {
		t.Fatalf("Rate() = %d", b.Rate())
	}
	n, wait := b.Take(1 << 20)
	if n != 40000 || wait != 25*time.Millisecond {
		t.Fatalf("Take after SetRate = %d, %v; want 40000, 25ms", n, wait)
	}
}

// reader is one simulated connection: it asks for a grant, waits for it,
// reads it and asks again.
type reader struct {
	id    int
	at    time.Duration // when its pending grant is due
	n     int
	bytes int64
}

type readers []*reader

func (h readers) Len() int { return len(h) }
func (h readers) Less(i, j int) bool {
	return h[i].at < h[j].at || h[i].at == h[j].at && h[i].id < h[j].id
}
func (h readers) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *readers) Push(x any)   { *h = append(*h, x.(*reader)) }
func (h *readers) Pop() any     { old := *h; r := old[len(old)-1]; *h = old[:len(old)-1]; return r }

// TestBucketShared runs readers that always have data against one bucket
// on a fake clock, waking each when its grant is due plus a timer's
// lateness (a read itself takes 1us, so a reader with an immediate grant
// lets the others ask in between): the total must match the rate (plus the first burst)
// and each reader must get an equal share.
func TestBucketShared(t *testing.T) {
	tests := []struct {
		name    string
		rate    int64
		readers int
		late    time.Duration // every wake-up is this late
	}{
		{"one reader 10mbit", 1_250_000, 1, 0},
		{"8 readers 10mbit", 1_250_000, 8, 0},
		{"8 readers 10mbit, 1ms late timers", 1_250_000, 8, time.Millisecond},
		{"3 readers 64k", 64_000, 3, 2 * time.Millisecond},
		{"32 readers 1gbit", 125_000_000, 32, 0},
	}
	const span = 10 * time.Second
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &fakeClock{}
			b := NewBucket(tt.rate, clk.get)
			h := &readers{}
			all := make([]*reader, tt.readers)
			for i := range all {
				all[i] = &reader{id: i}
				heap.Push(h, all[i])
			}
			var total int64
			for {
				r := heap.Pop(h).(*reader)
				if r.at > span {
					break
				}
				clk.now = r.at
				r.bytes += int64(r.n) // the grant it waited for is read now
				total += int64(r.n)
				n, wait := b.Take(1 << 20)
				r.n = n
				r.at = clk.now + wait + time.Microsecond // a read takes a little while
				if wait > 0 {
					r.at += tt.late
				}
				heap.Push(h, r)
			}
			want := float64(tt.rate)*span.Seconds() + b.burst
			if err := math.Abs(float64(total)-want) / want; err > 0.01 {
				t.Errorf("moved %d bytes in %v, want %.0f (error %.2f%%)", total, span, want, 100*err)
			}
			fair := float64(total) / float64(tt.readers)
			for _, r := range all {
				if d := math.Abs(float64(r.bytes)-fair) / fair; d > 0.05 {
					t.Errorf("reader %d moved %d bytes, a fair share is %.0f", r.id, r.bytes, fair)
				}
			}
		})
	}
}
