// Package forward is the port-forwarding service: every connection accepted
// on its listeners is relayed to one of its upstreams, picked round-robin
// or by fewest live connections, with failover to the next upstream when
// one cannot be reached.
//
// A connection lives on the loop that accepted it, from accept through
// connect and relay to close: the service never hands an fd between
// threads. Only the count of live connections (in all and per upstream) is
// shared, to enforce the limit, to balance and to know when a drain is
// complete.
//
// A running service can be changed without closing anything: Update swaps
// the upstreams, timeouts and limits for the connections accepted from
// then on, and AddListener and RemoveListener change where it accepts.
package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-proxy/sluice/pkg/allow"
	"github.com/sluice-proxy/sluice/pkg/endpoint"
	"github.com/sluice-proxy/sluice/pkg/ratelog"
	"github.com/sluice-proxy/sluice/pkg/reactor"
	"github.com/sluice-proxy/sluice/pkg/relay"
	"github.com/sluice-proxy/sluice/pkg/sys"
)

// DefaultConnectTimeout is used when Config.ConnectTimeout is zero.
const DefaultConnectTimeout = 10 * time.Second

// lookupTimeout bounds one DNS lookup of an upstream host.
const lookupTimeout = 5 * time.Second

// Balance says how a connection's upstream is picked.
type Balance string

// Balance values. The zero value means RoundRobin.
const (
	RoundRobin Balance = "round_robin" // each connection to the next upstream
	LeastConns Balance = "least_conns" // to the upstream with the fewest live connections
)

// Config describes one forward. Upstream or Upstreams is required.
type Config struct {
	// Name names the service in logs. If empty, the listen address.
	Name string
	// Listen is the address New listens on. If its Network is empty, New
	// listens nowhere and listeners are added with AddListener.
	Listen endpoint.Addr
	// Upstream is the one upstream of a simple forward; it is used when
	// Upstreams is empty.
	Upstream endpoint.Addr
	// Upstreams are the upstreams to balance between, in order.
	Upstreams []endpoint.Addr
	// Balance picks an upstream per connection. If empty, RoundRobin.
	// Either way, an upstream that cannot be reached makes the connection
	// try the next one, until each was tried once.
	Balance Balance
	// ConnectTimeout bounds the connect to an upstream (per address
	// tried). If zero, DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// IdleTimeout closes a connection that moved no byte for this long.
	// If zero, connections may idle forever.
	IdleTimeout time.Duration
	// MaxConns bounds live connections; further ones are accepted and
	// closed at once. If zero, there is no bound.
	MaxConns int
	// Admit, if set, is asked on the loop for every accepted connection;
	// an error closes the connection at once and is logged (rate-limited).
	// It must not block (the daemon's memory cap uses it).
	Admit func() error
	// Allow, if set, lists the upstream addresses connections may be
	// relayed to; a resolved address it does not allow is refused like
	// one that cannot be reached, and logged. If nil, all are allowed.
	Allow *allow.List
	// Pools are the relay pools, one per loop of the reactor. If nil, the
	// service makes its own with default sizes. Update ignores it.
	Pools []*relay.Pool
	// Log receives the service's records. If nil, slog.Default(). Update
	// ignores it.
	Log *slog.Logger
}

// Stats are a service's counters. Stats counts the bytes of connections
// that have ended; Snapshot adds those of live ones.
type Stats struct {
	Accepted  uint64 // connections accepted
	Refused   uint64 // closed at once: over a limit or no upstream reachable
	Relayed   uint64 // connections relayed to the end
	BytesUp   uint64 // client to upstream
	BytesDown uint64 // upstream to client
}

func (s *Stats) add(o Stats) {
	s.Accepted += o.Accepted
	s.Refused += o.Refused
	s.Relayed += o.Relayed
	s.BytesUp += o.BytesUp
	s.BytesDown += o.BytesDown
}

// upstream is one upstream of a settings generation.
type upstream struct {
	addr   endpoint.Addr
	sas    []sys.Sockaddr // resolved once when addr needs no DNS
	active *atomic.Int64  // live connections; shared across generations
}

// settings is what Update swaps: everything a new connection reads.
type settings struct {
	ups            []upstream
	balance        Balance
	connectTimeout time.Duration
	idleTimeout    time.Duration
	maxConns       int
	admit          func() error
	allow          *allow.List
	next           atomic.Uint64 // round-robin position
}

// Service is a running forward.
type Service struct {
	reactor *reactor.Reactor
	pools   []*relay.Pool
	log     *slog.Logger
	warn    *ratelog.Logger
	set     atomic.Pointer[settings]
	stats   []Stats // one per loop, owned by that loop
	// live holds, per loop and owned by it, the connections being
	// relayed, so that Snapshot can count their bytes so far.
	live  []map[*conn]struct{}
	conns *reactor.Live // live connections, for Active and Drain

	lns     *endpoint.Group
	hasMain bool // New listened on cfg.Listen: the group's first listener

	mu       sync.Mutex
	upActive map[string]*atomic.Int64 // per upstream address, kept across Updates
}

// New checks cfg and listens on cfg.Listen, if set. Connections are
// accepted once Start is called.
func New(ctx context.Context, r *reactor.Reactor, cfg Config) (*Service, error) {
	if cfg.Pools == nil {
		cfg.Pools = relay.PoolSet(relay.PoolConfig{}, len(r.Loops()))
	}
	if len(cfg.Pools) != len(r.Loops()) {
		return nil, fmt.Errorf("forward %s: %d relay pools for %d loops", cfg.Listen, len(cfg.Pools), len(r.Loops()))
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	name := cfg.Name
	if name == "" {
		name = cfg.Listen.String()
	}
	log = log.With("forward", name)
	s := &Service{
		reactor:  r,
		pools:    cfg.Pools,
		log:      log,
		warn:     &ratelog.Logger{Out: log},
		stats:    make([]Stats, len(r.Loops())),
		live:     make([]map[*conn]struct{}, len(r.Loops())),
		conns:    reactor.NewLive(),
		upActive: make(map[string]*atomic.Int64),
	}
	s.lns = endpoint.NewGroup(r.Loops(), s.accept, endpoint.ListenOptions{}, func(err error) {
		s.warn.Log(slog.LevelWarn, "accept failed", "err", err)
	})
	for i := range s.live {
		s.live[i] = make(map[*conn]struct{})
	}
	if err := s.Update(cfg); err != nil {
		return nil, err
	}
	if cfg.Listen.Network != "" {
		if _, err := s.AddListener(ctx, cfg.Listen); err != nil {
			return nil, err
		}
		s.hasMain = true
	}
	return s, nil
}

// Update swaps the upstreams, balance, timeouts, limit, Admit and Allow for the
// connections accepted from now on; live connections keep what they
// started with. cfg.Listen, Pools and Log are ignored. Upstream addresses
// are checked here; host names are resolved per connection.
func (s *Service) Update(cfg Config) error {
	addrs := cfg.Upstreams
	if len(addrs) == 0 && cfg.Upstream.Network != "" {
		addrs = []endpoint.Addr{cfg.Upstream}
	}
	if len(addrs) == 0 {
		return errors.New("forward: no upstream")
	}
	set := &settings{
		balance:        cfg.Balance,
		connectTimeout: cfg.ConnectTimeout,
		idleTimeout:    cfg.IdleTimeout,
		maxConns:       cfg.MaxConns,
		admit:          cfg.Admit,
		allow:          cfg.Allow,
	}
	if set.balance == "" {
		set.balance = RoundRobin
	}
	if set.balance != RoundRobin && set.balance != LeastConns {
		return fmt.Errorf("forward: unknown balance %q", set.balance)
	}
	if set.connectTimeout == 0 {
		set.connectTimeout = DefaultConnectTimeout
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Counters of upstreams that are gone are dropped from the map; live
	// connections to them keep theirs through their settings.
	upActive := make(map[string]*atomic.Int64, len(addrs))
	for _, a := range addrs {
		u := upstream{addr: a}
		if !a.NeedsLookup() {
			sas, err := a.Sockaddrs(context.Background(), false)
			if err != nil {
				return fmt.Errorf("forward upstream %s: %w", a, err)
			}
			u.sas = sas
		}
		key := a.String()
		if upActive[key] == nil {
			upActive[key] = s.upActive[key]
		}
		if upActive[key] == nil {
			upActive[key] = new(atomic.Int64)
		}
		u.active = upActive[key]
		set.ups = append(set.ups, u)
	}
	s.upActive = upActive
	s.set.Store(set)
	return nil
}

// AddListener listens on a and, once the service is started, accepts
// there too. It returns the address in use (port 0 resolved). Listening
// twice on the same address is an error.
func (s *Service) AddListener(ctx context.Context, a endpoint.Addr) (string, error) {
	return s.lns.Add(ctx, a)
}

// RemoveListener stops accepting on a (as given to AddListener) and
// closes it. Connections accepted there live on. It reports whether there
// was such a listener.
func (s *Service) RemoveListener(a endpoint.Addr) bool { return s.lns.Remove(a) }

// Addr returns the address New listened on, with port 0 resolved, or ""
// when it listened nowhere or that listener was removed.
func (s *Service) Addr() string {
	if !s.hasMain {
		return ""
	}
	return s.lns.Addr()
}

// Addrs returns the addresses of every listener, as in use.
func (s *Service) Addrs() []string { return s.lns.Addrs() }

// Start accepts connections on every loop, on every listener.
func (s *Service) Start() error { return s.lns.Start() }

// SetActiveLoops makes only the first n loops accept on every listener of
// the service (the tuner's loop knob); see endpoint.Listener.SetActiveLoops.
func (s *Service) SetActiveLoops(n int) { s.lns.SetActiveLoops(n) }

// Active returns the number of live connections.
func (s *Service) Active() int { return s.conns.Count() }

// StopAccepting closes every listener; AddListener fails from then on.
// Live connections are not touched. It must not be called from a loop
// goroutine.
func (s *Service) StopAccepting() { s.lns.Close() }

// Drain stops accepting and waits until every live connection has ended or
// ctx is done. It must not be called from a loop goroutine.
func (s *Service) Drain(ctx context.Context) error {
	s.StopAccepting()
	return s.conns.Wait(ctx)
}

// Stats sums the counters of every loop. Call it only once the reactor has
// stopped: while it runs, each loop owns its counters (see Snapshot).
func (s *Service) Stats() Stats {
	var total Stats
	for _, st := range s.stats {
		total.add(st)
	}
	return total
}

// Snapshot sums the counters of every loop while the reactor runs, with
// the bytes that live connections moved so far: each loop adds up its own
// on its goroutine. It must not be called from a loop goroutine; it gives
// up when ctx is done.
func (s *Service) Snapshot(ctx context.Context) (Stats, error) {
	return reactor.Gather(ctx, s.reactor.Loops(), func(l *reactor.Loop) Stats {
		st := s.stats[l.ID()]
		for c := range s.live[l.ID()] {
			st.BytesUp += c.relay.BytesAB()
			st.BytesDown += c.relay.BytesBA()
		}
		return st
	}, (*Stats).add)
}

// conn is a client connection waiting for its upstream.
type conn struct {
	s      *Service
	set    *settings
	loop   *reactor.Loop
	client int
	up     int // index in set.ups of the upstream being tried
	tried  int // upstreams tried so far
	addrs  []sys.Sockaddr
	next   int // index in addrs of the next address to try
	errs   []error
	relay  *relay.Relay // once connected
	ended  bool         // the relay has ended
}

func (s *Service) accept(l *reactor.Loop, fd int) {
	st := &s.stats[l.ID()]
	st.Accepted++
	set := s.set.Load()
	if n := s.conns.Add(); set.maxConns > 0 && n > int64(set.maxConns) {
		s.refuse(l, fd, "connection limit reached", "max_conns", set.maxConns)
		return
	}
	if set.admit != nil {
		if err := set.admit(); err != nil {
			s.refuse(l, fd, "connection refused", "err", err)
			return
		}
	}
	// Registered now, without a handler: events before the relay starts
	// are not needed, the relay assumes readiness anyway.
	if err := l.Register(fd, endpoint.ConnEvents, nil); err != nil {
		s.refuse(l, fd, "accept failed", "err", err)
		return
	}
	c := &conn{s: s, set: set, loop: l, client: fd, up: set.pick()}
	c.tryUpstream()
}

// refuse closes a connection just accepted.
func (s *Service) refuse(l *reactor.Loop, fd int, msg string, args ...any) {
	s.stats[l.ID()].Refused++
	l.Close(fd)
	s.conns.Done()
	s.warn.Log(slog.LevelWarn, msg, args...)
}

// pick returns the index of the upstream a new connection tries first.
func (set *settings) pick() int {
	n := len(set.ups)
	if n == 1 {
		return 0
	}
	if set.balance == LeastConns {
		best := 0
		for i := 1; i < n; i++ {
			if set.ups[i].active.Load() < set.ups[best].active.Load() {
				best = i
			}
		}
		return best
	}
	return int((set.next.Add(1) - 1) % uint64(n))
}

// tryUpstream starts on upstream c.up: its addresses are known, or looked
// up in the blocking pool.
func (c *conn) tryUpstream() {
	u := &c.set.ups[c.up]
	u.active.Add(1)
	c.tried++
	c.next = 0
	if u.sas != nil {
		c.addrs = u.sas
		c.dialNext()
		return
	}
	addr := u.addr
	err := c.s.reactor.Pool().Submit(c.loop, func() func() {
		ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
		defer cancel()
		addrs, err := addr.Sockaddrs(ctx, false)
		return func() { c.resolved(addrs, err) }
	})
	if err != nil {
		c.upstreamFailed(fmt.Errorf("resolve %s: %w", addr.Host, err))
	}
}

func (c *conn) resolved(addrs []sys.Sockaddr, err error) {
	if err != nil {
		c.upstreamFailed(err)
		return
	}
	c.addrs = addrs
	c.dialNext()
}

func (c *conn) dialNext() {
	sa := c.addrs[c.next]
	c.next++
	if up := c.set.ups[c.up].addr; !c.set.allow.Allows(up.Host, sa) {
		c.s.warn.Log(slog.LevelWarn, "upstream not allowed", "upstream", up.String(), "addr", endpoint.FormatSockaddr(sa))
		c.connected(-1, fmt.Errorf("connect %s: upstream not allowed", endpoint.FormatSockaddr(sa)))
		return
	}
	endpoint.Dial(c.loop, sa, c.set.connectTimeout, c.connected)
}

func (c *conn) connected(fd int, err error) {
	if err != nil {
		if c.next < len(c.addrs) {
			c.s.log.Debug("upstream address failed, trying the next", "err", err)
			c.dialNext()
			return
		}
		c.upstreamFailed(err)
		return
	}
	s := c.s
	c.relay = relay.Start(c.loop, s.pools[c.loop.ID()], c.client, fd, relay.Options{
		IdleTimeout: c.set.idleTimeout,
		Done:        c.relayDone,
	})
	// The relay may have ended within Start, before it was returned.
	if !c.ended {
		s.live[c.loop.ID()][c] = struct{}{}
	}
}

// upstreamFailed moves on to the next upstream, or fails the connection
// when every one was tried.
func (c *conn) upstreamFailed(err error) {
	c.set.ups[c.up].active.Add(-1)
	c.errs = append(c.errs, err)
	if c.tried < len(c.set.ups) {
		c.s.warn.Log(slog.LevelWarn, "upstream failed, trying the next", "upstream", c.set.ups[c.up].addr.String(), "err", err)
		c.up = (c.up + 1) % len(c.set.ups)
		c.tryUpstream()
		return
	}
	s := c.s
	s.stats[c.loop.ID()].Refused++
	c.loop.Close(c.client)
	s.conns.Done()
	s.warn.Log(slog.LevelWarn, "upstream connect failed", "err", errors.Join(c.errs...))
}

func (c *conn) relayDone(r *relay.Relay, err error) {
	s := c.s
	c.ended = true
	delete(s.live[r.Loop().ID()], c)
	c.set.ups[c.up].active.Add(-1)
	// The relay runs on the loop that accepted its client.
	st := &s.stats[r.Loop().ID()]
	st.Relayed++
	st.BytesUp += r.BytesAB()
	st.BytesDown += r.BytesBA()
	if err != nil && !errors.Is(err, relay.ErrIdleTimeout) {
		s.log.Debug("connection reset", "err", err, "bytes_up", r.BytesAB(), "bytes_down", r.BytesBA())
	}
	s.conns.Done()
}
