package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigCheckErrors runs `sluice check` and `sluice run` on broken
// files: each must exit 1 naming FILE:LINE and the option, never panic,
// and run must not start.
func TestConfigCheckErrors(t *testing.T) {
	const head = "config sluice 'main'\n\toption loops '1'\n\nconfig forward 'web'\n\toption listen '127.0.0.1:8080'\n"
	tests := []struct {
		name string
		body string
		want []string // substrings of stderr; FILE is replaced by the path
	}{
		{"bad quoting", head + "\tlist upstream '10.0.0.1:80\n", []string{"FILE:6: forward 'web': unterminated ' quote"}},
		{"unknown option", head + "\tlist upstream '10.0.0.1:80'\n\toption listn ':1'\n", []string{"FILE:7: forward 'web': option 'listn': unknown option"}},
		{"bad port", "config forward 'web'\n\toption listen ':70000'\n\tlist upstream 'a:1'\n", []string{"FILE:2: forward 'web': option 'listen': bad address \":70000\""}},
		{"duplicate name", head + "\tlist upstream 'a:1'\nconfig forward 'web'\n\toption listen ':9'\n\tlist upstream 'a:1'\n",
			[]string{"FILE:7: forward 'web': duplicate name: forward 'web' is already defined on line 4"}},
		{"wrong type", head + "\tlist upstream 'a:1'\n\toption max_conns 'lots'\n", []string{"FILE:7: forward 'web': option 'max_conns': \"lots\": want a whole number"}},
		{"missing upstream", head, []string{"FILE:4: forward 'web': option 'upstream': missing"}},
		{"bad global", "config sluice 'main'\n\toption log_level 'chatty'\n\toption max_memory 'lots'\n",
			[]string{"FILE:2: sluice 'main': option 'log_level'", "FILE:3: sluice 'main': option 'max_memory'", "2 error(s)"}},
	}
	dir := t.TempDir()
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "c"+string(rune('a'+i))+".conf")
			if err := os.WriteFile(path, []byte(tt.body), 0o644); err != nil {
				t.Fatal(err)
			}
			for _, cmd := range []string{"check", "run"} {
				res := runSluice(t, cmd, "-c", path)
				if res.code != 1 {
					t.Errorf("sluice %s: exit %d, want 1\nstderr:\n%s", cmd, res.code, res.stderr)
				}
				for _, w := range tt.want {
					if w = strings.ReplaceAll(w, "FILE", path); !strings.Contains(res.stderr, w) {
						t.Errorf("sluice %s: stderr does not contain %q:\n%s", cmd, w, res.stderr)
					}
				}
				checkNoPanic(t, res.stdout+res.stderr)
			}
		})
	}
}

// TestConfigCheckSummary checks that a good file gives exit 0 and a
// summary of what would run.
func TestConfigCheckSummary(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sluice.conf")
	body := "config sluice 'main'\n\toption max_memory '24M'\n\nconfig forward 'web'\n\toption listen ':8080'\n" +
		"\tlist upstream '192.168.1.10:80'\n\tlist upstream '192.168.1.11:80'\n\toption balance 'least_conns'\n\n" +
		"config forward 'old'\n\toption enabled '0'\n\toption listen ':1'\n\tlist upstream 'a:1'\n"
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	res := runSluice(t, "check", "-c", path)
	if res.code != 0 {
		t.Fatalf("sluice check: exit %d\n%s", res.code, res.stderr)
	}
	for _, w := range []string{path + ": OK", "max_memory 25165824", "forward 'web': tcp::8080 -> tcp:192.168.1.10:80, tcp:192.168.1.11:80 (least_conns)", "forward 'old': disabled"} {
		if !strings.Contains(res.stdout, w) {
			t.Errorf("summary does not contain %q:\n%s", w, res.stdout)
		}
	}
}

// TestConfigMissingFile checks the message for a config file that does
// not exist.
func TestConfigMissingFile(t *testing.T) {
	res := runSluice(t, "check", "-c", "/nonexistent/sluice.conf")
	if res.code != 1 || !strings.Contains(res.stderr, "/nonexistent/sluice.conf") || !strings.Contains(res.stderr, "-c FILE") {
		t.Errorf("exit %d, stderr %q: want 1 naming the file and -c FILE", res.code, res.stderr)
	}
}
