// Package forward is the port-forwarding service: every connection accepted
// on a listener is relayed to one upstream address.
//
// A connection lives on the loop that accepted it, from accept through
// connect and relay to close: the service never hands an fd between
// threads. Only the count of live connections is shared, to enforce the
// limit and to know when a drain is complete.
package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/sluice-proxy/sluice/pkg/endpoint"
	"github.com/sluice-proxy/sluice/pkg/ratelog"
	"github.com/sluice-proxy/sluice/pkg/reactor"
	"github.com/sluice-proxy/sluice/pkg/relay"
	"github.com/sluice-proxy/sluice/pkg/sys"
)

// DefaultConnectTimeout is used when Config.ConnectTimeout is zero.
const DefaultConnectTimeout = 10 * time.Second

// lookupTimeout bounds one DNS lookup of the upstream host.
const lookupTimeout = 5 * time.Second

// Config describes one forward. Listen and Upstream are required.
type Config struct {
	Listen   endpoint.Addr
	Upstream endpoint.Addr
	// ConnectTimeout bounds the connect to the upstream (per address
	// tried). If zero, DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// IdleTimeout closes a connection that moved no byte for this long.
	// If zero, connections may idle forever.
	IdleTimeout time.Duration
	// MaxConns bounds live connections; further ones are accepted and
	// closed at once. If zero, there is no bound.
	MaxConns int
	// Pools are the relay pools, one per loop of the reactor. If nil, the
	// service makes its own with default sizes.
	Pools []*relay.Pool
	// Log receives the service's records. If nil, slog.Default().
	Log *slog.Logger
}

// Stats are a service's counters. Relayed bytes are counted when a
// connection ends.
type Stats struct {
	Accepted  uint64 // connections accepted
	Refused   uint64 // closed at once: over the limit or upstream failed
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

// Service is a running forward.
type Service struct {
	cfg      Config
	reactor  *reactor.Reactor
	ln       *endpoint.Listener
	log      *slog.Logger
	warn     *ratelog.Logger
	upstream []sys.Sockaddr // resolved once when Upstream needs no DNS
	stats    []Stats        // one per loop, owned by that loop
	active   atomic.Int64
	idle     chan struct{} // signalled when active drops to zero
}

// New listens on cfg.Listen. Connections are accepted once Start is called.
func New(ctx context.Context, r *reactor.Reactor, cfg Config) (*Service, error) {
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
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
	log = log.With("listen", cfg.Listen.String(), "upstream", cfg.Upstream.String())
	s := &Service{
		cfg:     cfg,
		reactor: r,
		log:     log,
		warn:    &ratelog.Logger{Out: log},
		stats:   make([]Stats, len(r.Loops())),
		idle:    make(chan struct{}, 1),
	}
	if !cfg.Upstream.NeedsLookup() {
		sas, err := cfg.Upstream.Sockaddrs(ctx, false)
		if err != nil {
			return nil, fmt.Errorf("forward upstream: %w", err)
		}
		s.upstream = sas
	}
	ln, err := endpoint.Listen(ctx, cfg.Listen)
	if err != nil {
		return nil, err
	}
	ln.OnError = func(err error) { s.warn.Log(slog.LevelWarn, "accept failed", "err", err) }
	s.ln = ln
	return s, nil
}

// Addr returns the address the service listens on, with port 0 resolved.
func (s *Service) Addr() string { return s.ln.Addr() }

// Start accepts connections on every loop.
func (s *Service) Start() error {
	return s.ln.Serve(s.reactor.Loops(), s.accept)
}

// Active returns the number of live connections.
func (s *Service) Active() int { return int(s.active.Load()) }

// Drain stops accepting and waits until every live connection has ended or
// ctx is done. It must not be called from a loop goroutine.
func (s *Service) Drain(ctx context.Context) error {
	s.ln.Close()
	for s.active.Load() > 0 {
		select {
		case <-s.idle:
		case <-ctx.Done():
			return fmt.Errorf("drain %s: %d connections still open: %w", s.cfg.Listen, s.active.Load(), ctx.Err())
		}
	}
	return nil
}

// Stats sums the counters of every loop. Call it only once the reactor has
// stopped: while it runs, each loop owns its counters.
func (s *Service) Stats() Stats {
	var total Stats
	for _, st := range s.stats {
		total.add(st)
	}
	return total
}

// conn is a client connection waiting for its upstream.
type conn struct {
	s      *Service
	loop   *reactor.Loop
	client int
	addrs  []sys.Sockaddr
	next   int // index in addrs of the next address to try
}

func (s *Service) accept(l *reactor.Loop, fd int) {
	st := &s.stats[l.ID()]
	st.Accepted++
	if n := s.active.Add(1); s.cfg.MaxConns > 0 && n > int64(s.cfg.MaxConns) {
		st.Refused++
		l.Close(fd)
		s.release()
		s.warn.Log(slog.LevelWarn, "connection limit reached", "max_conns", s.cfg.MaxConns)
		return
	}
	// Registered now, without a handler: events before the relay starts
	// are not needed, the relay assumes readiness anyway.
	if err := l.Register(fd, endpoint.ConnEvents, nil); err != nil {
		st.Refused++
		l.Close(fd)
		s.release()
		s.warn.Log(slog.LevelWarn, "accept failed", "err", err)
		return
	}
	c := &conn{s: s, loop: l, client: fd, addrs: s.upstream}
	if c.addrs != nil {
		c.dialNext()
		return
	}
	err := s.reactor.Pool().Submit(l, func() func() {
		ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
		defer cancel()
		addrs, err := s.cfg.Upstream.Sockaddrs(ctx, false)
		return func() { c.resolved(addrs, err) }
	})
	if err != nil {
		c.fail(fmt.Errorf("resolve %s: %w", s.cfg.Upstream.Host, err))
	}
}

func (c *conn) resolved(addrs []sys.Sockaddr, err error) {
	if err != nil {
		c.fail(err)
		return
	}
	c.addrs = addrs
	c.dialNext()
}

func (c *conn) dialNext() {
	sa := c.addrs[c.next]
	c.next++
	endpoint.Dial(c.loop, sa, c.s.cfg.ConnectTimeout, c.connected)
}

func (c *conn) connected(fd int, err error) {
	if err != nil {
		if c.next < len(c.addrs) {
			c.s.log.Debug("upstream address failed, trying the next", "err", err)
			c.dialNext()
			return
		}
		c.fail(err)
		return
	}
	s := c.s
	relay.Start(c.loop, s.cfg.Pools[c.loop.ID()], c.client, fd, relay.Options{
		IdleTimeout: s.cfg.IdleTimeout,
		Done:        s.relayDone,
	})
}

// fail closes the client at once: the upstream cannot be reached.
func (c *conn) fail(err error) {
	s := c.s
	s.stats[c.loop.ID()].Refused++
	c.loop.Close(c.client)
	s.release()
	s.warn.Log(slog.LevelWarn, "upstream connect failed", "err", err)
}

func (s *Service) relayDone(r *relay.Relay, err error) {
	// The relay runs on the loop that accepted its client.
	st := &s.stats[r.Loop().ID()]
	st.Relayed++
	st.BytesUp += r.BytesAB()
	st.BytesDown += r.BytesBA()
	if err != nil && !errors.Is(err, relay.ErrIdleTimeout) {
		s.log.Debug("connection reset", "err", err, "bytes_up", r.BytesAB(), "bytes_down", r.BytesBA())
	}
	s.release()
}

func (s *Service) release() {
	if s.active.Add(-1) == 0 {
		select {
		case s.idle <- struct{}{}:
		default:
		}
	}
}
