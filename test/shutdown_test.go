package test

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"
)

// requireRefusesNew checks that within d sluice stops taking new
// connections: a dial fails, or the connection is closed at once.
func requireRefusesNew(t *testing.T, p *sluiceProc, d time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		c, err := p.tryDial()
		if err != nil {
			return
		}
		o, _, _ := awaitClose(c, 500*time.Millisecond)
		c.Close()
		if o.closed() {
			return
		}
		if time.Since(start) > d {
			t.Errorf("new connections %v after SIGTERM: still relayed (%s), want refused or closed at once", d, o)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestGracefulShutdown sends SIGTERM while a transfer is half done: sluice
// must turn new connections away, let the transfer finish byte-exact, and
// then exit with status 0.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	hb := startHashBackend(t, "tcp", "127.0.0.1:0", time.Minute)
	p := startSluice(t, "forward", "--grace", "10s", "127.0.0.1:0", hb.upstream())

	c := p.dial(t)
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	hdr := transferHeader{ID: 300, Up: 32 << 20, Down: 32 << 20}
	ps := newPause(4 << 20)
	done := make(chan sideResult, 1)
	go func() { done <- transfer(c, hdr, false, ps) }()
	if !ps.waitReached(20 * time.Second) {
		close(ps.release)
		t.Fatal("transfer did not reach 4 MiB each way in 20s")
	}

	p.signal(syscall.SIGTERM)
	requireRefusesNew(t, p, 3*time.Second)
	if p.exited() {
		t.Fatalf("sluice exited (%s) with a transfer in flight and 10s of grace", p.exitStatus())
	}

	close(ps.release)
	var client sideResult
	select {
	case client = <-done:
	case <-time.After(time.Minute):
		t.Fatal("transfer did not finish after SIGTERM")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	server, err := hb.result(ctx, hdr.ID)
	if err != nil {
		t.Fatalf("%v (client side: %v)", err, client.Err)
	}
	checkTransfer(t, "transfer across SIGTERM", hdr, client, server)
	c.Close()

	code, took, err := p.waitExit(5 * time.Second)
	if err != nil {
		t.Fatalf("after its last connection closed: %v", err)
	}
	if code != 0 {
		t.Errorf("exit code: got %d, want 0", code)
	}
	t.Logf("sluice exited %v after its last connection closed", took.Round(time.Millisecond))
}

// TestGraceExpires checks that with --grace 1s and a connection that stays
// idle, SIGTERM or SIGINT makes sluice exit with status 0 within 3 s.
func TestGraceExpires(t *testing.T) {
	for _, sig := range []os.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			b := startEcho(t)
			p := startSluice(t, "forward", "--grace", "1s", "127.0.0.1:0", b.upstream())
			c := p.dial(t)
			if err := echoRoundTrip(c, []byte("hi"), 5*time.Second); err != nil {
				t.Fatalf("echo before the signal: %v", err)
			}

			p.signal(sig)
			code, took, err := p.waitExit(3 * time.Second)
			if err != nil {
				t.Fatalf("with --grace 1s and an idle connection: %v", err)
			}
			if code != 0 {
				t.Errorf("exit code: got %d, want 0", code)
			}
			t.Logf("sluice exited %v after %v", took.Round(time.Millisecond), sig)
			if o, _, err := awaitClose(c, 2*time.Second); !o.closed() {
				t.Errorf("idle client after sluice exited: got %s (%v), want EOF or reset", o, err)
			}
		})
	}
}

// TestSignalRightAfterListening pins a bug where sluice logged msg=listening
// before it installed its SIGINT/SIGTERM handler, so a signal sent as soon
// as it said it was ready killed it (status "signal: terminated") instead
// of shutting it down with status 0.
func TestSignalRightAfterListening(t *testing.T) {
	t.Parallel()
	const rounds = 10
	b := startEcho(t)
	for i := range rounds {
		p := startSluice(t, "forward", "--grace", "1s", "127.0.0.1:0", b.upstream())
		p.signal(syscall.SIGTERM)
		code, _, err := p.waitExit(3 * time.Second)
		if err != nil {
			t.Fatalf("round %d: SIGTERM right after msg=listening: %v", i, err)
		}
		if code != 0 {
			t.Fatalf("round %d: SIGTERM right after msg=listening: %s, want exit status 0", i, p.exitStatus())
		}
	}
}
