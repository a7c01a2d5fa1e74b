//go:build !nobpf

package telemetry

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
)

// The program groups of bpf/telemetry.c. Each is loaded on its own, with
// its own maps, so one that the kernel refuses leaves the others working.

type runtimeObjects struct {
	Prog          *ebpf.Program `ebpf:"sluice_sched_runtime"`
	ThreadRuntime *ebpf.Map     `ebpf:"thread_runtime"`
}

type cpuObjects struct {
	Prog      *ebpf.Program `ebpf:"sluice_sched_switch"`
	ThreadCPU *ebpf.Map     `ebpf:"thread_cpu"`
}

type sendlenObjects struct {
	Send     *ebpf.Program `ebpf:"sluice_send_length"`
	Recv     *ebpf.Program `ebpf:"sluice_recv_length"`
	ThreadIO *ebpf.Map     `ebpf:"thread_io"`
}

type sockopsObjects struct {
	Prog        *ebpf.Program `ebpf:"sluice_sockops"`
	SocketStats *ebpf.Map     `ebpf:"socket_stats"`
	ClosedStats *ebpf.Map     `ebpf:"closed_stats"`
}

// bpfSource holds what was loaded; nil maps mean that group is off.
type bpfSource struct {
	// threadCPU holds nanoseconds per thread: absolute runtimes when
	// runtime is set (tp_btf), else time counted since loading.
	threadCPU   *ebpf.Map
	runtime     bool
	threadIO    *ebpf.Map
	socketStats *ebpf.Map
	closedStats *ebpf.Map
	cgroup      *cgroup
	links       []link.Link
	closers     []interface{ Close() error }
}

// openKernel probes the kernel once and loads every group that works. It
// returns nil when none does, and a reason for each group left out.
func openKernel(cfg Config, pid int) (kernelSource, []string) {
	var why []string
	if err := features.HaveProgramType(ebpf.RawTracepoint); err != nil {
		// bpf(2) itself is missing or refused (no CAP_BPF, qemu-user's
		// ENOSYS, a kernel without BPF_SYSCALL): nothing will load.
		return nil, []string{fmt.Sprintf("ebpf unavailable: %v", err)}
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		why = append(why, fmt.Sprintf("raise memlock limit: %v", err))
	}
	spec, err := loadTelemetry()
	if err != nil {
		return nil, append(why, err.Error())
	}
	if err := spec.Variables["target_tgid"].Set(uint32(pid)); err != nil {
		return nil, append(why, fmt.Sprintf("set target pid: %v", err))
	}
	b := &bpfSource{}
	// One parse of the kernel's BTF for every load (each would parse its
	// own otherwise: a few MB of heap and tens of ms apiece); dropped with
	// opts when this returns.
	opts := &ebpf.CollectionOptions{Cache: btf.NewCache()}

	btfReason := haveTracing(opts.Cache)
	if btfReason == "" {
		if err := b.openRuntime(spec, opts); err != nil {
			why = append(why, "cpu: "+err.Error())
		}
	} else {
		why = append(why, "cpu: "+btfReason)
	}
	if b.threadCPU == nil {
		if err := b.openSwitchTimer(spec, opts); err != nil {
			why = append(why, "cpu: "+err.Error())
		}
	}

	if btfReason != "" {
		why = append(why, "bytes: "+btfReason)
	} else {
		var sl sendlenObjects
		if err := spec.LoadAndAssign(&sl, opts); err != nil {
			why = append(why, fmt.Sprintf("bytes: load sock_send_length (kernel >= 6.3): %v", err))
		} else if ls, err := link.AttachTracing(link.TracingOptions{Program: sl.Send}); err != nil {
			closeAll(sl.Send, sl.Recv, sl.ThreadIO)
			why = append(why, fmt.Sprintf("bytes: attach sock_send_length: %v", err))
		} else if lr, err := link.AttachTracing(link.TracingOptions{Program: sl.Recv}); err != nil {
			closeAll(ls, sl.Send, sl.Recv, sl.ThreadIO)
			why = append(why, fmt.Sprintf("bytes: attach sock_recv_length: %v", err))
		} else {
			b.links = append(b.links, ls, lr)
			b.closers = append(b.closers, sl.Send, sl.Recv, sl.ThreadIO)
			b.threadIO = sl.ThreadIO
		}
	}

	if err := features.HaveProgramType(ebpf.SockOps); err != nil {
		why = append(why, fmt.Sprintf("rtt: sockops: %v", err))
	} else if err := b.openSockops(spec, opts, cfg, pid); err != nil {
		why = append(why, "rtt: "+err.Error())
	}

	if b.threadCPU == nil && b.threadIO == nil && b.socketStats == nil {
		return nil, why
	}
	return b, why
}

// haveTracing says why tp_btf programs cannot load, or "" if they may.
// features.HaveProgramType(ebpf.Tracing) is not asked: it probes with an
// fentry program, which some kernels refuse (EPERM) while they accept
// tp_btf; loading the program itself is the test.
func haveTracing(cache *btf.Cache) string {
	if _, err := cache.Kernel(); err != nil {
		return fmt.Sprintf("no kernel BTF for tp_btf: %v", err)
	}
	return ""
}

// openRuntime loads tp_btf/sched_switch, which reads the scheduler's own
// runtime of each thread: exact, but it needs BTF.
func (b *bpfSource) openRuntime(spec *ebpf.CollectionSpec, opts *ebpf.CollectionOptions) error {
	var o runtimeObjects
	if err := spec.LoadAndAssign(&o, opts); err != nil {
		return fmt.Errorf("load tp_btf/sched_switch: %w", err)
	}
	l, err := link.AttachTracing(link.TracingOptions{Program: o.Prog})
	if err != nil {
		closeAll(o.Prog, o.ThreadRuntime)
		return fmt.Errorf("attach tp_btf/sched_switch: %w", err)
	}
	b.links = append(b.links, l)
	b.closers = append(b.closers, o.Prog, o.ThreadRuntime)
	b.threadCPU, b.runtime = o.ThreadRuntime, true
	return nil
}

// openSwitchTimer loads raw_tracepoint/sched_switch, which times the
// intervals between context switches: no BTF needed, but it counts wall
// time on the CPU (hypervisor steal time included), a few percent more
// than the scheduler's own runtime for threads that switch very often.
func (b *bpfSource) openSwitchTimer(spec *ebpf.CollectionSpec, opts *ebpf.CollectionOptions) error {
	var o cpuObjects
	if err := spec.LoadAndAssign(&o, opts); err != nil {
		return fmt.Errorf("load raw_tracepoint/sched_switch: %w", err)
	}
	l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sched_switch", Program: o.Prog})
	if err != nil {
		closeAll(o.Prog, o.ThreadCPU)
		return fmt.Errorf("attach raw_tracepoint/sched_switch: %w", err)
	}
	b.links = append(b.links, l)
	b.closers = append(b.closers, o.Prog, o.ThreadCPU)
	b.threadCPU = o.ThreadCPU
	return nil
}

func (b *bpfSource) openSockops(spec *ebpf.CollectionSpec, opts *ebpf.CollectionOptions, cfg Config, pid int) error {
	var so sockopsObjects
	if err := spec.LoadAndAssign(&so, opts); err != nil {
		return fmt.Errorf("load sockops: %w", err)
	}
	cg, err := joinCgroup(cfg, pid)
	if err != nil {
		closeAll(so.Prog, so.SocketStats, so.ClosedStats)
		return err
	}
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cg.dir, Attach: ebpf.AttachCGroupSockOps, Program: so.Prog})
	if err != nil {
		closeAll(so.Prog, so.SocketStats, so.ClosedStats)
		return errors.Join(fmt.Errorf("attach sockops to %s: %w", cg.dir, err), cg.leave())
	}
	b.cgroup = cg
	b.links = append(b.links, l)
	b.closers = append(b.closers, so.Prog, so.SocketStats, so.ClosedStats)
	b.socketStats, b.closedStats = so.SocketStats, so.ClosedStats
	return nil
}

func (b *bpfSource) source(s *Source) {
	switch {
	case b.runtime:
		s.CPU = CPUSchedRuntime
	case b.threadCPU != nil:
		s.CPU = CPUSchedSwitch
	}
	if b.socketStats != nil {
		s.Bytes, s.RTT = BytesSockops, RTTSockops
	}
	if b.threadIO != nil {
		s.Bytes = BytesSendLength
	}
}

func (b *bpfSource) threads(ts []Thread) error {
	live := make(map[uint32]bool, len(ts))
	for i := range ts {
		tid := uint32(ts[i].TID)
		live[tid] = true
		if b.threadCPU != nil {
			var ns uint64
			err := b.threadCPU.Lookup(tid, &ns)
			switch {
			case errors.Is(err, ebpf.ErrKeyNotExist):
				if !b.runtime {
					ts[i].CPUTotal = 0 // not switched out since loading
				} // else keep /proc's runtime until the first switch
			case err != nil:
				return fmt.Errorf("read cpu of thread %d: %w", tid, err)
			default:
				ts[i].CPUTotal = time.Duration(ns)
			}
		}
		if b.threadIO != nil {
			var tb telemetryThreadBytes
			err := b.threadIO.Lookup(tid, &tb)
			if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("read bytes of thread %d: %w", tid, err)
			}
			ts[i].SentTotal = tb.Sent
		}
	}
	// Forget threads that have exited, so a reused TID starts from zero.
	var ns uint64
	var tb telemetryThreadBytes
	for _, mv := range []struct {
		m   *ebpf.Map
		val any
	}{{b.threadCPU, &ns}, {b.threadIO, &tb}} {
		m := mv.m
		if m == nil {
			continue
		}
		var dead []uint32
		var tid uint32
		it := m.Iterate()
		for it.Next(&tid, mv.val) {
			if !live[tid] {
				dead = append(dead, tid)
			}
		}
		if err := it.Err(); err != nil {
			return fmt.Errorf("list threads in %s: %w", m, err)
		}
		for _, tid := range dead {
			if err := m.Delete(tid); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("forget thread %d: %w", tid, err)
			}
		}
	}
	return nil
}

func (b *bpfSource) sockets() ([]Socket, uint64, error) {
	if b.socketStats == nil {
		return nil, 0, nil
	}
	var live []Socket
	var cookie uint64
	var st telemetrySockStats
	it := b.socketStats.Iterate()
	for it.Next(&cookie, &st) {
		live = append(live, Socket{
			Cookie:        cookie,
			AckedTotal:    st.BytesAcked,
			ReceivedTotal: st.BytesReceived,
			SRTT:          time.Duration(st.SrttUs) * time.Microsecond,
		})
	}
	if err := it.Err(); err != nil {
		return nil, 0, fmt.Errorf("read sockets: %w", err)
	}
	if err := b.closedStats.Lookup(uint32(0), &st); err != nil {
		return nil, 0, fmt.Errorf("read closed sockets: %w", err)
	}
	return live, st.BytesAcked, nil
}

func (b *bpfSource) close() error {
	var errs []error
	for _, l := range b.links {
		errs = append(errs, l.Close())
	}
	for _, c := range b.closers {
		errs = append(errs, c.Close())
	}
	if b.cgroup != nil {
		errs = append(errs, b.cgroup.leave())
	}
	return errors.Join(errs...)
}

func closeAll(cs ...interface{ Close() error }) {
	for _, c := range cs {
		_ = c.Close()
	}
}
