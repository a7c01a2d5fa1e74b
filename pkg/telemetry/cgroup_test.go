//go:build !nobpf

package telemetry

import (
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf"
)

func TestParseCgroup2Mount(t *testing.T) {
	tests := []struct {
		name string
		line string
		want string
		ok   bool
	}{
		{"hybrid", "35 25 0:30 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate", "/sys/fs/cgroup/unified", true},
		{"pure v2", "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw", "/sys/fs/cgroup", true},
		{"v1 controller", "36 25 0:31 / /sys/fs/cgroup/cpu rw,relatime shared:11 - cgroup cgroup rw,cpu", "", false},
		{"proc", "22 27 0:21 / /proc rw,nosuid - proc proc rw", "", false},
		{"garbage", "cgroup2", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseCgroup2Mount(tt.line)
			if got != tt.want || ok != tt.ok {
				t.Errorf("parseCgroup2Mount(%q) = %q, %v; want %q, %v", tt.line, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestEmbeddedObject parses the object embedded for this architecture's
// byte order (bpfeb on mips) without the kernel, so a stale or wrong-endian
// object fails everywhere, qemu-user included.
func TestEmbeddedObject(t *testing.T) {
	spec, err := loadTelemetry()
	if err != nil {
		t.Fatal(err)
	}
	if b := []byte{1, 0}; spec.ByteOrder.Uint16(b) != binary.NativeEndian.Uint16(b) {
		t.Errorf("embedded object is %v, this machine %v", spec.ByteOrder, binary.NativeEndian)
	}
	want := map[string]ebpf.ProgramType{
		"sluice_sched_runtime": ebpf.Tracing,
		"sluice_sched_switch":  ebpf.RawTracepoint,
		"sluice_send_length":   ebpf.Tracing,
		"sluice_recv_length":   ebpf.Tracing,
		"sluice_sockops":       ebpf.SockOps,
	}
	for name, typ := range want {
		p, ok := spec.Programs[name]
		if !ok {
			t.Errorf("program %s missing", name)
			continue
		}
		if p.Type != typ {
			t.Errorf("program %s is %v, want %v", name, p.Type, typ)
		}
	}
	if _, ok := spec.Variables["target_tgid"]; !ok {
		t.Error("variable target_tgid missing")
	}
}
