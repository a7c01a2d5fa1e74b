package test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/mdlayher/vsock"
)

// TestDaemonStatsVsockCID checks `sluice stats` shows the machine's vsock
// context ID where the machine has one (a VM guest with a vsock device).
// Reading it is an ioctl on /dev/vsock; no AF_VSOCK connection is made.
func TestDaemonStatsVsockCID(t *testing.T) {
	if _, err := os.Stat("/dev/vsock"); err != nil {
		t.Skip("no /dev/vsock: this machine has no vsock transport, so no CID to show")
	}
	want, err := vsock.ContextID() // the oracle: mdlayher/vsock's own ioctl
	if err != nil {
		t.Skipf("this machine has no vsock CID of its own: %v", err)
	}
	echoB := startEcho(t)
	cfg := newDaemonConfig(t)
	cfg.write(t, forwardSection("web", fmt.Sprintf("127.0.0.1:%d", freePort(t)), echoB.upstream()))
	startSluice(t, "run", "-c", cfg.path)
	st := daemonStats(t, cfg)
	cid, _ := st["vsock_cid"].(float64)
	if uint32(cid) != want {
		t.Fatalf("stats vsock_cid = %v, want this machine's CID %d", st["vsock_cid"], want)
	}
	text := runSluice(t, "stats", "-c", cfg.path)
	if want := fmt.Sprintf("vsock: local CID %d", int(cid)); !strings.Contains(text.stdout, want) {
		t.Errorf("sluice stats says:\n%s\nwant %q", text.stdout, want)
	}
}
