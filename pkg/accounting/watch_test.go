package accounting

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// countingSource counts its syncs.
type countingSource struct{ syncs atomic.Int64 }

func (s *countingSource) Sync(context.Context) { s.syncs.Add(1) }

// TestWatchSyncsWhileWatched: a watched source is synced every QuotaCheck,
// an unwatched one no more, and Close stops the timer for good.
func TestWatchSyncsWhileWatched(t *testing.T) {
	a, err := New(Config{QuotaCheck: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	src := &countingSource{}
	a.Watch(src)
	deadline := time.Now().Add(5 * time.Second)
	for src.syncs.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d syncs in 5 s with a 10 ms check", src.syncs.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	a.Unwatch(src)
	time.Sleep(30 * time.Millisecond) // a tick in flight may still sync once
	n := src.syncs.Load()
	time.Sleep(50 * time.Millisecond)
	if m := src.syncs.Load(); m != n {
		t.Errorf("unwatched source synced %d more times", m-n)
	}
	a.wmu.Lock()
	armed := a.wtimer != nil
	a.wmu.Unlock()
	if armed {
		t.Error("the watch timer stays armed with nothing watched")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a.Watch(src)
	time.Sleep(50 * time.Millisecond)
	if m := src.syncs.Load(); m != n {
		t.Errorf("a closed Accounting synced a watched source %d times", m-n)
	}
}

// TestLimited follows SetQuotas.
func TestLimited(t *testing.T) {
	a, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	r := a.Record("u")
	if r.Limited() {
		t.Error("limited without quotas")
	}
	if limited, err := r.CheckQuota(time.Now()); limited || err != nil {
		t.Errorf("CheckQuota without quotas: %v, %v", limited, err)
	}
	a.SetQuotas(map[string]Quota{"u": {Period: Day, Bytes: 1}})
	if !r.Limited() || r.TimeLimited() {
		t.Errorf("with a byte quota: limited %v, time limited %v", r.Limited(), r.TimeLimited())
	}
	if limited, err := r.CheckQuota(time.Now()); !limited || err != nil {
		t.Errorf("CheckQuota under a byte quota: %v, %v", limited, err)
	}
	a.SetQuotas(map[string]Quota{"u": {Period: Day, Time: time.Hour}})
	if !r.Limited() || !r.TimeLimited() {
		t.Errorf("with a time quota: limited %v, time limited %v", r.Limited(), r.TimeLimited())
	}
	a.SetQuotas(map[string]Quota{"u": {Period: Day}})
	if r.Limited() {
		t.Error("limited by a zero quota")
	}
}
