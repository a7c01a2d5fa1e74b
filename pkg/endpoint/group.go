package endpoint

import (
	"context"
	"fmt"
	"sync"

	"github.com/sluice-proxy/sluice/pkg/reactor"
)

// Group is a service's listeners: one per address, added and removed while
// the service runs (an interface's addresses come and go), all accepting
// into one AcceptFunc on one reactor's loops once the group is started.
// Its methods must not be called from a loop goroutine.
type Group struct {
	loops  []*reactor.Loop
	accept AcceptFunc
	opts   ListenOptions
	// onError is given to every listener (Listener.OnError).
	onError func(err error)

	mu      sync.Mutex
	started bool
	closed  bool
	first   string // key of the first listener added, for Addr
	lns     map[string]*Listener
}

// NewGroup returns an empty group whose listeners will accept on loops
// into accept, made with opts; onError, if set, hears of accept failures.
func NewGroup(loops []*reactor.Loop, accept AcceptFunc, opts ListenOptions, onError func(err error)) *Group {
	return &Group{loops: loops, accept: accept, opts: opts, onError: onError, lns: make(map[string]*Listener)}
}

// Add listens on a and, once the group is started, accepts there too. It
// returns the address in use (port 0 resolved). Listening twice on one
// address, or after Close, is an error.
func (g *Group) Add(ctx context.Context, a Addr) (string, error) {
	key := a.String()
	g.mu.Lock()
	_, dup := g.lns[key]
	g.mu.Unlock()
	if dup {
		return "", fmt.Errorf("listen %s: already listening", a)
	}
	ln, err := ListenWith(ctx, a, g.opts)
	if err != nil {
		return "", err
	}
	ln.OnError = g.onError
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		ln.Close()
		return "", fmt.Errorf("listen %s: service is stopping", a)
	}
	if g.first == "" {
		g.first = key
	}
	g.lns[key] = ln
	if g.started {
		if err := ln.Serve(g.loops, g.accept); err != nil {
			delete(g.lns, key)
			ln.Close()
			return "", err
		}
	}
	return ln.Addr(), nil
}

// Remove stops accepting on a (as given to Add) and closes that listener;
// connections accepted there live on. It reports whether there was one.
func (g *Group) Remove(a Addr) bool {
	g.mu.Lock()
	ln, ok := g.lns[a.String()]
	delete(g.lns, a.String())
	g.mu.Unlock()
	if ok {
		ln.Close()
	}
	return ok
}

// Addr returns the address of the first listener added, port 0 resolved,
// or "" once it was removed (or none was added).
func (g *Group) Addr() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	if ln, ok := g.lns[g.first]; ok {
		return ln.Addr()
	}
	return ""
}

// Addrs returns the address of every listener, as in use.
func (g *Group) Addrs() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]string, 0, len(g.lns))
	for _, ln := range g.lns {
		out = append(out, ln.Addr())
	}
	return out
}

// Start accepts on every listener, and on those added later.
func (g *Group) Start() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.started || g.closed {
		return nil
	}
	g.started = true
	for _, ln := range g.lns {
		if err := ln.Serve(g.loops, g.accept); err != nil {
			return err
		}
	}
	return nil
}

// SetActiveLoops makes only the first n loops accept on every listener
// (see Listener.SetActiveLoops).
func (g *Group) SetActiveLoops(n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, ln := range g.lns {
		ln.SetActiveLoops(n)
	}
}

// Close closes every listener; Add fails from then on. Connections
// already accepted are not touched.
func (g *Group) Close() {
	g.mu.Lock()
	g.closed = true
	lns := g.lns
	g.lns = make(map[string]*Listener)
	g.mu.Unlock()
	for _, ln := range lns {
		ln.Close()
	}
}
