package test

import (
	"runtime"
	"strings"
	"testing"
)

// checkNoPanic fails t when output looks like a Go panic or crash dump.
func checkNoPanic(t *testing.T, output string) {
	t.Helper()
	for _, s := range []string{"panic:", "goroutine "} {
		if strings.Contains(output, s) {
			t.Errorf("output contains %q:\n%s", s, output)
		}
	}
}

// TestCLIBadArguments checks that bad addresses and missing arguments end
// sluice with a non-zero status and an error, not a panic.
func TestCLIBadArguments(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		mention string // must appear on stderr; empty for no check
	}{
		{name: "bad listen address", args: []string{"forward", "nonsense::", "127.0.0.1:1"}, mention: "nonsense::"},
		{name: "bad upstream address", args: []string{"forward", "127.0.0.1:0", "nonsense::"}, mention: "nonsense::"},
		{name: "port out of range", args: []string{"forward", "tcp:127.0.0.1:99999", "127.0.0.1:1"}, mention: "99999"},
		{name: "missing upstream", args: []string{"forward", "127.0.0.1:0"}},
		{name: "no arguments", args: []string{"forward"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := runSluice(t, tt.args...)
			if res.code == 0 {
				t.Errorf("sluice %s: exit code 0, want non-zero", strings.Join(tt.args, " "))
			}
			if tt.mention != "" && !strings.Contains(res.stderr, tt.mention) {
				t.Errorf("stderr does not name %q:\n%s", tt.mention, res.stderr)
			}
			if strings.TrimSpace(res.stderr) == "" {
				t.Errorf("stderr is empty, want an error message")
			}
			checkNoPanic(t, res.stdout+res.stderr)
		})
	}
}

// TestCLIVersion checks that `sluice version` prints version, commit and
// GOOS/GOARCH on one line.
func TestCLIVersion(t *testing.T) {
	t.Parallel()
	res := runSluice(t, "version")
	if res.code != 0 {
		t.Fatalf("sluice version: exit code %d, want 0\nstderr:\n%s", res.code, res.stderr)
	}
	platform := runtime.GOOS + "/" + runtime.GOARCH
	for _, line := range strings.Split(res.stdout, "\n") {
		if strings.Contains(line, platform) {
			if f := strings.Fields(line); len(f) < 3 {
				t.Errorf("version line %q: %d fields, want version, commit and %s", line, len(f), platform)
			}
			return
		}
	}
	t.Errorf("sluice version: no line mentions %s\nstdout:\n%s", platform, res.stdout)
}

// TestCLIHelp checks that help exits 0 and documents forward.
func TestCLIHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"forward", "--help"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			t.Parallel()
			res := runSluice(t, args...)
			if res.code != 0 {
				t.Errorf("exit code: got %d, want 0", res.code)
			}
			if out := res.stdout + res.stderr; !strings.Contains(out, "forward") {
				t.Errorf("help does not mention forward:\n%s", out)
			}
			checkNoPanic(t, res.stdout+res.stderr)
		})
	}
}
