package test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// freePort returns a TCP port on 127.0.0.1 below the ephemeral range that
// nothing listens on right now, from 25000-31999: the ports 23000-24999
// are the fixed ones of the HTTP tests (rate, accounting, cache).
func freePort(t testing.TB) int {
	t.Helper()
	for range 200 {
		port := 25000 + rand.IntN(7000)
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			ln.Close()
			return port
		}
	}
	t.Fatal("no free port in 20000-32000")
	return 0
}

// daemonConfig is a config file for `sluice run` in a test directory.
type daemonConfig struct {
	dir, path, socket string
	// global holds extra option lines for the global section.
	global string
}

func newDaemonConfig(t testing.TB) *daemonConfig {
	t.Helper()
	dir := shortTempDir(t)
	return &daemonConfig{dir: dir, path: filepath.Join(dir, "sluice.conf"), socket: filepath.Join(dir, "ctl.sock")}
}

// write replaces the config file with the global section (control socket
// and accounting directory in the test directory, two loops, debug off)
// followed by body.
func (c *daemonConfig) write(t testing.TB, body string) {
	t.Helper()
	text := fmt.Sprintf("config sluice 'main'\n\toption control_socket '%s'\n\toption accounting_dir '%s'\n\toption loops '2'\n\toption grace '2s'\n%s\n%s",
		c.socket, filepath.Join(c.dir, "acct"), c.global, body)
	// Written beside and renamed, as an editor or uci commit does, so a
	// reload never reads half a file.
	tmp := c.path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, c.path); err != nil {
		t.Fatal(err)
	}
}

// forwardSection renders a forward section.
func forwardSection(name, listen string, upstreams ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "config forward '%s'\n\toption listen '%s'\n", name, listen)
	for _, u := range upstreams {
		fmt.Fprintf(&b, "\tlist upstream '%s'\n", u)
	}
	return b.String() + "\n"
}

// daemonStats runs `sluice stats --json` against c and decodes it.
func daemonStats(t testing.TB, c *daemonConfig) map[string]any {
	t.Helper()
	res := runSluice(t, "stats", "-c", c.path, "--json")
	if res.code != 0 {
		t.Fatalf("sluice stats: exit %d\n%s", res.code, res.stderr)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(res.stdout), &st); err != nil {
		t.Fatalf("sluice stats --json: %v\n%s", err, res.stdout)
	}
	return st
}

// serviceStats returns the stats of the service called name.
func serviceStats(t testing.TB, st map[string]any, name string) map[string]any {
	t.Helper()
	svcs, _ := st["services"].([]any)
	for _, s := range svcs {
		m, _ := s.(map[string]any)
		if m["name"] == name {
			return m
		}
	}
	t.Fatalf("stats have no service %q: %v", name, st["services"])
	return nil
}

// resultFromAny waits for the backend side of transfer id on whichever of
// hbs served it.
func resultFromAny(ctx context.Context, id uint64, hbs ...*hashBackend) (sideResult, error) {
	for {
		for _, hb := range hbs {
			hb.mu.Lock()
			r, ok := hb.results[id]
			hb.mu.Unlock()
			if ok {
				return r, nil
			}
		}
		select {
		case <-ctx.Done():
			return sideResult{}, fmt.Errorf("no backend finished transfer %d: %w", id, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestReloadUnderLoad is the reload proof: 50 reloads through `sluice
// reload` (alternating valid and invalid configs; the valid ones switch
// the main service between two upstreams, one adds a service and a later
// one removes it) while 32 connections stream data both ways and a prober
// keeps opening new connections to the unchanged listener. Every stream
// must arrive byte-exact, no connection may be dropped and no new
// connection refused.
func TestReloadUnderLoad(t *testing.T) {
	const (
		streams = 32
		size    = 12 << 20 // per direction, read slowly at both ends
		reloads = 50
		addAt   = 10 // reload that adds the extra service
		dropAt  = 30 // reload that removes it
	)
	hbA := startHashBackend(t, "tcp", "127.0.0.1:0", 3*time.Minute)
	hbB := startHashBackend(t, "tcp", "127.0.0.1:0", 3*time.Minute)
	mainAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	extraAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg := newDaemonConfig(t)
	valid := func(gen int) string {
		ups := []string{hbA.upstream(), hbB.upstream()}
		if gen%4 == 2 {
			ups = ups[:1]
		}
		body := forwardSection("main", mainAddr, ups...)
		body += fmt.Sprintf("\toption connect_timeout '%ds'\n\n", 5+gen%3)
		if gen >= addAt && gen < dropAt {
			body += forwardSection("extra", extraAddr, hbB.upstream())
		}
		return body
	}
	invalid := []string{
		"config forward 'main'\n\toption listen '" + mainAddr + "\n",                                         // bad quoting
		forwardSection("main", mainAddr, hbA.upstream()) + "\toption idle_timeout 'soon'\n",                  // wrong type
		forwardSection("main", "127.0.0.1:99999", hbA.upstream()),                                            // bad port
		forwardSection("main", mainAddr) + "\n",                                                              // missing upstream
		forwardSection("main", mainAddr, hbA.upstream()) + forwardSection("main", extraAddr, hbA.upstream()), // duplicate name
	}
	cfg.write(t, valid(0))
	p := startSluice(t, "run", "-c", cfg.path)
	if p.addr != mainAddr {
		t.Fatalf("sluice listens on %s, want %s", p.addr, mainAddr)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	deadline, _ := ctx.Deadline()

	// The streams: both ends read slowly, so every stream is still moving
	// bytes while the reloads happen.
	var streamsWG sync.WaitGroup
	var finishedEarly atomic.Int32
	reloadsDone := make(chan struct{})
	for i := range streams {
		streamsWG.Add(1)
		go func() {
			defer streamsWG.Done()
			name := fmt.Sprintf("stream %d", i)
			hdr := transferHeader{ID: uint64(1000 + i), Up: size, Down: size, SlowRead: true}
			c, err := p.tryDial()
			if err != nil {
				t.Errorf("%s: dial: %v", name, err)
				return
			}
			defer c.Close()
			_ = c.SetDeadline(deadline)
			client := transfer(c, hdr, true, nil)
			select {
			case <-reloadsDone:
			default:
				finishedEarly.Add(1)
			}
			server, err := resultFromAny(ctx, hdr.ID, hbA, hbB)
			if err != nil {
				t.Errorf("%s: %v (client side: %v)", name, err, client.Err)
				return
			}
			checkTransfer(t, name, hdr, client, server)
		}()
	}
	// Wait until every stream reached a backend before reloading.
	waitCtx, waitCancel := context.WithTimeout(ctx, 20*time.Second)
	for hbA.accepted.Load()+hbB.accepted.Load() < streams {
		select {
		case <-waitCtx.Done():
			t.Fatalf("backends accepted %d of %d streams", hbA.accepted.Load()+hbB.accepted.Load(), streams)
		case <-time.After(10 * time.Millisecond):
		}
	}
	waitCancel()

	// The prober: new connections to the unchanged listener all along.
	var probes, refused atomic.Int64
	var probeErrs sync.Map
	stopProbe := make(chan struct{})
	var probeWG sync.WaitGroup
	probeWG.Add(1)
	go func() {
		defer probeWG.Done()
		for id := uint64(1 << 20); ; id++ {
			select {
			case <-stopProbe:
				return
			default:
			}
			c, err := net.DialTimeout("tcp", mainAddr, 2*time.Second)
			probes.Add(1)
			if err != nil {
				refused.Add(1)
				probeErrs.Store(err.Error(), true)
				continue
			}
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			hdr := transferHeader{ID: id, Up: 4096, Down: 4096}
			if res := transfer(c, hdr, false, nil); res.Err != nil || res.RecvN != hdr.Down {
				refused.Add(1)
				probeErrs.Store(fmt.Sprintf("probe transfer: got %d bytes: %v", res.RecvN, res.Err), true)
			}
			c.Close()
			time.Sleep(5 * time.Millisecond)
		}
	}()

	okReloads, rejected := 0, 0
	for gen := 1; gen <= reloads; gen++ {
		wantOK := gen%2 == 0 || gen == addAt || gen == dropAt
		if wantOK {
			cfg.write(t, valid(gen))
		} else {
			cfg.write(t, invalid[gen%len(invalid)])
		}
		res := runSluice(t, "reload", "-c", cfg.path)
		switch {
		case wantOK && res.code != 0:
			t.Fatalf("reload %d (valid): exit %d\n%s", gen, res.code, res.stderr)
		case !wantOK && (res.code != 1 || !strings.Contains(res.stderr, cfg.path+":")):
			t.Fatalf("reload %d (invalid): exit %d, want 1 with file:line errors\n%s", gen, res.code, res.stderr)
		}
		if wantOK {
			okReloads++
		} else {
			rejected++
		}
		switch gen {
		case addAt:
			c, err := net.DialTimeout("tcp", extraAddr, 2*time.Second)
			if err != nil {
				t.Fatalf("reload %d added service extra, but dialing it failed: %v", gen, err)
			}
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			hdr := transferHeader{ID: 999, Up: 1 << 20, Down: 1 << 20}
			client := transfer(c, hdr, false, nil)
			c.Close()
			server, err := hbB.result(ctx, hdr.ID)
			if err != nil {
				t.Fatal(err)
			}
			checkTransfer(t, "added service", hdr, client, server)
		case dropAt:
			if c, err := net.DialTimeout("tcp", extraAddr, 2*time.Second); err == nil {
				c.Close()
				t.Errorf("reload %d removed service extra, but %s still accepts", gen, extraAddr)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(reloadsDone)
	close(stopProbe)
	probeWG.Wait()
	streamsWG.Wait()

	if n := refused.Load(); n != 0 {
		var msgs []string
		probeErrs.Range(func(k, _ any) bool { msgs = append(msgs, k.(string)); return true })
		t.Errorf("%d of %d probe connections to the unchanged listener failed: %q", n, probes.Load(), msgs)
	}
	if n := finishedEarly.Load(); n > 0 {
		t.Logf("note: %d streams finished before the last reload", n)
	}
	t.Logf("%d reloads applied, %d rejected, %d probe connections, %d streams of %d MiB each way",
		okReloads, rejected, probes.Load(), streams, size>>20)
	st := daemonStats(t, cfg)
	if int(st["reloads"].(float64)) != okReloads || int(st["rejected_reloads"].(float64)) != rejected {
		t.Errorf("stats say %v reloads and %v rejected, want %d and %d", st["reloads"], st["rejected_reloads"], okReloads, rejected)
	}
	m := serviceStats(t, st, "main")
	if acc := int64(m["accepted"].(float64)); acc < streams+probes.Load()-refused.Load() {
		t.Errorf("main accepted %d connections, want at least %d", acc, streams+probes.Load())
	}
	if n := len(p.stderr.matching("msg=\"reload rejected")); n != rejected {
		t.Errorf("%d 'reload rejected' log lines, want %d", n, rejected)
	}
	if lines := p.stderr.matching("msg=listening", "forward=main"); len(lines) != 1 {
		t.Errorf("main listened %d times, want once (the listener must be kept):\n%s", len(lines), strings.Join(lines, "\n"))
	}
}
