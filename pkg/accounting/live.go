package accounting

import (
	"context"
	"sync"
	"time"

	"github.com/sluice-proxy/sluice/pkg/reactor"
)

// Member is a live connection or tunnel of a service whose bytes a sync
// adds before it ends. Its methods run on its loop.
type Member interface {
	// Home is the loop that owns the member.
	Home() *reactor.Loop
	// SyncAcct adds what moved since the last call and closes the
	// connection if its identity is now over its quota.
	SyncAcct(now time.Time)
}

// Live is the set of one service's live members (tunnels that count for
// an identity, and client connections that count for an identity with a
// quota), shared by the HTTP proxy and SOCKS5. While it has a member it is
// a Source of the Accounting (each flush and snapshot syncs it); while a
// member has a quota the Accounting also syncs it every QuotaCheck (Watch),
// so a quota cuts a long download or tunnel short. The zero value is
// ready to use.
type Live struct {
	mu      sync.Mutex
	acc     *Accounting
	set     map[Member]bool // value: the identity has a quota
	limited int
}

// Add puts x in the set, or updates whether it has a quota.
func (lc *Live) Add(acc *Accounting, x Member, limited bool) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if lc.set == nil {
		lc.set = make(map[Member]bool)
	}
	was, in := lc.set[x]
	if !in && len(lc.set) == 0 {
		lc.acc = acc
		acc.AddSource(lc)
	}
	lc.set[x] = limited
	switch {
	case limited && (!in || !was):
		lc.limited++
		if lc.limited == 1 {
			lc.acc.Watch(lc)
		}
	case !limited && in && was:
		lc.unlimit()
	}
}

// Remove takes x out of the set.
func (lc *Live) Remove(x Member) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	limited, in := lc.set[x]
	if !in {
		return
	}
	delete(lc.set, x)
	if limited {
		lc.unlimit()
	}
	if len(lc.set) == 0 {
		lc.acc.RemoveSource(lc)
	}
}

// unlimit counts one limited member less. Called with mu held.
func (lc *Live) unlimit() {
	lc.limited--
	if lc.limited == 0 {
		lc.acc.Unwatch(lc)
	}
}

// Sync runs every member's SyncAcct on its loop; it returns when every
// loop has, or when ctx is done.
func (lc *Live) Sync(ctx context.Context) {
	lc.mu.Lock()
	byLoop := make(map[*reactor.Loop][]Member)
	for x := range lc.set {
		l := x.Home()
		byLoop[l] = append(byLoop[l], x)
	}
	lc.mu.Unlock()
	done := make(chan struct{}, len(byLoop))
	for l, xs := range byLoop {
		l.Post(func() {
			now := time.Now()
			for _, x := range xs {
				x.SyncAcct(now)
			}
			done <- struct{}{}
		})
	}
	for range byLoop {
		select {
		case <-done:
		case <-ctx.Done():
			return
		}
	}
}

// Len returns the number of members.
func (lc *Live) Len() int {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return len(lc.set)
}
