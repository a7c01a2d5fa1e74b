package endpoint

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/sluice-proxy/sluice/pkg/reactor"
)

// TestListenerSpreadsAndRetires accepts on two loops, then retires loop 1
// with SetActiveLoops(1): every later connection must land on loop 0.
func TestListenerSpreadsAndRetires(t *testing.T) {
	r, err := reactor.New(reactor.Config{Loops: 2})
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	defer r.Stop()
	a, _ := Parse("127.0.0.1:0")
	ln, err := Listen(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var mu sync.Mutex
	perLoop := map[int]int{}
	accepted := make(chan struct{}, 100)
	err = ln.Serve(r.Loops(), func(l *reactor.Loop, fd int) {
		mu.Lock()
		perLoop[l.ID()]++
		mu.Unlock()
		l.Close(fd)
		accepted <- struct{}{}
	})
	if err != nil {
		t.Fatal(err)
	}
	connect := func(n int) {
		t.Helper()
		for range n {
			c, err := net.Dial("tcp", ln.Addr())
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-accepted:
			case <-time.After(5 * time.Second):
				t.Fatal("connection not accepted")
			}
			c.Close()
		}
	}
	connect(20)
	ln.SetActiveLoops(1)
	// The loops apply SetActiveLoops in turn: wait until both have.
	for _, l := range r.Loops() {
		done := make(chan struct{})
		l.Post(func() { close(done) })
		<-done
	}
	mu.Lock()
	before := perLoop[1]
	mu.Unlock()
	connect(20)
	mu.Lock()
	defer mu.Unlock()
	if perLoop[1] != before {
		t.Errorf("retired loop 1 accepted %d connections after SetActiveLoops(1)", perLoop[1]-before)
	}
	if perLoop[0]+perLoop[1] != 40 {
		t.Errorf("accepted %v, want 40 in all", perLoop)
	}
	if r.Loops()[0].TID() == 0 || r.Loops()[0].TID() == r.Loops()[1].TID() {
		t.Errorf("loop thread ids %d and %d: want two distinct, non-zero ids", r.Loops()[0].TID(), r.Loops()[1].TID())
	}
}
