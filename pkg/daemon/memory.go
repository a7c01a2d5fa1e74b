package daemon

import (
	"fmt"
	"math"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
)

// memSampleEvery is how old a memory sample may be before an accepted
// connection takes a new one. Sampling happens only when connections
// arrive, so an idle sluice never wakes up for it.
const memSampleEvery = 100 * time.Millisecond

// memGuard refuses new connections while the Go runtime holds more memory
// than the cap (`option max_memory`). It is safe for concurrent use: every
// loop asks it on accept.
type memGuard struct {
	limit atomic.Int64 // bytes; 0: no cap
	inUse atomic.Int64 // at the last sample
	last  atomic.Int64 // time of the last sample, unix nanoseconds

	mu      sync.Mutex // held while sampling
	samples []metrics.Sample
}

func newMemGuard() *memGuard {
	return &memGuard{samples: []metrics.Sample{
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
	}}
}

// setLimit changes the cap. GOMEMLIMIT becomes three quarters of it, so
// the garbage collector works harder well before connections are refused;
// a GOMEMLIMIT set in the environment wins.
func (g *memGuard) setLimit(limit int64, envLimit bool) {
	g.limit.Store(limit)
	g.last.Store(0)
	if envLimit {
		return
	}
	if limit > 0 {
		debug.SetMemoryLimit(limit / 4 * 3)
	} else {
		debug.SetMemoryLimit(math.MaxInt64) // the runtime's "no limit"
	}
}

// admit returns an error when the memory in use is past the cap.
func (g *memGuard) admit() error {
	limit := g.limit.Load()
	if limit == 0 {
		return nil
	}
	now := time.Now().UnixNano()
	if now-g.last.Load() > int64(memSampleEvery) && g.mu.TryLock() {
		g.sample()
		g.last.Store(now)
		g.mu.Unlock()
	}
	if used := g.inUse.Load(); used > limit {
		return fmt.Errorf("memory cap: %d bytes in use, max_memory is %d", used, limit)
	}
	return nil
}

// used returns the memory in use now.
func (g *memGuard) used() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.sample()
	return g.inUse.Load()
}

// sample reads the runtime's memory: everything mapped minus what was
// returned to the kernel. Called with mu held.
func (g *memGuard) sample() {
	metrics.Read(g.samples)
	total := g.samples[0].Value.Uint64()
	released := g.samples[1].Value.Uint64()
	g.inUse.Store(int64(total - released))
}
