// Package telemetry measures what sluice's tuner needs: bytes moved per
// interval, on-CPU time per thread (so per event loop), and TCP round-trip
// time where the kernel can tell.
//
// The sources are probed once, in [Open], and the best that works is kept:
//
//   - bytes: tp_btf/sock_send_length per thread (kernel >= 6.3 with BTF),
//     else a sockops program on sluice's own cgroup v2 (bytes acknowledged
//     per TCP socket), else the relays' own counters ([Config.RelayBytes]);
//   - CPU: tp_btf/sched_switch reading each thread's scheduler runtime
//     (BTF), else raw_tracepoint/sched_switch timing context switches (no
//     BTF, no tracefs), else /proc/self/task/*/stat;
//   - RTT: the sockops program's smoothed RTT per TCP socket, else none.
//
// The eBPF programs are in bpf/telemetry.c, built from UAPI headers without
// CO-RE so that they also load on BTF-less 32-bit ARM and MIPS kernels.
// Building with the nobpf tag leaves cilium/ebpf out of the binary (about
// 2 MB on mipsle) and keeps only the /proc and relay-counter sources.
//
// The sockops program must see only sluice's sockets, so Open creates a
// child cgroup (sluice-PID) under the process's cgroup v2, moves the process
// into it and attaches there; [Telemetry.Close] moves the process back and
// removes the cgroup. Sockets created before Open are not in that cgroup and
// are not measured by sockops: open telemetry before listening.
package telemetry

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// Names of the sources, as reported in [Source].
const (
	BytesSendLength = "tp_btf/sock_send_length"
	BytesSockops    = "sockops"
	BytesRelay      = "relay counters"
	CPUSchedRuntime = "tp_btf/sched_switch"
	CPUSchedSwitch  = "raw_tracepoint/sched_switch"
	CPUProc         = "/proc/self/task"
	RTTSockops      = "sockops"
	RTTNone         = "none"
)

// Config selects the telemetry sources. The zero value is usable.
type Config struct {
	// ProcOnly skips eBPF entirely (`option telemetry 'proc'`).
	ProcOnly bool
	// RelayBytes, if set, returns the bytes the relays have delivered so
	// far, a count that only grows. It is the byte source when no eBPF
	// program counts bytes. If nil, bytes are then reported as zero.
	RelayBytes func() uint64
	// ProcRoot is where procfs is mounted. If empty, "/proc".
	ProcRoot string
	// CgroupRoot is where the cgroup v2 hierarchy is mounted. If empty, it
	// is read from /proc/self/mountinfo (/sys/fs/cgroup/unified in hybrid
	// mode, /sys/fs/cgroup on a pure cgroup v2 system).
	CgroupRoot string
}

// Source says which source each measurement comes from, and why eBPF was
// not used where it was not.
type Source struct {
	Bytes string // BytesSendLength, BytesSockops or BytesRelay
	CPU   string // CPUSchedRuntime, CPUSchedSwitch or CPUProc
	RTT   string // RTTSockops or RTTNone
	// Fallbacks lists why eBPF programs were not loaded, one reason each.
	Fallbacks []string
}

// EBPF reports whether any eBPF program is in use.
func (s Source) EBPF() bool {
	return s.Bytes != BytesRelay || s.CPU != CPUProc || s.RTT != RTTNone
}

// String is the one line sluice logs at start and `sluice stats` shows,
// e.g. "ebpf (bytes: tp_btf/sock_send_length, cpu: ..., rtt: sockops)".
func (s Source) String() string {
	kind := "proc"
	if s.EBPF() {
		kind = "ebpf"
	}
	line := fmt.Sprintf("%s (bytes: %s, cpu: %s, rtt: %s)", kind, s.Bytes, s.CPU, s.RTT)
	if len(s.Fallbacks) > 0 {
		line += "; fallback: " + strings.Join(s.Fallbacks, "; ")
	}
	return line
}

// Thread is one thread of the sluice process.
type Thread struct {
	TID int
	// CPU is the on-CPU time during the interval; CPUTotal is the
	// source's running total (since the thread started for CPUProc and
	// CPUSchedRuntime, since loading for CPUSchedSwitch). The eBPF sources
	// update a thread when it leaves the CPU, so a thread running right now
	// has its current slice counted at its next switch.
	CPU, CPUTotal time.Duration
	// Sent is the bytes the thread's socket sends returned during the
	// interval, SentTotal since the start; both zero unless the byte
	// source is BytesSendLength.
	Sent, SentTotal uint64
}

// Socket is one live TCP socket of sluice, from the sockops program.
type Socket struct {
	// Cookie is the kernel's socket cookie (SO_COOKIE). Counters are
	// updated at each ACK that gives an RTT sample and at state changes,
	// so a live socket's may lag by the last few ACKs; the totals of closed
	// sockets are exact.
	Cookie uint64
	// Acked is the bytes sent and acknowledged during the interval,
	// AckedTotal since the connection started; Received likewise.
	Acked, AckedTotal       uint64
	Received, ReceivedTotal uint64
	// SRTT is the kernel's smoothed round-trip time.
	SRTT time.Duration
}

// Snapshot is what changed since the previous [Telemetry.Sample].
type Snapshot struct {
	// At is when the sample was taken; Interval is the time since the
	// previous sample (zero for the first).
	At       time.Time
	Interval time.Duration
	Source   Source
	// Bytes is the bytes sluice sent during the interval, BytesTotal since
	// telemetry started, from Source.Bytes.
	Bytes, BytesTotal uint64
	// Threads are the process's live threads, by TID.
	Threads []Thread
	// Sockets are the live TCP sockets seen by sockops, by cookie; empty
	// when Source.RTT is RTTNone.
	Sockets []Socket
	// MemAvailable and MemTotal are from /proc/meminfo, in bytes (zero if
	// the kernel does not say), for the tuner's memory pressure.
	MemAvailable, MemTotal uint64
}

// Thread returns the thread with tid, if it is in the snapshot.
func (s Snapshot) Thread(tid int) (Thread, bool) {
	i, ok := slices.BinarySearchFunc(s.Threads, tid, func(t Thread, tid int) int { return t.TID - tid })
	if !ok {
		return Thread{}, false
	}
	return s.Threads[i], true
}

// kernelSource is the eBPF side, implemented in bpf.go (absent with the
// nobpf tag). Counters are cumulative.
type kernelSource interface {
	source(s *Source)
	// threads fills CPUTotal (if counted) and SentTotal (if counted) for
	// the listed threads.
	threads(ts []Thread) error
	// sockets returns live sockets (totals only) and the bytes acked on
	// sockets that have closed.
	sockets() (live []Socket, closedAcked uint64, err error)
	close() error
}

// Telemetry samples the active sources. Its methods are safe for
// concurrent use.
type Telemetry struct {
	cfg Config

	mu     sync.Mutex   // guards everything below
	kernel kernelSource // nil: /proc and relay counters only
	src    Source
	// reading is set while the kernel source is read; cleared for good
	// when reading fails (see Sample).
	reading   bool
	last      time.Time
	started   bool
	lastBytes uint64
	baseBytes uint64 // relay counter at Open, so totals start at zero
	// exitedBytes is what threads that have exited had sent.
	exitedBytes uint64
	threads     map[int]Thread
	socks       map[uint64]Socket
}

// Open probes the kernel, loads the eBPF programs that work and returns a
// Telemetry; eBPF failures only select a fallback, listed in
// [Telemetry.Source]. The error is for /proc being unreadable.
func Open(cfg Config) (*Telemetry, error) {
	if cfg.ProcRoot == "" {
		cfg.ProcRoot = "/proc"
	}
	t := &Telemetry{cfg: cfg, threads: map[int]Thread{}, socks: map[uint64]Socket{}}
	if _, err := readTasks(cfg.ProcRoot); err != nil {
		return nil, fmt.Errorf("open telemetry: %w", err)
	}
	t.src = Source{Bytes: BytesRelay, CPU: CPUProc, RTT: RTTNone}
	if cfg.ProcOnly {
		t.src.Fallbacks = []string{"telemetry set to proc"}
	} else {
		k, why := openKernel(cfg, os.Getpid())
		t.src.Fallbacks = why
		if k != nil {
			t.kernel, t.reading = k, true
			k.source(&t.src)
		}
	}
	if cfg.RelayBytes != nil {
		t.baseBytes = cfg.RelayBytes()
	}
	return t, nil
}

// Source returns the active sources.
func (t *Telemetry) Source() Source {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.src
}

// Sample reads every source and returns what changed since the previous
// call. If the eBPF maps can no longer be read (most often: the process
// dropped its privileges, and bpf(2) needs CAP_BPF even on an open map),
// telemetry falls back to /proc and the relay counters for good, says so
// in Source().Fallbacks, and returns a first sample of the new sources
// (Interval zero).
func (t *Telemetry) Sample() (Snapshot, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	snap, err := t.sample()
	var kerr kernelError
	if errors.As(err, &kerr) {
		t.degrade(kerr)
		return t.sample()
	}
	return snap, err
}

// kernelError is a failure to read the eBPF maps.
type kernelError struct{ error }

func (e kernelError) Unwrap() error { return e.error }

// degrade switches to /proc and the relay counters after err, starting
// their intervals afresh. The programs stay attached until Close.
func (t *Telemetry) degrade(err error) {
	fallbacks := append(slices.Clone(t.src.Fallbacks), fmt.Sprintf("reading eBPF maps failed, using /proc (privileges dropped?): %v", err))
	t.src = Source{Bytes: BytesRelay, CPU: CPUProc, RTT: RTTNone, Fallbacks: fallbacks}
	t.reading = false
	t.started = false
	t.threads, t.socks = map[int]Thread{}, map[uint64]Socket{}
	t.lastBytes, t.exitedBytes, t.baseBytes = 0, 0, 0
	if t.cfg.RelayBytes != nil {
		t.baseBytes = t.cfg.RelayBytes()
	}
}

func (t *Telemetry) sample() (Snapshot, error) {
	now := time.Now()
	snap := Snapshot{At: now, Source: t.src}
	if t.started {
		snap.Interval = now.Sub(t.last)
	}
	t.last, t.started = now, true

	ts, err := readTasks(t.cfg.ProcRoot)
	if err != nil {
		return Snapshot{}, fmt.Errorf("sample telemetry: %w", err)
	}
	if t.reading {
		if err := t.kernel.threads(ts); err != nil {
			return Snapshot{}, kernelError{fmt.Errorf("sample telemetry: %w", err)}
		}
	}
	seen := make(map[int]Thread, len(ts))
	var sent uint64
	for i := range ts {
		prev := t.threads[ts[i].TID]
		ts[i].CPU = ts[i].CPUTotal - prev.CPUTotal
		if ts[i].CPU < 0 {
			ts[i].CPU = 0
		}
		ts[i].Sent = ts[i].SentTotal - min(prev.SentTotal, ts[i].SentTotal)
		sent += ts[i].SentTotal
		seen[ts[i].TID] = ts[i]
	}
	// Bytes of threads that have exited stay in the total.
	for tid, th := range t.threads {
		if _, ok := seen[tid]; !ok {
			t.exitedBytes += th.SentTotal
		}
	}
	t.threads = seen
	snap.Threads = ts

	var live []Socket
	var closedAcked uint64
	if t.src.RTT == RTTSockops {
		if live, closedAcked, err = t.kernel.sockets(); err != nil {
			return Snapshot{}, kernelError{fmt.Errorf("sample telemetry: %w", err)}
		}
		socks := make(map[uint64]Socket, len(live))
		for _, s := range live {
			prev := t.socks[s.Cookie]
			s.Acked = s.AckedTotal - min(prev.AckedTotal, s.AckedTotal)
			s.Received = s.ReceivedTotal - min(prev.ReceivedTotal, s.ReceivedTotal)
			socks[s.Cookie] = s
			snap.Sockets = append(snap.Sockets, s)
		}
		t.socks = socks
		slices.SortFunc(snap.Sockets, func(a, b Socket) int { return cmp.Compare(a.Cookie, b.Cookie) })
	}

	var total uint64
	switch t.src.Bytes {
	case BytesSendLength:
		total = sent + t.exitedBytes
	case BytesSockops:
		total = closedAcked
		for _, s := range live {
			total += s.AckedTotal
		}
	case BytesRelay:
		if t.cfg.RelayBytes != nil {
			total = t.cfg.RelayBytes() - t.baseBytes
		}
	}
	if snap.MemAvailable, snap.MemTotal, err = readMeminfo(t.cfg.ProcRoot); err != nil {
		return Snapshot{}, fmt.Errorf("sample telemetry: %w", err)
	}
	snap.BytesTotal = total
	snap.Bytes = total - min(t.lastBytes, total)
	t.lastBytes = total
	return snap, nil
}

// Close detaches the eBPF programs, moves the process back to its cgroup
// and removes the one Open created. Call it on every exit path, including
// after SIGTERM. Sample still works afterwards, from /proc and the relay
// counters.
func (t *Telemetry) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.kernel == nil {
		return nil
	}
	err := t.kernel.close()
	t.kernel, t.reading = nil, false
	t.src = Source{Bytes: BytesRelay, CPU: CPUProc, RTT: RTTNone, Fallbacks: []string{"closed"}}
	if err != nil {
		return fmt.Errorf("close telemetry: %w", err)
	}
	return nil
}
