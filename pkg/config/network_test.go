package config

import "testing"

func TestDeviceOf(t *testing.T) {
	tests := []struct {
		logical, want string
		ok            bool
	}{
		{"lan", "br-lan", true},
		{"wan", "pppoe-wan", true},
		{"guest", "br-guest", true},
		{"iot", "eth0.5", true},
		{"loopback", "lo", true},
		{"wan6", "pppoe-wan", true},
		{"missing", "", false},
	}
	for _, tt := range tests {
		got, ok := DeviceOf(tt.logical, "testdata/network")
		if got != tt.want || ok != tt.ok {
			t.Errorf("DeviceOf(%q) = %q, %v; want %q, %v", tt.logical, got, ok, tt.want, tt.ok)
		}
	}
	if _, ok := DeviceOf("lan", "testdata/nonexistent"); ok {
		t.Error("DeviceOf with no network file found a device")
	}
}
