package test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestIntegrationDaemonSyslog runs `sluice run` with `option log 'syslog'`
// in a private mount namespace whose /run is a test directory holding a
// datagram socket at /run/log (a syslog path Go's log/syslog tries), and
// checks the daemon's records arrive there with the daemon facility.
func TestIntegrationDaemonSyslog(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a private mount namespace")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare (util-linux)")
	}
	if _, err := os.Stat("/dev/log"); err == nil {
		t.Skip("/dev/log exists: log/syslog would write there first")
	}
	dir := shortTempDir(t)
	logSock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "log"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer logSock.Close()

	echoB := startEcho(t)
	cfg := newDaemonConfig(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.global = "\toption log 'syslog'\n"
	cfg.write(t, forwardSection("web", addr, echoB.upstream()))
	// /run is the test directory inside the namespace; exec keeps the PID.
	wrap := []string{"unshare", "-m", "--", "sh", "-c", `mount --bind "$0" /run && exec "$@"`, dir}
	spawnSluice(t, wrap, "run", "-c", cfg.path)

	var got []string
	buf := make([]byte, 4096)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(strings.Join(got, "\n"), "msg=running") {
		logSock.SetReadDeadline(deadline)
		n, _, err := logSock.ReadFrom(buf)
		if err != nil {
			t.Fatalf("syslog records so far %q: %v", got, err)
		}
		got = append(got, string(buf[:n]))
	}
	// <30> is facility daemon (3) and severity info (6); the tag is sluice.
	first := got[0]
	if !strings.HasPrefix(first, "<30>") || !strings.Contains(first, "sluice[") {
		t.Errorf("syslog record %q: want priority <30> (daemon.info) and the tag sluice[PID]", first)
	}
	if err := roundTrip(addr); err != nil {
		t.Fatalf("forward while logging to syslog: %v", err)
	}
}
