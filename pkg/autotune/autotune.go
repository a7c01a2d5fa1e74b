// Package autotune closes sluice's tuning loop. While bytes move it wakes
// once an interval, reads telemetry (CPU per loop thread) and the relay
// pools' counters, asks tune.Step for knobs and applies them: pipe, buffer
// and socket-buffer sizes to every loop's pool, the number of active loops
// to the listeners. When an interval moved nothing it stops its timer and
// sleeps until Kick says a connection arrived, so an idle sluice never
// wakes up for it.
//
// Flow classes map onto the relay's splice-auto: bytes a relay spliced are
// the bulk class, bytes it copied through buffers the interactive class.
package autotune

import (
	"bufio"
	"bytes"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-proxy/sluice/pkg/reactor"
	"github.com/sluice-proxy/sluice/pkg/relay"
	"github.com/sluice-proxy/sluice/pkg/telemetry"
	"github.com/sluice-proxy/sluice/pkg/tune"
)

// DefaultInterval is used when Config.Interval is zero.
const DefaultInterval = time.Second

// Config wires a Tuner. Reactor and Pools are required.
type Config struct {
	Reactor *reactor.Reactor
	// Pools are the relay pools, one per loop, in loop order.
	Pools []*relay.Pool
	// Telemetry gives CPU time per loop thread. If nil, loop CPU is not
	// known and the number of active loops is left alone.
	Telemetry *telemetry.Telemetry
	// Tune bounds the knobs and sets thresholds.
	Tune tune.Config
	// SetLoops applies the number of active loops to every listener
	// (endpoint.Listener.SetActiveLoops). If nil, loops are not tuned.
	SetLoops func(n int)
	// MemCap and MemUsed give the memory cap and current use, if any.
	MemCap  uint64
	MemUsed func() uint64
	// Interval is the time between steps while traffic flows. If zero,
	// DefaultInterval.
	Interval time.Duration
	// ProcRoot is where procfs is mounted (for /proc/meminfo). If empty,
	// "/proc".
	ProcRoot string
	// Log receives each decision at debug level. If nil, slog.Default().
	Log *slog.Logger
}

// Stats is what `sluice stats` shows of the tuner.
type Stats struct {
	Knobs     tune.Knobs
	Steps     uint64 // intervals evaluated
	Decisions uint64 // knob changes applied
	Pressure  bool   // memory is short
	Sleeping  bool   // no traffic: the timer is stopped
}

// Tuner runs the loop. Its methods are safe for concurrent use.
type Tuner struct {
	cfg    Config
	log    *slog.Logger
	wake   chan struct{}
	stop   chan struct{}
	done   chan struct{}
	asleep atomic.Bool

	mu    sync.Mutex
	state tune.State
	stats Stats
	last  []relay.Counters // per loop, at the previous step
}

// Start begins tuning; the knobs start at tune.NewState's values, applied
// at once. The tuner sleeps until the first Kick.
func Start(cfg Config) *Tuner {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.ProcRoot == "" {
		cfg.ProcRoot = "/proc"
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	t := &Tuner{
		cfg:   cfg,
		log:   log,
		wake:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
		state: tune.NewState(cfg.Tune, len(cfg.Reactor.Loops())),
		last:  make([]relay.Counters, len(cfg.Pools)),
	}
	t.stats.Knobs = t.state.Knobs
	t.apply(t.state.Knobs, true)
	t.asleep.Store(true)
	t.stats.Sleeping = true
	go t.run()
	return t
}

// Kick tells a sleeping tuner that traffic started (a connection was
// accepted). It costs one atomic load when the tuner is awake.
func (t *Tuner) Kick() {
	if t.asleep.Load() && t.asleep.CompareAndSwap(true, false) {
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}
}

// Stop ends the loop and waits for it.
func (t *Tuner) Stop() {
	close(t.stop)
	<-t.done
}

// Stats returns the knobs in force and the counters.
func (t *Tuner) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stats
}

func (t *Tuner) run() {
	defer close(t.done)
	timer := time.NewTimer(t.cfg.Interval)
	timer.Stop()
	for {
		select {
		case <-t.stop:
			timer.Stop()
			return
		case <-t.wake:
			t.setSleeping(false)
			t.sample() // start the interval: counters and CPU from now
			timer.Reset(t.cfg.Interval)
		case <-timer.C:
			if t.step() {
				timer.Reset(t.cfg.Interval)
				continue
			}
			t.setSleeping(true)
			t.asleep.Store(true)
		}
	}
}

func (t *Tuner) setSleeping(v bool) {
	t.mu.Lock()
	t.stats.Sleeping = v
	t.mu.Unlock()
}

// poolCounters reads every pool on its loop and starts a new interval.
func (t *Tuner) poolCounters() []relay.Counters {
	loops := t.cfg.Reactor.Loops()
	out := make([]relay.Counters, len(loops))
	var wg sync.WaitGroup
	for i, l := range loops {
		wg.Add(1)
		p := t.cfg.Pools[i]
		l.Post(func() {
			defer wg.Done()
			out[i] = p.Counters()
			p.NextInterval()
		})
	}
	wg.Wait()
	return out
}

// sample starts an interval without deciding anything.
func (t *Tuner) sample() {
	counts := t.poolCounters()
	if t.cfg.Telemetry != nil {
		_, _ = t.cfg.Telemetry.Sample()
	}
	t.mu.Lock()
	t.last = counts
	t.mu.Unlock()
}

// step measures the interval that just ended, decides and applies. It
// reports whether to keep the timer running.
func (t *Tuner) step() bool {
	counts := t.poolCounters()
	m := tune.Metrics{Interval: t.cfg.Interval}
	var snap telemetry.Snapshot
	haveCPU := false
	if t.cfg.Telemetry != nil {
		if s, err := t.cfg.Telemetry.Sample(); err == nil && s.Interval > 0 {
			snap, haveCPU = s, true
			m.Interval = s.Interval
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	busiest := -1.0
	for i, c := range counts {
		prev := t.last[i]
		bulk := &m.Classes[tune.Bulk]
		bulk.Bytes += c.SplicedBytes - prev.SplicedBytes
		bulk.Chunks += c.SplicedChunks - prev.SplicedChunks
		bulk.Flows += c.SplicedFlows
		inter := &m.Classes[tune.Interactive]
		inter.Bytes += c.CopiedBytes - prev.CopiedBytes
		inter.Chunks += c.CopiedChunks - prev.CopiedChunks
		inter.Flows += c.CopiedFlows
		if i >= t.state.Knobs.Loops || !haveCPU {
			continue
		}
		var cpu time.Duration
		if th, ok := snap.Thread(t.cfg.Reactor.Loops()[i].TID()); ok {
			cpu = th.CPU
		}
		m.LoopCPU = append(m.LoopCPU, cpu)
		if s := cpu.Seconds(); s > busiest {
			busiest = s
			m.BusiestFlows = c.SplicedFlows + c.CopiedFlows
		}
	}
	t.last = counts
	if haveCPU {
		m.MemAvailable, m.MemTotal = snap.MemAvailable, snap.MemTotal
		// The bulk class's RTT: the largest smoothed RTT among sockets
		// that moved bytes (sockops; none on kernels without it).
		for _, sk := range snap.Sockets {
			if sk.Acked > 0 || sk.Received > 0 {
				m.Classes[tune.Bulk].RTT = max(m.Classes[tune.Bulk].RTT, sk.SRTT)
			}
		}
	} else {
		m.MemAvailable, m.MemTotal = meminfo(t.cfg.ProcRoot)
	}
	if t.cfg.MemCap > 0 && t.cfg.MemUsed != nil {
		m.MemCap, m.MemUsed = t.cfg.MemCap, t.cfg.MemUsed()
	}
	res := tune.Step(t.cfg.Tune, t.state, m)
	t.state = res.State
	t.stats.Steps++
	t.stats.Decisions += uint64(len(res.Changes))
	t.stats.Knobs = res.State.Knobs
	t.stats.Pressure = res.State.Pressure
	for _, c := range res.Changes {
		t.log.Debug("autotune", "change", c.String())
	}
	if len(res.Changes) > 0 {
		t.apply(res.State.Knobs, false)
	}
	return res.Rearm
}

// apply sets the knobs on every loop's pool and the active loop count.
func (t *Tuner) apply(k tune.Knobs, first bool) {
	for i, l := range t.cfg.Reactor.Loops() {
		p := t.cfg.Pools[i]
		l.Post(func() {
			p.SetPipeSize(k.Pipe[tune.Bulk])
			p.SetBufSize(k.Buf[tune.Interactive])
			p.SetSockBuf(k.SockBuf[tune.Bulk])
		})
	}
	if t.cfg.SetLoops != nil && (!first || k.Loops != len(t.cfg.Reactor.Loops())) {
		t.cfg.SetLoops(k.Loops)
	}
}

// meminfo reads MemAvailable and MemTotal in bytes; zeros if unknown.
func meminfo(procRoot string) (avail, total uint64) {
	b, err := os.ReadFile(procRoot + "/meminfo")
	if err != nil {
		return 0, 0
	}
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		f := bytes.Fields(s.Bytes())
		if len(f) < 2 {
			continue
		}
		v, err := strconv.ParseUint(string(f[1]), 10, 64)
		if err != nil {
			continue
		}
		switch string(f[0]) {
		case "MemAvailable:":
			avail = v << 10
		case "MemTotal:":
			total = v << 10
		}
	}
	return avail, total
}
