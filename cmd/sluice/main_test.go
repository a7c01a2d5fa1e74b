package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRunCommandLine(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantStatus int
		wantOut    string // in stdout
		wantErr    string // in stderr
	}{
		{"no args", nil, 2, "", "Commands:"},
		{"help", []string{"help"}, 0, "forward", ""},
		{"--help", []string{"--help"}, 0, "sluice forward", ""},
		{"help forward", []string{"help", "forward"}, 0, "", "Usage: sluice forward"},
		{"forward --help", []string{"forward", "--help"}, 0, "", "--connect-timeout"},
		{"version", []string{"version"}, 0, "commit", ""},
		{"unknown command", []string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{"forward no args", []string{"forward"}, 2, "", "want LISTEN and UPSTREAM, got 0 arguments"},
		{"forward bad listen", []string{"forward", "nonsense::", "127.0.0.1:1"}, 2, "", `LISTEN: bad address "nonsense::"`},
		{"forward bad upstream", []string{"forward", ":0", "host:http"}, 2, "", `UPSTREAM: bad address "host:http": port "http" is not a number`},
		{"forward bad flag", []string{"forward", "--loops", "many", ":0", ":1"}, 2, "", "invalid value"},
		{"forward zero loops", []string{"forward", "--loops", "0", ":0", ":1"}, 2, "", "--loops 0: want at least 1"},
		{"forward bad log level", []string{"forward", "--log-level", "loud", ":0", ":1"}, 2, "", `--log-level "loud"`},
		{"forward negative", []string{"forward", "--idle-timeout", "-1s", ":0", ":1"}, 2, "", "negative"},
		{"help run", []string{"help", "run"}, 0, "", "Usage: sluice run [-c FILE]"},
		{"stats --help", []string{"stats", "--help"}, 0, "", "--json"},
		{"check extra argument", []string{"check", "-c", "x.conf", "extra"}, 2, "", `unexpected argument "extra"`},
		{"check missing file", []string{"check", "-c", "/nonexistent.conf"}, 1, "", "read config: open /nonexistent.conf"},
		{"check bad file", []string{"check", "-c", "testdata/bad.conf"}, 1, "", "testdata/bad.conf:3: forward 'web': option 'max_conns'"},
		{"check good file", []string{"check", "-c", "testdata/good.conf"}, 0, "forward 'web': tcp:127.0.0.1:8080 -> tcp:10.0.0.1:80", ""},
		{"run bad file", []string{"run", "-c", "testdata/bad.conf"}, 1, "", "1 error(s) in the config"},
		{"stats without daemon", []string{"stats", "-c", "testdata/good.conf"}, 1, "", "testdata/ctl.sock"},
		{"forward unsupported scheme", []string{"forward", "udp:1.2.3.4:53", ":1"}, 2, "", "udp endpoints are not supported yet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			status := run(tt.args, &out, &errOut)
			if status != tt.wantStatus {
				t.Errorf("status %d, want %d (stderr: %s)", status, tt.wantStatus, errOut.String())
			}
			if !strings.Contains(out.String(), tt.wantOut) {
				t.Errorf("stdout %q does not contain %q", out.String(), tt.wantOut)
			}
			if !strings.Contains(errOut.String(), tt.wantErr) {
				t.Errorf("stderr %q does not contain %q", errOut.String(), tt.wantErr)
			}
		})
	}
}

func TestParseArgsInterleaved(t *testing.T) {
	var f forwardFlags
	fs := newForwardFlags(&f, &bytes.Buffer{})
	pos, err := parseArgs(fs, []string{"--loops", "3", "a:1", "--max-conns=7", "b:2", "--", "--c"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(pos, " ") != "a:1 b:2 --c" || f.loops != 3 || f.maxConns != 7 {
		t.Fatalf("got positional %q, loops %d, max-conns %d; want \"a:1 b:2 --c\", 3, 7", pos, f.loops, f.maxConns)
	}
}
