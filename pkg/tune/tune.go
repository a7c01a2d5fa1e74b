// Package tune is the decision half of sluice's tuner: a pure function from
// one interval's measurements to the knobs the relays and the reactor use
// (pipe size, socket buffers and copy-buffer size per flow class, active
// event loops). It reads no clock and no file and keeps no global state:
// the caller (the daemon's control loop) gathers [Metrics] from telemetry,
// the relays and /proc/meminfo, calls [Step] with the previous [State] and
// applies the knobs it returns.
//
// Every change waits for a streak of intervals that agree, and grow and
// shrink thresholds are far apart, so a noisy input never makes a knob
// oscillate. Memory pressure is the exception: it shrinks everything at
// once.
package tune

import (
	"fmt"
	"time"
)

// Class is a flow class; each class has its own knobs.
type Class int

// Flow classes.
const (
	// Interactive flows move little: requests, keystrokes, keep-alives.
	// Their pipes and buffers stay small.
	Interactive Class = iota
	// Bulk flows move many bytes: downloads, backups, video.
	Bulk
	// NumClasses is the number of classes, for arrays indexed by Class.
	NumClasses
)

func (c Class) String() string {
	switch c {
	case Interactive:
		return "interactive"
	case Bulk:
		return "bulk"
	}
	return fmt.Sprintf("class(%d)", int(c))
}

// Defaults for the zero values of Config.
const (
	DefaultMinPipe     = 16 << 10
	DefaultMaxPipe     = 1 << 20
	DefaultMinBuf      = 4 << 10
	DefaultMaxBuf      = 64 << 10
	DefaultMinSockBuf  = 16 << 10
	DefaultMaxSockBuf  = 16 << 20
	DefaultKernelBuf   = 4 << 20 // net.ipv4.tcp_wmem's maximum on Linux
	DefaultBulkRate    = 4 << 20 // bytes per second
	DefaultHighLoad    = 0.85
	DefaultLowLoad     = 0.15
	DefaultStreak      = 3
	DefaultIdleStreak  = 10
	DefaultMemLow      = 0.10
	DefaultMemRelieved = 0.20
)

// Config bounds the knobs and sets the thresholds. The zero value is
// usable: every zero field takes the Default of the same name.
type Config struct {
	// MinPipe and MaxPipe bound the splice pipe size (F_SETPIPE_SZ).
	MinPipe, MaxPipe int
	// MinBuf and MaxBuf bound the copy-path buffer size.
	MinBuf, MaxBuf int
	// MinSockBuf and MaxSockBuf bound SO_SNDBUF/SO_RCVBUF when the tuner
	// sets them; KernelBuf is the most the kernel's own autotuning gives
	// a socket (tcp_wmem[2]): below it the tuner leaves sockets alone.
	MinSockBuf, MaxSockBuf, KernelBuf int
	// MinLoops and MaxLoops bound the active event loops. If MaxLoops is
	// zero it is MinLoops; if MinLoops is zero it is 1.
	MinLoops, MaxLoops int
	// BulkRate is the rate in bytes per second at which a flow becomes
	// bulk; it becomes interactive again below a quarter of it.
	BulkRate int
	// HighLoad is the busiest loop's CPU share (0..1) that adds a loop;
	// LowLoad the share below which every loop must be to retire one.
	HighLoad, LowLoad float64
	// Streak is how many intervals in a row must agree before a knob
	// grows or a loop is added; IdleStreak before a loop is retired.
	Streak, IdleStreak int
	// MemLow is the fraction of memory available (of MemTotal, or left
	// under the memory cap) under which everything shrinks; pressure ends
	// above MemRelieved.
	MemLow, MemRelieved float64
}

func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	deff := func(v *float64, d float64) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.MinPipe, DefaultMinPipe)
	def(&c.MaxPipe, DefaultMaxPipe)
	def(&c.MinBuf, DefaultMinBuf)
	def(&c.MaxBuf, DefaultMaxBuf)
	def(&c.MinSockBuf, DefaultMinSockBuf)
	def(&c.MaxSockBuf, DefaultMaxSockBuf)
	def(&c.KernelBuf, DefaultKernelBuf)
	def(&c.MinLoops, 1)
	def(&c.MaxLoops, c.MinLoops)
	def(&c.BulkRate, DefaultBulkRate)
	def(&c.Streak, DefaultStreak)
	def(&c.IdleStreak, DefaultIdleStreak)
	deff(&c.HighLoad, DefaultHighLoad)
	deff(&c.LowLoad, DefaultLowLoad)
	deff(&c.MemLow, DefaultMemLow)
	deff(&c.MemRelieved, DefaultMemRelieved)
	c.MaxPipe = max(c.MaxPipe, c.MinPipe)
	c.MaxBuf = max(c.MaxBuf, c.MinBuf)
	c.MaxSockBuf = max(c.MaxSockBuf, c.MinSockBuf)
	c.MaxLoops = max(c.MaxLoops, c.MinLoops)
	return c
}

// Classify returns the class of a flow that moved bytes in interval and
// was of class cur: bulk from BulkRate up, interactive again only below a
// quarter of it, so a flow near the line keeps its class.
func Classify(cfg Config, bytes uint64, interval time.Duration, cur Class) Class {
	cfg = cfg.withDefaults()
	if interval <= 0 {
		return cur
	}
	rate := float64(bytes) / interval.Seconds()
	switch {
	case rate >= float64(cfg.BulkRate):
		return Bulk
	case rate < float64(cfg.BulkRate)/4:
		return Interactive
	}
	return cur
}

// ClassLoad is what the flows of one class did during the interval.
type ClassLoad struct {
	// Flows is the number of flows of the class that moved bytes.
	Flows int
	// Bytes is what they moved; Chunks how many fills (splice or read
	// calls that returned bytes) it took, so Bytes/Chunks is the average
	// chunk, compared with the pipe size.
	Bytes, Chunks uint64
	// RTT is the largest smoothed round-trip time among them, 0 if
	// unknown (no sockops, or unix sockets).
	RTT time.Duration
}

// Metrics is one interval's measurements.
type Metrics struct {
	// Interval is the time they cover.
	Interval time.Duration
	// LoopCPU is the on-CPU time of each active loop's thread.
	LoopCPU []time.Duration
	// BusiestFlows is the number of flows that moved bytes on the
	// busiest loop: a loop with one flow cannot be relieved by another
	// loop, since a connection never changes loops.
	BusiestFlows int
	// Classes is per flow class.
	Classes [NumClasses]ClassLoad
	// MemAvailable and MemTotal are from /proc/meminfo; zero if unknown.
	MemAvailable, MemTotal uint64
	// MemCap is sluice's memory cap and MemUsed its use; zero if no cap.
	MemCap, MemUsed uint64
}

// Knobs are the values the relays and the reactor should use.
type Knobs struct {
	// Pipe is the splice pipe size per class.
	Pipe [NumClasses]int
	// Buf is the copy-path buffer size per class.
	Buf [NumClasses]int
	// SockBuf is SO_SNDBUF/SO_RCVBUF per class; 0 leaves the kernel's
	// autotuning alone (setting a socket buffer turns it off for good).
	SockBuf [NumClasses]int
	// Loops is the number of active event loops.
	Loops int
}

// State is the tuner's memory between intervals: the knobs in force and
// the streaks that give hysteresis. Start from [NewState].
type State struct {
	Knobs Knobs
	// Pressure is set while memory is short.
	Pressure bool

	grow, shrink [NumClasses]int
	// sockStreak counts intervals in a row that wanted sockTarget.
	sockStreak, sockTarget [NumClasses]int
	busy, idle             int
}

// NewState returns the starting state: small knobs for interactive flows,
// the largest pipe for bulk ones (splice's best case on a fast link), and
// loops active.
func NewState(cfg Config, loops int) State {
	cfg = cfg.withDefaults()
	var s State
	s.Knobs.Pipe[Interactive] = cfg.MinPipe
	s.Knobs.Buf[Interactive] = cfg.MinBuf
	s.Knobs.Pipe[Bulk] = cfg.MaxPipe
	s.Knobs.Buf[Bulk] = cfg.MaxBuf
	s.Knobs.Loops = clamp(loops, cfg.MinLoops, cfg.MaxLoops)
	return s
}

// Change is one knob that moved, for the debug log and `sluice stats`.
type Change struct {
	Knob     string // "pipe", "buf", "sockbuf" or "loops"
	Class    Class  // for per-class knobs
	From, To int
	Reason   string
}

func (c Change) String() string {
	if c.Knob == "loops" {
		return fmt.Sprintf("loops %d -> %d: %s", c.From, c.To, c.Reason)
	}
	return fmt.Sprintf("%s %s %d -> %d: %s", c.Class, c.Knob, c.From, c.To, c.Reason)
}

// Result is what Step decided.
type Result struct {
	State   State
	Changes []Change
	// Rearm is false when the interval moved nothing: the caller stops
	// its timer until traffic comes back, so an idle sluice never wakes.
	Rearm bool
}

// Step decides the knobs for the next interval from the last one.
func Step(cfg Config, s State, m Metrics) Result {
	cfg = cfg.withDefaults()
	r := Result{State: s}
	st := &r.State
	set := func(knob string, c Class, v *int, to int, reason string) {
		if *v != to {
			r.Changes = append(r.Changes, Change{Knob: knob, Class: c, From: *v, To: to, Reason: reason})
			*v = to
		}
	}

	var moved uint64
	for _, cl := range m.Classes {
		moved += cl.Bytes
	}
	r.Rearm = moved > 0

	// Memory pressure first: it overrides everything else at once.
	free, known := memFree(m)
	switch {
	case known && !st.Pressure && free < cfg.MemLow:
		st.Pressure = true
		reason := fmt.Sprintf("memory pressure: %.0f%% free", 100*free)
		for c := range NumClasses {
			set("pipe", c, &st.Knobs.Pipe[c], cfg.MinPipe, reason)
			set("buf", c, &st.Knobs.Buf[c], cfg.MinBuf, reason)
			set("sockbuf", c, &st.Knobs.SockBuf[c], cfg.MinSockBuf, reason)
		}
		st.grow, st.shrink, st.sockStreak = [NumClasses]int{}, [NumClasses]int{}, [NumClasses]int{}
	case known && st.Pressure && free > cfg.MemRelieved:
		st.Pressure = false
		// Buffers grow back through the ordinary rules, one step at a
		// time; the kernel's autotuning comes back for new sockets.
		for c := range NumClasses {
			set("sockbuf", c, &st.Knobs.SockBuf[c], 0, fmt.Sprintf("memory relieved: %.0f%% free", 100*free))
		}
	}

	if !st.Pressure && m.Interval > 0 {
		tuneBulk(cfg, st, m, set)
	}
	tuneLoops(cfg, st, m, moved, set)
	return r
}

type setter func(knob string, c Class, v *int, to int, reason string)

// memFree is the fraction of memory still available: the smaller of
// MemAvailable/MemTotal and what the cap leaves.
func memFree(m Metrics) (float64, bool) {
	free, known := 1.0, false
	if m.MemTotal > 0 {
		free, known = float64(m.MemAvailable)/float64(m.MemTotal), true
	}
	if m.MemCap > 0 {
		left := 0.0
		if m.MemUsed < m.MemCap {
			left = float64(m.MemCap-m.MemUsed) / float64(m.MemCap)
		}
		free, known = min(free, left), true
	}
	return free, known
}

// tuneBulk sizes the bulk class's pipe, copy buffer and socket buffers.
// Interactive flows keep the minimum: their chunks are small, and a pipe's
// size only matters when a chunk fills it.
func tuneBulk(cfg Config, st *State, m Metrics, set setter) {
	cl := m.Classes[Bulk]
	if cl.Flows == 0 || cl.Chunks == 0 {
		return // nothing to learn from; keep what worked
	}
	pipe := &st.Knobs.Pipe[Bulk]
	chunk := float64(cl.Bytes) / float64(cl.Chunks)
	fill := chunk / float64(*pipe)
	rate := float64(cl.Bytes) / float64(cl.Flows) / m.Interval.Seconds()
	bdp := rate * cl.RTT.Seconds()
	grow := fill >= 0.75 || bdp > float64(*pipe)
	shrink := fill < 0.25 && bdp < float64(*pipe)/2
	switch {
	case grow && *pipe < cfg.MaxPipe:
		st.shrink[Bulk] = 0
		if st.grow[Bulk]++; st.grow[Bulk] >= cfg.Streak {
			st.grow[Bulk] = 0
			reason := fmt.Sprintf("chunks fill %.0f%% of the pipe, bandwidth-delay %.0f bytes", 100*fill, bdp)
			set("pipe", Bulk, pipe, clamp(2**pipe, cfg.MinPipe, cfg.MaxPipe), reason)
		}
	case shrink && *pipe > cfg.MinPipe:
		st.grow[Bulk] = 0
		// Shrinking costs throughput if wrong: wait twice as long.
		if st.shrink[Bulk]++; st.shrink[Bulk] >= 2*cfg.Streak {
			st.shrink[Bulk] = 0
			set("pipe", Bulk, pipe, clamp(*pipe/2, cfg.MinPipe, cfg.MaxPipe), fmt.Sprintf("chunks fill %.0f%% of the pipe", 100*fill))
		}
	default:
		st.grow[Bulk], st.shrink[Bulk] = 0, 0
	}
	set("buf", Bulk, &st.Knobs.Buf[Bulk], clamp(*pipe, cfg.MinBuf, cfg.MaxBuf), "follows the bulk pipe")

	// Socket buffers: the kernel's autotuning (0) unless the path needs
	// more than it gives: twice the bandwidth-delay product.
	target := 0
	if want := int(2 * bdp); want > cfg.KernelBuf {
		target = clamp(pow2(want), cfg.MinSockBuf, cfg.MaxSockBuf)
	}
	sb := &st.Knobs.SockBuf[Bulk]
	if target == *sb || target != st.sockTarget[Bulk] {
		st.sockStreak[Bulk] = 0
	}
	st.sockTarget[Bulk] = target
	if target != *sb {
		if st.sockStreak[Bulk]++; st.sockStreak[Bulk] >= cfg.Streak {
			st.sockStreak[Bulk] = 0
			set("sockbuf", Bulk, sb, target, fmt.Sprintf("bandwidth-delay %.0f bytes at rtt %v", bdp, cl.RTT))
		}
	}
}

// tuneLoops adds a loop when the busiest one is CPU-bound with work that
// another loop could take, and retires one when all are nearly idle.
func tuneLoops(cfg Config, st *State, m Metrics, moved uint64, set setter) {
	loops := &st.Knobs.Loops
	if moved == 0 {
		// Nothing moved at all: the timer stops after this step, so
		// retire down to the minimum now rather than never.
		st.busy, st.idle = 0, 0
		set("loops", 0, loops, cfg.MinLoops, "no traffic")
		return
	}
	if m.Interval <= 0 || len(m.LoopCPU) == 0 {
		return
	}
	var busiest float64
	for _, c := range m.LoopCPU {
		busiest = max(busiest, c.Seconds()/m.Interval.Seconds())
	}
	switch {
	case busiest >= cfg.HighLoad && m.BusiestFlows > 1 && *loops < cfg.MaxLoops:
		st.idle = 0
		if st.busy++; st.busy >= cfg.Streak {
			st.busy = 0
			set("loops", 0, loops, *loops+1, fmt.Sprintf("busiest loop at %.0f%% CPU with %d flows", 100*busiest, m.BusiestFlows))
		}
	case busiest < cfg.LowLoad && *loops > cfg.MinLoops:
		st.busy = 0
		if st.idle++; st.idle >= cfg.IdleStreak {
			st.idle = 0
			set("loops", 0, loops, *loops-1, fmt.Sprintf("busiest loop at %.0f%% CPU", 100*busiest))
		}
	default:
		st.busy, st.idle = 0, 0
	}
}

func clamp(v, lo, hi int) int { return max(lo, min(v, hi)) }

// pow2 rounds n up to a power of two.
func pow2(n int) int {
	p := 1
	for p < n {
		p <<= 1
	}
	return p
}
