package ratelimit

import (
	"sync"
	"testing"
)

func TestRegistryUpdate(t *testing.T) {
	r := NewRegistry(nil)
	r.Update(map[string]Limits{
		"alice": {Up: 1000, Down: 2000, MaxConns: 2},
		"bob":   {Down: 5000},
		"carol": {}, // no limits: not in the registry
	})
	if r.Len() != 2 || r.User("carol") != nil || r.User("nobody") != nil {
		t.Fatalf("Len %d, carol %v", r.Len(), r.User("carol"))
	}
	alice, bob := r.User("alice"), r.User("bob")
	if alice.Name() != "alice" || alice.Up().Rate() != 1000 || alice.Down().Rate() != 2000 || alice.MaxConns() != 2 {
		t.Fatalf("alice: up %v down %v max %d", alice.Up(), alice.Down(), alice.MaxConns())
	}
	if bob.Up() != nil || bob.Down().Rate() != 5000 || bob.MaxConns() != 0 {
		t.Fatalf("bob: up %v down %v max %d", bob.Up(), bob.Down(), bob.MaxConns())
	}
	if !alice.Acquire() || !alice.Acquire() || alice.Acquire() {
		t.Fatal("alice: want two connections, not three")
	}
	down := alice.Down()

	// Reload: alice's rate changes, bob goes, dave comes.
	r.Update(map[string]Limits{
		"alice": {Up: 1000, Down: 4000, MaxConns: 3},
		"dave":  {Up: 10},
	})
	if r.User("alice") != alice || alice.Down() != down || down.Rate() != 4000 {
		t.Fatal("alice lost her state on reload")
	}
	if alice.Conns() != 2 || !alice.Acquire() || alice.Acquire() {
		t.Fatalf("alice after reload: %d conns, want room for one more", alice.Conns())
	}
	if r.User("bob") != nil || r.User("dave").Up().Rate() != 10 {
		t.Fatal("bob should be gone, dave there")
	}
	alice.Release()
	if alice.Conns() != 2 {
		t.Fatalf("after Release: %d conns", alice.Conns())
	}
	snap := r.Snapshot()
	if len(snap) != 2 || snap[0] != (UserState{Name: "alice", Limits: Limits{Up: 1000, Down: 4000, MaxConns: 3}, Conns: 2}) ||
		snap[1] != (UserState{Name: "dave", Limits: Limits{Up: 10}}) {
		t.Fatalf("Snapshot() = %+v", snap)
	}
	r.Update(map[string]Limits{"alice": {Down: 4000}})
	if alice.Up() != nil || alice.MaxConns() != 0 {
		t.Fatal("alice's up limit and connection limit should be gone")
	}

	var nilReg *Registry
	if nilReg.User("alice") != nil || nilReg.Len() != 0 || nilReg.Snapshot() != nil {
		t.Fatal("a nil registry limits nobody")
	}
}

// TestUserAcquireConcurrent checks the connection limit holds when every
// loop asks at once.
func TestUserAcquireConcurrent(t *testing.T) {
	r := NewRegistry(nil)
	r.Update(map[string]Limits{"u": {MaxConns: 10}})
	u := r.User("u")
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				if u.Acquire() {
					mu.Lock()
					got++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if got != 10 || u.Conns() != 10 {
		t.Fatalf("%d acquired, %d counted; want 10", got, u.Conns())
	}
}
