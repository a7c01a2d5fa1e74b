package control

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRequestAnswer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	s, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Serve(func(cmd string) Response {
		if cmd == CmdStats {
			return Response{OK: true, Stats: []byte(`{"loops":2}`)}
		}
		return Response{Errors: []string{"unknown " + cmd}}
	})
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, %v; want 0600", fi.Mode(), err)
	}
	tests := []struct {
		cmd    string
		wantOK bool
		want   string
	}{
		{CmdStats, true, `{"loops":2}`},
		{"frob", false, "unknown frob"},
	}
	for _, tt := range tests {
		resp, err := Request(path, tt.cmd)
		if err != nil {
			t.Fatal(err)
		}
		got := string(resp.Stats) + strings.Join(resp.Errors, "")
		if resp.OK != tt.wantOK || got != tt.want {
			t.Errorf("Request(%q) = %+v, want ok %v and %q", tt.cmd, resp, tt.wantOK, tt.want)
		}
	}
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "another sluice is running") {
		t.Errorf("second Listen on a live socket: %v", err)
	}
	s.Close()
	if _, err := os.Stat(path); err == nil {
		t.Error("socket file left after Close")
	}
	if _, err := Request(path, CmdStats); err == nil || !strings.Contains(err.Error(), "is sluice running") {
		t.Errorf("Request with no daemon: %v", err)
	}
}
