package config

import (
	"log/slog"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluice-proxy/sluice/pkg/endpoint"
)

func TestParseFull(t *testing.T) {
	data, err := os.ReadFile("testdata/full.conf")
	if err != nil {
		t.Fatal(err)
	}
	cfg, errs := Parse("full.conf", data)
	if errs != nil {
		t.Fatalf("Parse: %v", errs)
	}
	wantGlobal := Global{
		Loops: 2, LogLevel: slog.LevelDebug, Log: "/var/log/sluice.log", LogSize: 256 << 10,
		ControlSocket: "/var/run/sluice.sock", User: "nobody", Group: "nogroup", MaxMemory: 24 << 20,
		MaxPipes: 64, PipeSize: 256 << 10, Grace: 5 * time.Second, Line: 4,
		Accounting:  Accounting{Enabled: true, Dir: DefaultAccountingDir, Interval: DefaultAccountingInterval},
		TuneMinPipe: 32 << 10, TuneMaxPipe: 512 << 10, TuneMinLoops: 1, TuneMaxLoops: 2, Telemetry: "proc",
	}
	if cfg.Global != wantGlobal {
		t.Errorf("global:\n got %+v\nwant %+v", cfg.Global, wantGlobal)
	}
	mustAddr := func(s string) endpoint.Addr {
		a, err := endpoint.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	want := []Forward{
		{Name: "web", Line: 23, Listen: mustAddr(":8080"), Upstreams: []endpoint.Addr{mustAddr("192.168.1.10:80"), mustAddr("192.168.1.11:80")},
			Balance: LeastConns, ConnectTimeout: 3 * time.Second, IdleTimeout: 10 * time.Minute, MaxConns: 512,
			Allow: []string{"192.168.1.0/24:80"}},
		{Name: "ssh", Line: 33, Listen: mustAddr(":2222"), Interface: "br-lan", Upstreams: []endpoint.Addr{mustAddr("10.0.0.5:22")},
			Balance: RoundRobin, ConnectTimeout: DefaultConnect},
	}
	if !reflect.DeepEqual(cfg.Forwards, want) {
		t.Errorf("forwards:\n got %+v\nwant %+v", cfg.Forwards, want)
	}
	if !reflect.DeepEqual(cfg.Disabled, []string{"off"}) {
		t.Errorf("disabled = %q, want [off]", cfg.Disabled)
	}
}

func TestParseDefaults(t *testing.T) {
	cfg, errs := Parse("x", []byte("config forward\n option listen 127.0.0.1:1\n list upstream h:2\n"))
	if errs != nil {
		t.Fatal(errs)
	}
	g := cfg.Global
	if g.Log != "stderr" || g.LogLevel != slog.LevelInfo || g.ControlSocket != DefaultControlSocket || g.Grace != DefaultGrace || g.LogSize != DefaultLogSize || !g.Autotune || g.Telemetry != "auto" {
		t.Errorf("defaults: %+v", g)
	}
	if f := cfg.Forwards[0]; f.Name != "forward_line1" || f.ConnectTimeout != DefaultConnect || f.Balance != RoundRobin {
		t.Errorf("forward defaults: %+v", f)
	}
}

func TestSplitWords(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{`option a 'b c'`, []string{"option", "a", "b c"}},
		{`option a "b\"c\\d"`, []string{"option", "a", `b"c\d`}},
		{`option a 'x\n'`, []string{"option", "a", `x\n`}},
		{`option a b\ c`, []string{"option", "a", "b c"}},
		{`option a 'x'"y"z`, []string{"option", "a", "xyz"}},
		{`option a ''`, []string{"option", "a", ""}},
		{`option a 'b#c' # comment`, []string{"option", "a", "b#c"}},
		{`option a b#c`, []string{"option", "a", "b"}},
		{"\t  # only a comment", nil},
		{"option\ta\t\"\"\r", []string{"option", "a", ""}},
	}
	for _, tt := range tests {
		got, err := splitWords(tt.in)
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("splitWords(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// TestParseErrors is the table of broken files: each must give an error
// at the right line naming the option, and never a config.
func TestParseErrors(t *testing.T) {
	const head = "config forward 'web'\n\toption listen ':8080'\n"
	tests := []struct {
		name string
		in   string
		want []string // each in the error text, in order, one per error
	}{
		{"bad allow rule", head + "\tlist upstream '1.2.3.4:80'\n\tlist allow '10.0.0.0/33:80'\n", []string{"f.conf:4: forward 'web': option 'allow'"}},
		{"bad quoting", "config forward 'web'\n\toption listen ':8080\n\tlist upstream '1.2.3.4:80'\n",
			[]string{`f.conf:2: forward 'web': unterminated ' quote`}},
		{"unterminated double quote", head + "\tlist upstream \"1.2.3.4:80\n",
			[]string{`f.conf:3: forward 'web': unterminated " quote`}},
		{"unknown option", head + "\tlist upstream '1.2.3.4:80'\n\toption listne ':1'\n",
			[]string{`f.conf:4: forward 'web': option 'listne': unknown option for a forward section; known: allow, balance, connect_timeout`}},
		{"unknown section", "config frobnicate 'x'\n", []string{`f.conf:1: frobnicate 'x': unknown section type "frobnicate"`}},
		{"bad port", "config forward 'web'\n\toption listen ':99999'\n\tlist upstream '1.2.3.4:80'\n",
			[]string{`f.conf:2: forward 'web': option 'listen': bad address ":99999": port "99999" is not a number`}},
		{"upstream port 0", head + "\tlist upstream '1.2.3.4:0'\n",
			[]string{`f.conf:3: forward 'web': option 'upstream': "1.2.3.4:0": port 0 cannot be connected to`}},
		{"duplicate name", head + "\tlist upstream 'a:1'\nconfig forward 'web'\n\toption listen ':1'\n\tlist upstream 'a:1'\n",
			[]string{`f.conf:4: forward 'web': duplicate name: forward 'web' is already defined on line 1`}},
		{"duplicate listen", head + "\tlist upstream 'a:1'\nconfig forward 'two'\n\toption listen ':8080'\n\tlist upstream 'a:1'\n",
			[]string{`f.conf:4: forward 'two': option 'listen': tcp::8080 is already the listen address of forward 'web' (line 1)`}},
		{"wrong type int", head + "\tlist upstream 'a:1'\n\toption max_conns 'many'\n",
			[]string{`f.conf:4: forward 'web': option 'max_conns': "many": want a whole number from 0 to`}},
		{"wrong type duration", head + "\tlist upstream 'a:1'\n\toption idle_timeout 'soon'\n",
			[]string{`f.conf:4: forward 'web': option 'idle_timeout': "soon": want a duration`}},
		{"list for an option", head + "\tlist upstream 'a:1'\n\tlist max_conns '1'\n",
			[]string{"f.conf:4: forward 'web': option 'max_conns': takes one value: write `option max_conns`"}},
		{"missing upstream", head, []string{`f.conf:1: forward 'web': option 'upstream': missing: add at least one`}},
		{"missing listen", "config forward 'web'\n\tlist upstream 'a:1'\n", []string{`f.conf:1: forward 'web': option 'listen': missing`}},
		{"option set twice", head + "\tlist upstream 'a:1'\n\toption listen ':1'\n",
			[]string{`f.conf:4: forward 'web': option 'listen': option "listen" is set twice (first on line 2)`}},
		{"option outside section", "option loops 2\n", []string{`f.conf:1: option 'loops': option outside a config section`}},
		{"too many values", head + "\tlist upstream a:1 b:2\n",
			[]string{`f.conf:3: forward 'web': option 'upstream': list has 2 values, want one`}},
		{"unknown statement", "confg sluice 'main'\n", []string{`f.conf:1: unknown statement "confg"`}},
		{"bad log level", "config sluice 'main'\n\toption log_level 'loud'\n",
			[]string{`f.conf:2: sluice 'main': option 'log_level': "loud": want debug, info, warn or error`}},
		{"bad size", "config sluice 'main'\n\toption max_memory '24Q'\n",
			[]string{`f.conf:2: sluice 'main': option 'max_memory': "24Q": want a size`}},
		{"two globals", "config sluice 'main'\nconfig sluice 'other'\n",
			[]string{`f.conf:2: sluice 'other': more than one sluice section`}},
		{"interface with host", "config forward 'web'\n\toption listen '10.0.0.1:80'\n\toption interface 'eth0'\n\tlist upstream 'a:1'\n",
			[]string{`f.conf:2: forward 'web': option 'listen': with option interface, give only the port (':80')`}},
		{"bad section name", "config forward 'a-b'\n", []string{`f.conf:1: forward 'a-b': section name "a-b"`}},
		{"several errors in order", "config sluice 'main'\n\toption loops 'x'\n\toption log 'relative'\n",
			[]string{`f.conf:2:`, `f.conf:3:`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantErrors(t, tt.in, tt.want)
		})
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "512": 512, "4K": 4096, "24M": 24 << 20, "1g": 1 << 30} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "M", "-1K", "1T", "99999999999G"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) succeeded, want an error", in)
		}
	}
}

// FuzzParse checks that no input makes the parser panic, that every error
// names the file and a line within it, and that a config comes only
// without errors.
func FuzzParse(f *testing.F) {
	data, err := os.ReadFile("testdata/full.conf")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(data))
	f.Fuzz(func(t *testing.T, in string) {
		cfg, errs := Parse("fuzz.conf", []byte(in))
		if (cfg == nil) == (errs == nil) {
			t.Fatalf("Parse returned config %v and errors %v: want exactly one", cfg != nil, errs)
		}
		lines := strings.Count(in, "\n") + 1
		for _, e := range errs {
			if !strings.HasPrefix(e.Error(), "fuzz.conf:") || e.Line < 1 || e.Line > lines+1 {
				t.Fatalf("error %q: line %d outside the file's %d lines", e.Error(), e.Line, lines)
			}
		}
	})
}

// wantErrors parses in as f.conf and checks that it fails with exactly
// the errors want, in order (each a substring of its error).
func wantErrors(t *testing.T, in string, want []string) {
	t.Helper()
	cfg, errs := Parse("f.conf", []byte(in))
	if cfg != nil {
		t.Fatalf("Parse returned a config, want errors %q", want)
	}
	if len(errs) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(errs), len(want), errs)
	}
	for i, w := range want {
		if !strings.Contains(errs[i].Error(), w) {
			t.Errorf("error %d = %q, want it to contain %q", i, errs[i].Error(), w)
		}
	}
}
