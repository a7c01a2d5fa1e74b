package test

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestDaemonAutotune runs `sluice run` with the default autotune on,
// streams bulk data through a forward and checks through `sluice stats`
// that telemetry names its source, the tuner stepped while bytes moved,
// and went to sleep (no timer) once the traffic stopped.
func TestDaemonAutotune(t *testing.T) {
	sink := startBackend(t, "tcp", "127.0.0.1:0", func(c net.Conn) { io.Copy(io.Discard, c) })
	cfg := newDaemonConfig(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.write(t, forwardSection("bulk", addr, sink.upstream()))
	startSluice(t, "run", "-c", cfg.path)

	st := daemonStats(t, cfg)
	if src, _ := st["telemetry"].(string); src == "" {
		t.Errorf("stats name no telemetry source: %v", st)
	}
	tuner, _ := st["autotune"].(map[string]any)
	if tuner == nil || tuner["sleeping"] != true {
		t.Fatalf("before any traffic the tuner should be asleep: %v", st["autotune"])
	}

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 256<<10)
	for end := time.Now().Add(2500 * time.Millisecond); time.Now().Before(end); {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	tuner, _ = daemonStats(t, cfg)["autotune"].(map[string]any)
	if steps, _ := tuner["steps"].(float64); steps < 1 || tuner["sleeping"] != false {
		t.Fatalf("after 2.5 s of traffic: %v, want steps taken and the tuner awake", tuner)
	}
	c.Close()

	deadline := time.Now().Add(10 * time.Second)
	for {
		tuner, _ = daemonStats(t, cfg)["autotune"].(map[string]any)
		if tuner["sleeping"] == true {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tuner still awake 10 s after traffic stopped: %v", tuner)
		}
		time.Sleep(200 * time.Millisecond)
	}
	text := runSluice(t, "stats", "-c", cfg.path)
	if !strings.Contains(text.stdout, "autotune: asleep (no traffic)") || !strings.Contains(text.stdout, "telemetry: ") {
		t.Errorf("sluice stats says:\n%s\nwant the telemetry source and the tuner asleep", text.stdout)
	}
}
