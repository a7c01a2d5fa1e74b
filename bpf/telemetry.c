// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// sluice telemetry: bytes per thread and per socket, on-CPU time per
// thread, smoothed RTT per socket. Built from UAPI headers only, without
// CO-RE, so the same object loads on BTF-less 32-bit ARM and MIPS kernels;
// only tp_btf programs need the kernel's BTF, and they read no kernel
// struct (their arguments are plain integers in the context array).
//
// Four groups, loaded independently by pkg/telemetry (each has its own
// maps, so one group failing to load leaves the others working):
//   runtime: tp_btf/sched_switch reading the kernel's own per-thread
//            runtime (BTF; the one program with CO-RE relocations)
//   cpu:     raw_tracepoint/sched_switch timing switches (kernel >= 4.17,
//            no BTF, no tracefs), where runtime cannot load
//   sendlen: tp_btf/sock_send_length, sock_recv_length (>= 6.3, BTF)
//   sockops: sockops on sluice's own cgroup v2 (bytes_acked,
//            bytes_received, srtt; RTT callbacks need >= 5.3)
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

// The process whose threads are measured; set by the loader.
volatile const __u32 target_tgid = 0;

// ---- cpu: on-CPU time per thread --------------------------------------

// Per-CPU time of the last context switch on that CPU. Every program
// variant that measures switches needs its own slot.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} switch_start SEC(".maps");

// Thread id -> nanoseconds on CPU, summed at each switch away from it.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} thread_cpu SEC(".maps");

// sched_switch fires in __schedule before the switch, so the current task
// is the one leaving the CPU: it ran since the previous switch on this
// CPU. No task_struct is read, hence no BTF is needed.
SEC("raw_tracepoint/sched_switch")
int sluice_sched_switch(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0;
	__u64 now = bpf_ktime_get_ns();
	__u64 *start = bpf_map_lookup_elem(&switch_start, &zero);
	if (!start)
		return 0;
	__u64 then = *start;
	*start = now;
	if (then == 0)
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	if ((__u32)(id >> 32) != target_tgid)
		return 0;
	__u32 tid = (__u32)id;
	__u64 delta = now - then;
	__u64 *total = bpf_map_lookup_elem(&thread_cpu, &tid);
	if (total) {
		__sync_fetch_and_add(total, delta);
		return 0;
	}
	bpf_map_update_elem(&thread_cpu, &tid, &delta, BPF_NOEXIST);
	return 0;
}

// ---- runtime: the scheduler's own per-thread runtime (BTF kernels) ------

// Minimal kernel types: CO-RE finds the real offsets in the kernel's BTF.
struct sched_entity {
	__u64 sum_exec_runtime;
} __attribute__((preserve_access_index));

struct task_struct {
	struct sched_entity se;
} __attribute__((preserve_access_index));

// Thread id -> se.sum_exec_runtime at its last switch away: the same
// nanoseconds /proc/PID/task/TID/stat and CLOCK_THREAD_CPUTIME_ID report.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} thread_runtime SEC(".maps");

// TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct
// *next, ...): ctx[1] is prev, whose runtime pick_next_task has just
// brought up to date.
SEC("tp_btf/sched_switch")
int sluice_sched_runtime(__u64 *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	if ((__u32)(id >> 32) != target_tgid)
		return 0;
	struct task_struct *prev = (struct task_struct *)ctx[1];
	__u32 tid = (__u32)id;
	__u64 ns = prev->se.sum_exec_runtime;
	bpf_map_update_elem(&thread_runtime, &tid, &ns, BPF_ANY);
	return 0;
}

// ---- sendlen: bytes per thread from the socket layer ------------------

struct thread_bytes {
	__u64 sent;
	__u64 received;
};

// Thread id -> bytes its sends and receives returned. Sends cover
// sendto/sendmsg and splice into a socket (which goes through
// sock_sendmsg); splice out of a TCP socket bypasses sock_recvmsg, so
// received undercounts spliced reads and sent is the relay's measure.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct thread_bytes);
} thread_io SEC(".maps");

static __always_inline void count_bytes(int ret, int sent)
{
	if (ret <= 0)
		return;
	__u64 id = bpf_get_current_pid_tgid();
	if ((__u32)(id >> 32) != target_tgid)
		return;
	__u32 tid = (__u32)id;
	struct thread_bytes *tb = bpf_map_lookup_elem(&thread_io, &tid);
	if (!tb) {
		struct thread_bytes init = {};
		bpf_map_update_elem(&thread_io, &tid, &init, BPF_NOEXIST);
		tb = bpf_map_lookup_elem(&thread_io, &tid);
		if (!tb)
			return;
	}
	if (sent)
		__sync_fetch_and_add(&tb->sent, (__u64)ret);
	else
		__sync_fetch_and_add(&tb->received, (__u64)ret);
}

// TP_PROTO(struct sock *sk, __s32 ret, int flags): ctx[1] is ret.
SEC("tp_btf/sock_send_length")
int sluice_send_length(__u64 *ctx)
{
	count_bytes((int)ctx[1], 1);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int sluice_recv_length(__u64 *ctx)
{
	count_bytes((int)ctx[1], 0);
	return 0;
}

// ---- sockops: bytes and RTT per TCP socket of sluice's cgroup ---------

struct sock_stats {
	__u64 bytes_acked;    // bytes sent and acknowledged by the peer
	__u64 bytes_received; // bytes received
	__u32 srtt_us;        // smoothed RTT in microseconds
	__u32 pad;
};

// Socket cookie -> latest counters, for live sockets. Not preallocated:
// kernel memory follows the live sockets (two per relayed connection),
// not the bound.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct sock_stats);
} socket_stats SEC(".maps");

// Totals of closed sockets (index 0), so live + closed stays exact while
// the per-socket map holds only live sockets.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sock_stats);
} closed_stats SEC(".maps");

static __always_inline void sock_update(struct bpf_sock_ops *skops, __u64 cookie)
{
	struct sock_stats st = {
		.bytes_acked = skops->bytes_acked,
		.bytes_received = skops->bytes_received,
		.srtt_us = skops->srtt_us >> 3, // the kernel keeps srtt << 3
	};
	bpf_map_update_elem(&socket_stats, &cookie, &st, BPF_ANY);
}

SEC("sockops")
int sluice_sockops(struct bpf_sock_ops *skops)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_RTT_CB_FLAG | BPF_SOCK_OPS_STATE_CB_FLAG);
		sock_update(skops, cookie);
		break;
	case BPF_SOCK_OPS_RTT_CB:
		sock_update(skops, cookie);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] != BPF_TCP_CLOSE) {
			sock_update(skops, cookie);
			break;
		}
		{
			__u32 zero = 0;
			struct sock_stats *c = bpf_map_lookup_elem(&closed_stats, &zero);
			if (c) {
				__sync_fetch_and_add(&c->bytes_acked, skops->bytes_acked);
				__sync_fetch_and_add(&c->bytes_received, skops->bytes_received);
			}
			bpf_map_delete_elem(&socket_stats, &cookie);
		}
		break;
	}
	return 1;
}
