package reactor

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// TestLiveWait checks that every waiter returns once the last connection
// is done (two drains of one service), and that a deadline wins otherwise.
func TestLiveWait(t *testing.T) {
	v := NewLive()
	v.Add()
	v.Add()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := v.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) || v.Count() != 2 {
		t.Fatalf("wait with 2 live: %v, count %d", err, v.Count())
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for range 2 {
		wg.Go(func() { errs <- v.Wait(context.Background()) })
	}
	v.Done()
	v.Done()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// TestGather sums a value read on each loop's goroutine.
func TestGather(t *testing.T) {
	r := startReactor(t, 3)
	got, err := Gather(context.Background(), r.Loops(), func(l *Loop) int { return l.ID() + 1 }, func(total *int, one int) { *total += one })
	if err != nil || got != 6 {
		t.Errorf("Gather: %d, %v; want 6", got, err)
	}
}
