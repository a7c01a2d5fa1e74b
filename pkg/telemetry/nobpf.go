//go:build nobpf

package telemetry

// openKernel in a build without eBPF: only /proc and the relays' counters.
func openKernel(Config, int) (kernelSource, []string) {
	return nil, []string{"built with the nobpf tag"}
}
