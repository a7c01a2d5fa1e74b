package test

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// parallelDo runs f(i) for i in [0, n) on workers goroutines. It stops
// handing out work after the first error, so that a broken sluice fails
// the test quickly, and returns how many calls ran and the first error.
func parallelDo(n, workers int, f func(i int) error) (ran int, first error) {
	var (
		mu     sync.Mutex
		wg     sync.WaitGroup
		next   = make(chan int)
		failed atomic.Bool
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				err := f(i)
				mu.Lock()
				ran++
				if err != nil && first == nil {
					first = err
					failed.Store(true)
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < n && !failed.Load(); i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return ran, first
}

// TestManyIdleConnections opens 4,000 connections through sluice with
// --loops 2, checks that every one still relays after all are open, and that
// sluice keeps to its event loops instead of a thread per connection.
func TestManyIdleConnections(t *testing.T) {
	const (
		n         = 4000
		loops     = 2
		threadCap = 2*loops + 8
	)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur < 2*n+500 {
		t.Skipf("skipped: RLIMIT_NOFILE of the test process is %d, want at least %d for %d client and %d backend sockets", lim.Cur, 2*n+500, n, n)
	}
	b := startEcho(t)
	p := startSluice(t, "forward", "--loops", fmt.Sprint(loops), "127.0.0.1:0", b.upstream())

	checkThreads := func(when string) {
		t.Helper()
		got, err := procThreads(p.pid())
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		if got >= threadCap {
			t.Errorf("%s: sluice has %d threads, want < %d (2 x --loops %d + 8)", when, got, threadCap, loops)
		} else {
			t.Logf("%s: sluice has %d threads", when, got)
		}
	}

	conns := make([]net.Conn, n)
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	start := time.Now()
	if ran, err := parallelDo(n, 32, func(i int) error {
		c, err := p.tryDial()
		if err != nil {
			return fmt.Errorf("dial %d: %w", i, err)
		}
		conns[i] = c
		return nil
	}); err != nil {
		t.Fatalf("dialing %d connections: %v (after %d dials)", n, err, ran)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.waitAccepted(ctx, n); err != nil {
		t.Fatalf("sluice did not connect every client upstream: %v", err)
	}
	t.Logf("%d connections open end to end after %v", n, time.Since(start).Round(time.Millisecond))
	if fds, err := procFDs(p.pid()); err == nil {
		t.Logf("sluice holds %d file descriptors", fds)
	}
	checkThreads(fmt.Sprintf("with %d idle connections", n))

	if ran, err := parallelDo(n, 32, func(i int) error {
		payload := binary.BigEndian.AppendUint64([]byte("conn"), uint64(i))
		if err := echoRoundTrip(conns[i], payload, 10*time.Second); err != nil {
			return fmt.Errorf("conn %d: %w", i, err)
		}
		return nil
	}); err != nil {
		t.Errorf("with %d connections open: %v (after %d echoes)", n, err, ran)
	}
	checkThreads(fmt.Sprintf("after echoing on %d connections", n))
}

// TestIntegrationFdExhaustion runs sluice with a 64-file limit, opens
// connections until sluice turns new ones away, keeps knocking for 2 s, and
// checks that sluice neither spins (CPU time) nor breaks the connections it
// already has.
func TestIntegrationFdExhaustion(t *testing.T) {
	const (
		maxTries  = 200
		knockFor  = 2 * time.Second
		knockGap  = 10 * time.Millisecond
		cpuBudget = 30 // clock ticks: 0.3 s
		maxLogged = 10
	)
	prlimit := requireTool(t, "prlimit", "util-linux")
	b := startEcho(t)
	p := startSluiceWrapped(t, []string{prlimit, "--nofile=64:64", "--"}, "forward", "127.0.0.1:0", b.upstream())
	soft, hard, err := procNofile(p.pid())
	if err != nil {
		t.Fatal(err)
	}
	if soft != "64" || hard != "64" {
		t.Fatalf("sluice (pid %d) open file limit: got %s:%s, want 64:64", p.pid(), soft, hard)
	}

	// Fill sluice up.
	var established []net.Conn
	t.Cleanup(func() {
		for _, c := range established {
			c.Close()
		}
	})
	refused := false
	for i := range maxTries {
		c, err := p.tryDial()
		if err != nil {
			t.Logf("connection %d: dial: %v", i, err)
			refused = true
			break
		}
		if err := echoRoundTrip(c, randomBytes(uint64(i), 512), 2*time.Second); err != nil {
			c.Close()
			if o := classify(0, err); !o.closed() {
				t.Errorf("connection %d, the first over the fd limit: got %s (%v), want closed at once (EOF or reset)", i, o, err)
			}
			refused = true
			break
		}
		established = append(established, c)
	}
	if !refused {
		t.Fatalf("sluice relayed %d connections under a 64-file limit, want new ones turned away", maxTries)
	}
	if len(established) == 0 {
		t.Fatal("sluice relayed no connection at all under a 64-file limit")
	}
	t.Logf("sluice relays %d connections at the 64-file limit", len(established))

	// Knock for a while: each extra connection must be turned away at once
	// and sluice must not burn CPU meanwhile.
	before, err := procCPUTicks(p.pid())
	if err != nil {
		t.Fatal(err)
	}
	outcomes := map[outcome]int{}
	tick := time.NewTicker(knockGap)
	end := time.Now().Add(knockFor)
	for time.Now().Before(end) {
		c, err := p.tryDial()
		if err != nil {
			outcomes["dial error"]++
		} else {
			o, _, _ := awaitClose(c, time.Second)
			outcomes[o]++
			c.Close()
		}
		<-tick.C
	}
	tick.Stop()
	after, err := procCPUTicks(p.pid())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("extra connections over 2s: %s", formatCounts(outcomes))
	if used := after - before; used >= cpuBudget {
		t.Errorf("sluice used %v of CPU during %v of connections over its fd limit, want < %v (busy loop?)",
			time.Duration(used)*time.Second/clockTicks, knockFor, time.Duration(cpuBudget)*time.Second/clockTicks)
	}
	for o, n := range outcomes {
		if !o.closed() && o != "dial error" {
			t.Errorf("%d extra connections ended with %s, want each refused or closed at once", n, o)
		}
	}

	// The connections sluice already had must be intact.
	for i, c := range established {
		if err := echoRoundTrip(c, randomBytes(uint64(1000+i), 256<<10), 10*time.Second); err != nil {
			t.Errorf("established connection %d after the fd storm: %v", i, err)
		}
	}

	lines := p.stderr.matching("too many open files")
	t.Logf("stderr has %d lines containing %q", len(lines), "too many open files")
	if len(lines) == 0 {
		t.Errorf("stderr has no line containing %q", "too many open files")
	}
	if len(lines) > maxLogged {
		t.Errorf("stderr has %d lines containing %q, want rate-limited (at most %d)", len(lines), "too many open files", maxLogged)
	}
}

// formatCounts renders outcome counts in a stable order.
func formatCounts(m map[outcome]int) string {
	var parts []string
	for o, n := range m {
		parts = append(parts, fmt.Sprintf("%s: %d", o, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// TestMaxConns checks --max-conns 3: the fourth concurrent connection is
// closed at once, the first three keep working, and a freed slot is
// usable again.
func TestMaxConns(t *testing.T) {
	t.Parallel()
	b := startEcho(t)
	p := startSluice(t, "forward", "--max-conns", "3", "127.0.0.1:0", b.upstream())

	var conns []net.Conn
	for i := range 3 {
		c := p.dial(t)
		if err := echoRoundTrip(c, []byte(fmt.Sprintf("conn %d", i)), 5*time.Second); err != nil {
			t.Fatalf("connection %d of 3: %v", i+1, err)
		}
		conns = append(conns, c)
	}

	c4, err := p.tryDial()
	if err == nil {
		o, took, err := awaitClose(c4, 3*time.Second)
		c4.Close()
		if !o.closed() || took > time.Second {
			t.Errorf("4th connection: got %s (%v) after %v, want EOF or reset within 1s", o, err, took.Round(time.Millisecond))
		}
	}

	for i, c := range conns {
		if err := echoRoundTrip(c, []byte(fmt.Sprintf("again %d", i)), 5*time.Second); err != nil {
			t.Errorf("connection %d after the 4th was turned away: %v", i+1, err)
		}
	}

	// Free a slot; sluice may take a moment to see the close.
	conns[0].Close()
	deadline := time.Now().Add(3 * time.Second)
	for {
		c, err := p.tryDial()
		if err != nil {
			t.Fatalf("dial after freeing a slot: %v", err)
		}
		err = echoRoundTrip(c, []byte("freed slot"), time.Second)
		c.Close()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a connection after closing one of 3: %v, want it relayed within 3s", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
