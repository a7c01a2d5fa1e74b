package ratelog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestLoggerSuppressesRepeats(t *testing.T) {
	var out bytes.Buffer
	l := &Logger{Out: slog.New(slog.NewTextHandler(&out, nil)), Interval: 200 * time.Millisecond}
	for range 5 {
		l.Log(slog.LevelWarn, "upstream connect failed", "err", "refused")
	}
	l.Log(slog.LevelWarn, "accept failed") // another message is not held back
	time.Sleep(250 * time.Millisecond)
	l.Log(slog.LevelWarn, "upstream connect failed", "err", "refused")

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d lines, want 3:\n%s", len(lines), out.String())
	}
	if strings.Contains(lines[0], "suppressed") {
		t.Errorf("first line reports suppressed records: %s", lines[0])
	}
	if !strings.Contains(lines[1], `msg="accept failed"`) {
		t.Errorf("second line %q, want the other message", lines[1])
	}
	if !strings.Contains(lines[2], "suppressed=4") {
		t.Errorf("third line %q, want suppressed=4", lines[2])
	}
}
