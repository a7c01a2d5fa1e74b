package reactor

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

// Live counts a service's live connections, across its loops, so that a
// drain can wait for the last one. The zero value is not usable: use
// NewLive.
type Live struct {
	n    atomic.Int64
	idle chan struct{} // signalled when n drops to zero
}

// NewLive returns a counter at zero.
func NewLive() *Live { return &Live{idle: make(chan struct{}, 1)} }

// Add counts one more connection and returns the new count.
func (v *Live) Add() int64 { return v.n.Add(1) }

// Done counts a connection less.
func (v *Live) Done() {
	if v.n.Add(-1) == 0 {
		select {
		case v.idle <- struct{}{}:
		default:
		}
	}
}

// Count returns the live connections.
func (v *Live) Count() int { return int(v.n.Load()) }

// Wait returns once no connection is live, or with an error when ctx is
// done first. Several goroutines may wait (a reload's drain and the
// shutdown's): the idle signal wakes one, a slow tick the others. It must
// not be called from a loop goroutine.
func (v *Live) Wait(ctx context.Context) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for v.n.Load() > 0 {
		select {
		case <-v.idle:
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("drain: %d connections still open: %w", v.n.Load(), ctx.Err())
		}
	}
	return nil
}

// Gather runs get on every loop, on the loop's goroutine, and sums what
// they return with add: a service's per-loop counters read while the
// loops run. It must not be called from a loop goroutine; it gives up,
// with what it has, when ctx is done.
func Gather[T any](ctx context.Context, loops []*Loop, get func(l *Loop) T, add func(total *T, one T)) (T, error) {
	got := make(chan T, len(loops))
	for _, l := range loops {
		l.Post(func() { got <- get(l) })
	}
	var total T
	for range loops {
		select {
		case one := <-got:
			add(&total, one)
		case <-ctx.Done():
			return total, fmt.Errorf("stats: %w", ctx.Err())
		}
	}
	return total, nil
}
