package ratelimit

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Limits are one user's limits; a zero field is no limit.
type Limits struct {
	Up, Down int64 // bytes per second the user sends and receives
	MaxConns int   // live client connections
}

// User is the shared state of one limited user: a bucket per direction
// and the count of live connections. Its methods are safe for every loop.
type User struct {
	name     string
	up, down atomic.Pointer[Bucket]
	maxConns atomic.Int64
	conns    atomic.Int64
}

// Name returns the user's name.
func (u *User) Name() string { return u.name }

// Up returns the bucket of what the user sends, or nil for no limit.
func (u *User) Up() *Bucket { return u.up.Load() }

// Down returns the bucket of what the user receives, or nil for no limit.
func (u *User) Down() *Bucket { return u.down.Load() }

// Acquire counts a new connection of the user. It reports false, counting
// nothing, when the user already has MaxConns live connections.
func (u *User) Acquire() bool {
	for {
		n, limit := u.conns.Load(), u.maxConns.Load()
		if limit > 0 && n >= limit {
			return false
		}
		if u.conns.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Release ends a connection counted by Acquire.
func (u *User) Release() { u.conns.Add(-1) }

// Conns returns the user's live connections.
func (u *User) Conns() int { return int(u.conns.Load()) }

// MaxConns returns the user's connection limit, 0 for none.
func (u *User) MaxConns() int { return int(u.maxConns.Load()) }

// Registry maps user names to their limits, for every service and loop.
// The daemon keeps one for its whole life and calls Update on reload; a
// nil *Registry limits nobody.
type Registry struct {
	clock func() time.Duration
	mu    sync.Mutex // serializes Update
	users atomic.Pointer[map[string]*User]
}

// NewRegistry returns an empty registry. clock is the buckets' monotonic
// clock; if nil, the time since NewRegistry.
func NewRegistry(clock func() time.Duration) *Registry {
	if clock == nil {
		base := time.Now()
		clock = func() time.Duration { return time.Since(base) }
	}
	r := &Registry{clock: clock}
	r.users.Store(&map[string]*User{})
	return r
}

// User returns the state of the user name, or nil when the user has no
// limits (or r is nil). Safe for every goroutine.
func (r *Registry) User(name string) *User {
	if r == nil {
		return nil
	}
	return (*r.users.Load())[name]
}

// Update replaces the limits by limits (by user name; users with zero
// Limits are left out). A user who stays keeps their *User: the tokens
// saved, the connections counted and the buckets live connections hold,
// which take the new rates at once. A user who goes is forgotten: their
// live connections finish under the old limits; new ones have none.
func (r *Registry) Update(limits map[string]Limits) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := *r.users.Load()
	next := make(map[string]*User, len(limits))
	for name, l := range limits {
		if l == (Limits{}) {
			continue
		}
		u := old[name]
		if u == nil {
			u = &User{name: name}
		}
		r.setBucket(&u.up, l.Up)
		r.setBucket(&u.down, l.Down)
		u.maxConns.Store(int64(l.MaxConns))
		next[name] = u
	}
	r.users.Store(&next)
}

// setBucket makes p a bucket of rate, keeping the one it holds, or no
// bucket for rate 0.
func (r *Registry) setBucket(p *atomic.Pointer[Bucket], rate int64) {
	switch b := p.Load(); {
	case rate == 0:
		p.Store(nil)
	case b != nil:
		b.SetRate(rate)
	default:
		p.Store(NewBucket(rate, r.clock))
	}
}

// Len returns how many users have limits.
func (r *Registry) Len() int {
	if r == nil {
		return 0
	}
	return len(*r.users.Load())
}

// UserState is one limited user as Snapshot sees it.
type UserState struct {
	Name   string
	Limits Limits
	Conns  int // live connections
}

// Snapshot returns the limited users, sorted by name.
func (r *Registry) Snapshot() []UserState {
	if r == nil {
		return nil
	}
	users := *r.users.Load()
	out := make([]UserState, 0, len(users))
	for name, u := range users {
		st := UserState{Name: name, Conns: u.Conns(), Limits: Limits{MaxConns: u.MaxConns()}}
		if b := u.Up(); b != nil {
			st.Limits.Up = b.Rate()
		}
		if b := u.Down(); b != nil {
			st.Limits.Down = b.Rate()
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b UserState) int { return strings.Compare(a.Name, b.Name) })
	return out
}
