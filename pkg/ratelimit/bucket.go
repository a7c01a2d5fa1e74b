package ratelimit

import (
	"sync"
	"time"
)

// Grant and burst sizes, as time at the bucket's rate.
const (
	// grantTime is the most one Take grants: at 10mbit, 25 KB. A reader
	// takes at most this much at a time, so readers sharing a bucket take
	// turns in steps this small.
	grantTime = 20 * time.Millisecond
	// burstTime is how much an idle bucket saves up (at least two grants):
	// what a user gets at once after a pause, and what a measurement over
	// T seconds sees on top of the rate (2% of 2.5 s).
	burstTime = 50 * time.Millisecond
	// minGrant and maxGrant bound a grant in bytes, so that low rates do
	// not cost a syscall per handful of bytes and high ones still take
	// turns.
	minGrant = 1024
	maxGrant = 256 << 10
)

// Bucket is a token bucket of a rate in bytes per second, safe for use
// from every loop at once. Readers reserve grants with Take: tokens may go
// below zero, and the reader whose grant made them negative waits until
// the debt is paid off. So readers on a bucket are served in the order
// they asked, none busy-waits, and a late wake-up loses nothing (the
// tokens kept coming in meanwhile, up to the burst).
type Bucket struct {
	clock func() time.Duration

	mu     sync.Mutex
	rate   float64 // bytes per second
	burst  float64
	grant  int
	tokens float64
	last   time.Duration // clock at the last refill
}

// NewBucket returns a full bucket of rate bytes per second (at least 1)
// reading time from clock, a monotonic clock such as time.Since of a fixed
// instant.
func NewBucket(rate int64, clock func() time.Duration) *Bucket {
	b := &Bucket{clock: clock, last: clock()}
	b.setRate(rate)
	b.tokens = b.burst
	return b
}

func (b *Bucket) setRate(rate int64) {
	b.rate = float64(max(rate, 1))
	b.grant = min(max(int(b.rate*grantTime.Seconds()), minGrant), maxGrant)
	b.burst = max(b.rate*burstTime.Seconds(), 2*float64(b.grant))
	b.tokens = min(b.tokens, b.burst)
}

// refill adds the tokens earned since the last refill. Called with mu held.
func (b *Bucket) refill(now time.Duration) {
	if now > b.last {
		b.tokens = min(b.tokens+b.rate*(now-b.last).Seconds(), b.burst)
		b.last = now
	}
}

// Take grants n bytes, at most want (which must be more than 0) and at
// most one grant's worth, and says how long the caller must wait before
// reading them: 0 when the bucket holds them now. The bytes are the
// caller's from then on; what it does not read it gives back with Return.
func (b *Bucket) Take(want int) (n int, wait time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(b.clock())
	n = min(want, b.grant)
	b.tokens -= float64(n)
	if b.tokens < 0 {
		wait = time.Duration(-b.tokens / b.rate * float64(time.Second))
	}
	return n, wait
}

// Return gives back n granted bytes that were not read.
func (b *Bucket) Return(n int) {
	b.mu.Lock()
	b.tokens = min(b.tokens+float64(n), b.burst)
	b.mu.Unlock()
}

// SetRate changes the rate, keeping the tokens earned so far (up to the
// new burst) and the grants already made.
func (b *Bucket) SetRate(rate int64) {
	b.mu.Lock()
	b.refill(b.clock())
	b.setRate(rate)
	b.mu.Unlock()
}

// Rate returns the rate in bytes per second.
func (b *Bucket) Rate() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return int64(b.rate)
}
