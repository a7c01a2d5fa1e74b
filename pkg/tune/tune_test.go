package tune

import (
	"testing"
	"time"
)

const sec = time.Second

// bulk is an interval where n bulk flows moved bytes in chunks of chunk
// bytes at rate bytes/s each, with the given RTT.
func bulk(n int, rate, chunk uint64, rtt time.Duration) Metrics {
	var m Metrics
	m.Interval = sec
	m.Classes[Bulk] = ClassLoad{Flows: n, Bytes: rate * uint64(n), Chunks: max(1, rate*uint64(n)/chunk), RTT: rtt}
	m.LoopCPU = []time.Duration{300 * time.Millisecond}
	m.BusiestFlows = n
	return m
}

// interactive is an interval of n small flows: 2 KiB/s in 200-byte chunks.
func interactive(n int) Metrics {
	var m Metrics
	m.Interval = sec
	m.Classes[Interactive] = ClassLoad{Flows: n, Bytes: 2048 * uint64(n), Chunks: 10 * uint64(n), RTT: 20 * time.Millisecond}
	m.LoopCPU = []time.Duration{5 * time.Millisecond}
	m.BusiestFlows = n
	return m
}

// loops is an interval with these loop CPU shares and flows on the busiest.
func loops(flows int, shares ...float64) Metrics {
	m := interactive(flows)
	m.LoopCPU = nil
	for _, s := range shares {
		m.LoopCPU = append(m.LoopCPU, time.Duration(s*float64(sec)))
	}
	return m
}

func withMem(m Metrics, avail, total uint64) Metrics {
	m.MemAvailable, m.MemTotal = avail, total
	return m
}

func repeat(m Metrics, n int) []Metrics {
	ms := make([]Metrics, n)
	for i := range ms {
		ms[i] = m
	}
	return ms
}

func alternate(a, b Metrics, n int) []Metrics {
	ms := make([]Metrics, n)
	for i := range ms {
		ms[i] = a
		if i%2 == 1 {
			ms[i] = b
		}
	}
	return ms
}

func concat(mss ...[]Metrics) []Metrics {
	var all []Metrics
	for _, ms := range mss {
		all = append(all, ms...)
	}
	return all
}

func TestStep(t *testing.T) {
	cfg := Config{MinLoops: 1, MaxLoops: 4}
	smallBulk := NewState(cfg, 2)
	smallBulk.Knobs.Pipe[Bulk] = 64 << 10
	smallBulk.Knobs.Buf[Bulk] = 64 << 10
	bigBulk := NewState(cfg, 2)
	oneLoop := NewState(cfg, 1)

	tests := []struct {
		name   string
		start  State
		inputs []Metrics
		// next, if set, makes n more intervals from the knobs in force,
		// for inputs that react to the tuner (a bigger pipe, bigger chunks).
		next    func(k Knobs) Metrics
		n       int
		check   func(t *testing.T, k Knobs)
		changes int // exact number of changes over the run; -1: any
	}{
		{
			name:  "bulk flow grows its pipe to the maximum",
			start: smallBulk,
			// The socket always holds more than the pipe: every chunk fills it.
			next: func(k Knobs) Metrics { return bulk(1, 100<<20, uint64(k.Pipe[Bulk]), 100*time.Microsecond) },
			n:    15,
			check: func(t *testing.T, k Knobs) {
				if k.Pipe[Bulk] != DefaultMaxPipe {
					t.Errorf("bulk pipe %d, want %d", k.Pipe[Bulk], DefaultMaxPipe)
				}
			},
			changes: 4, // 64K -> 128K -> 256K -> 512K -> 1M
		},
		{
			name:   "bulk flow grows one step per streak",
			start:  smallBulk,
			inputs: repeat(bulk(1, 100<<20, 64<<10, 100*time.Microsecond), 3),
			check: func(t *testing.T, k Knobs) {
				if k.Pipe[Bulk] != 128<<10 {
					t.Errorf("bulk pipe %d after one streak, want %d", k.Pipe[Bulk], 128<<10)
				}
			},
			changes: 1,
		},
		{
			name:   "high-RTT bulk flow grows its pipe and socket buffers",
			start:  smallBulk,
			inputs: repeat(bulk(1, 50<<20, 8<<10, 200*time.Millisecond), 9),
			check: func(t *testing.T, k Knobs) {
				// 50 MiB/s * 200 ms = 10 MiB in flight: over the kernel's
				// 4 MiB autotuning ceiling, so 2 x BDP rounded up, capped.
				if k.SockBuf[Bulk] != DefaultMaxSockBuf {
					t.Errorf("bulk sockbuf %d, want %d", k.SockBuf[Bulk], DefaultMaxSockBuf)
				}
				if k.Pipe[Bulk] != 512<<10 {
					t.Errorf("bulk pipe %d, want %d", k.Pipe[Bulk], 512<<10)
				}
			},
			changes: -1,
		},
		{
			name:   "bulk flow on a LAN leaves socket buffers to the kernel",
			start:  bigBulk,
			inputs: repeat(bulk(2, 50<<20, 1<<20, time.Millisecond), 10),
			check: func(t *testing.T, k Knobs) {
				if k.SockBuf[Bulk] != 0 {
					t.Errorf("bulk sockbuf %d, want 0 (kernel autotuning)", k.SockBuf[Bulk])
				}
			},
			changes: 0,
		},
		{
			name:   "bulk flow with small chunks shrinks its pipe slowly",
			start:  bigBulk,
			inputs: repeat(bulk(1, 8<<20, 16<<10, 100*time.Microsecond), 12),
			check: func(t *testing.T, k Knobs) {
				if k.Pipe[Bulk] != 256<<10 {
					t.Errorf("bulk pipe %d after two shrink streaks, want %d", k.Pipe[Bulk], 256<<10)
				}
			},
			changes: 2,
		},
		{
			name:   "interactive flows keep small pipes and buffers",
			start:  NewState(cfg, 2),
			inputs: repeat(interactive(50), 30),
			check: func(t *testing.T, k Knobs) {
				if k.Pipe[Interactive] != DefaultMinPipe || k.Buf[Interactive] != DefaultMinBuf || k.SockBuf[Interactive] != 0 {
					t.Errorf("interactive knobs pipe %d buf %d sockbuf %d, want %d %d 0",
						k.Pipe[Interactive], k.Buf[Interactive], k.SockBuf[Interactive], DefaultMinPipe, DefaultMinBuf)
				}
			},
			changes: -1, // loops may retire, nothing else
		},
		{
			name:   "overloaded loop adds a loop",
			start:  NewState(cfg, 1),
			inputs: repeat(loops(20, 0.97), 3),
			check: func(t *testing.T, k Knobs) {
				if k.Loops != 2 {
					t.Errorf("loops %d, want 2", k.Loops)
				}
			},
			changes: 1,
		},
		{
			name:   "overloaded loops grow to the maximum and stop",
			start:  NewState(cfg, 1),
			inputs: repeat(loops(20, 0.97, 0.9), 20),
			check: func(t *testing.T, k Knobs) {
				if k.Loops != 4 {
					t.Errorf("loops %d, want the maximum 4", k.Loops)
				}
			},
			changes: 3,
		},
		{
			name:   "a loop busy with one flow gets no help: the flow cannot move",
			start:  NewState(cfg, 1),
			inputs: repeat(loops(1, 0.99), 10),
			check: func(t *testing.T, k Knobs) {
				if k.Loops != 1 {
					t.Errorf("loops %d, want 1", k.Loops)
				}
			},
			changes: 0,
		},
		{
			name:   "light traffic retires loops after a long streak",
			start:  NewState(cfg, 4),
			inputs: repeat(loops(3, 0.02, 0.01, 0.01, 0.0), 20),
			check: func(t *testing.T, k Knobs) {
				if k.Loops != 2 {
					t.Errorf("loops %d after 20 light intervals, want 2", k.Loops)
				}
			},
			changes: 2,
		},
		{
			name:   "no traffic retires loops to the minimum at once",
			start:  NewState(cfg, 4),
			inputs: []Metrics{{Interval: sec, LoopCPU: []time.Duration{0, 0, 0, 0}}},
			check: func(t *testing.T, k Knobs) {
				if k.Loops != 1 {
					t.Errorf("loops %d, want 1", k.Loops)
				}
			},
			changes: 1,
		},
		{
			name:   "memory pressure shrinks everything at once",
			start:  bigBulk,
			inputs: []Metrics{withMem(bulk(1, 100<<20, 1<<20, time.Millisecond), 5<<20, 128<<20)},
			check: func(t *testing.T, k Knobs) {
				for c := range NumClasses {
					if k.Pipe[c] != DefaultMinPipe || k.Buf[c] != DefaultMinBuf || k.SockBuf[c] != DefaultMinSockBuf {
						t.Errorf("%s under pressure: pipe %d buf %d sockbuf %d, want minimums", c, k.Pipe[c], k.Buf[c], k.SockBuf[c])
					}
				}
			},
			changes: -1,
		},
		{
			name:   "no growth while memory is short",
			start:  bigBulk,
			inputs: repeat(withMem(bulk(1, 100<<20, 1<<20, time.Millisecond), 15<<20, 128<<20), 1),
			check: func(t *testing.T, k Knobs) {
				if k.Pipe[Bulk] != DefaultMaxPipe {
					t.Errorf("12%% free is not pressure: pipe %d, want %d", k.Pipe[Bulk], DefaultMaxPipe)
				}
			},
			changes: 0,
		},
		{
			name:  "memory cap counts as pressure",
			start: bigBulk,
			inputs: []Metrics{func() Metrics {
				m := bulk(1, 100<<20, 1<<20, time.Millisecond)
				m.MemCap, m.MemUsed = 32<<20, 31<<20
				return m
			}()},
			check: func(t *testing.T, k Knobs) {
				if k.Pipe[Bulk] != DefaultMinPipe {
					t.Errorf("pipe %d near the memory cap, want %d", k.Pipe[Bulk], DefaultMinPipe)
				}
			},
			changes: -1,
		},
		{
			name:  "pressure holds until well relieved, then bulk grows back",
			start: bigBulk,
			inputs: concat(
				[]Metrics{withMem(bulk(1, 100<<20, 1<<20, time.Millisecond), 5<<20, 128<<20)},
				repeat(withMem(bulk(1, 100<<20, 1<<20, time.Millisecond), 20<<20, 128<<20), 6), // 15%: still short
				repeat(withMem(bulk(1, 100<<20, 1<<20, time.Millisecond), 64<<20, 128<<20), 3), // 50%: relieved
			),
			check: func(t *testing.T, k Knobs) {
				if k.Pipe[Bulk] != 32<<10 {
					t.Errorf("bulk pipe %d three intervals after relief, want one step up, %d", k.Pipe[Bulk], 32<<10)
				}
			},
			changes: -1,
		},
		{
			name:    "no oscillation: pipe fill alternating around the thresholds",
			start:   smallBulk,
			inputs:  alternate(bulk(1, 20<<20, 60<<10, 0), bulk(1, 20<<20, 10<<10, 0), 40),
			changes: 0,
		},
		{
			name:    "no oscillation: chunk sizes in the dead band",
			start:   smallBulk,
			inputs:  alternate(bulk(1, 20<<20, 40<<10, 0), bulk(1, 20<<20, 24<<10, 0), 40),
			changes: 0,
		},
		{
			name:    "no oscillation: loop load jumping between busy and idle",
			start:   NewState(cfg, 2),
			inputs:  alternate(loops(10, 0.95, 0.5), loops(10, 0.05, 0.01), 40),
			changes: 0,
		},
		{
			name:    "no oscillation: memory hovering at the pressure line",
			start:   oneLoop,
			inputs:  alternate(withMem(interactive(5), 11<<20, 100<<20), withMem(interactive(5), 9<<20+512<<10, 100<<20), 40),
			changes: 1, // enters pressure once (9.5%) and stays: the shrink is one batch
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.start
			var all []Change
			inputs := tt.inputs
			for range tt.n {
				inputs = append(inputs, Metrics{}) // placeholders for next
			}
			for i, m := range inputs {
				if i >= len(tt.inputs) {
					m = tt.next(s.Knobs)
				}
				r := Step(cfg, s, m)
				for _, c := range r.Changes {
					t.Logf("interval %d: %s", i, c)
				}
				all = append(all, r.Changes...)
				s = r.State
			}
			if tt.check != nil {
				tt.check(t, s.Knobs)
			}
			if tt.changes >= 0 && batches(all) != tt.changes {
				t.Errorf("%d changes (%v), want %d", batches(all), all, tt.changes)
			}
		})
	}
}

// batches counts changes, counting a memory-pressure shrink (one decision
// over every knob) once.
func batches(cs []Change) int {
	n := 0
	for i, c := range cs {
		if i > 0 && c.Reason == cs[i-1].Reason && len(c.Reason) > 15 && c.Reason[:15] == "memory pressure" {
			continue
		}
		n++
	}
	return n
}

func TestStepRearm(t *testing.T) {
	s := NewState(Config{}, 1)
	if r := Step(Config{}, s, interactive(1)); !r.Rearm {
		t.Error("an interval with traffic did not rearm the timer")
	}
	if r := Step(Config{}, s, Metrics{Interval: sec}); r.Rearm {
		t.Error("an interval with no traffic rearmed the timer")
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name  string
		bytes uint64
		cur   Class
		want  Class
	}{
		{"fast flow becomes bulk", 10 << 20, Interactive, Bulk},
		{"slow flow stays interactive", 10 << 10, Interactive, Interactive},
		{"bulk flow dipping stays bulk", 2 << 20, Bulk, Bulk},
		{"interactive flow at the same rate stays interactive", 2 << 20, Interactive, Interactive},
		{"bulk flow that stops is interactive", 100, Bulk, Interactive},
		{"exactly the bulk rate", DefaultBulkRate, Interactive, Bulk},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Classify(Config{}, tt.bytes, sec, tt.cur); got != tt.want {
				t.Errorf("Classify(%d bytes/s, %s) = %s, want %s", tt.bytes, tt.cur, got, tt.want)
			}
		})
	}
	if got := Classify(Config{}, 1<<30, 0, Interactive); got != Interactive {
		t.Errorf("a zero interval changed the class to %s", got)
	}
}
