package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluice-proxy/sluice/pkg/config"
	"github.com/sluice-proxy/sluice/pkg/endpoint"
)

func TestCappedFileRotates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.log")
	f, err := openCapped(path, 100)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Repeat("a", 39) + "\n"
	for range 7 {
		if _, err := f.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	for file, want := range map[string]int{path: 40, path + ".1": 80} {
		b, err := os.ReadFile(file)
		if err != nil || len(b) != want {
			t.Errorf("%s: %d bytes, %v; want %d", file, len(b), err, want)
		}
	}
}

func TestMemGuard(t *testing.T) {
	g := newMemGuard()
	if err := g.admit(); err != nil {
		t.Fatalf("no cap: %v", err)
	}
	g.setLimit(1<<10, true) // far below any Go program; keep GOMEMLIMIT alone
	if err := g.admit(); err == nil || !strings.Contains(err.Error(), "max_memory is 1024") {
		t.Errorf("over the cap: %v", err)
	}
	g.setLimit(1<<40, true)
	if err := g.admit(); err != nil {
		t.Errorf("under the cap: %v", err)
	}
}

func TestSameForwardAndListenKey(t *testing.T) {
	addr := func(s string) endpoint.Addr { a, _ := endpoint.Parse(s); return a }
	base := config.Forward{Name: "a", Line: 3, Listen: addr(":80"), Upstreams: []endpoint.Addr{addr("10.0.0.1:80")}}
	renamed := base
	renamed.Name, renamed.Line = "b", 9
	if !sameForward(base, renamed) {
		t.Error("a renamed forward counts as changed")
	}
	changed := base
	changed.Upstreams = []endpoint.Addr{addr("10.0.0.2:80")}
	if sameForward(base, changed) {
		t.Error("a forward with a new upstream counts as the same")
	}
	withIf := base
	withIf.Interface = "eth0"
	if listenKey(base) == listenKey(withIf) || listenKey(base) != listenKey(changed) {
		t.Errorf("listen keys: %q %q %q", listenKey(base), listenKey(withIf), listenKey(changed))
	}
}
