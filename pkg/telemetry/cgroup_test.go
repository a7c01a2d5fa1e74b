//go:build !nobpf

package telemetry

import "testing"

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
