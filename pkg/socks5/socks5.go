// Package socks5 is sluice's SOCKS5 server (RFC 1928, with RFC 1929
// username/password authentication): CONNECT to IPv4, IPv6 and domain
// targets, run as a state machine on the reactor's loops, with the HTTP
// proxy's policy (pkg/auth users, pkg/acl rules, pkg/ratelimit classes,
// pkg/accounting records).
//
// A client connection lives on the loop that accepted it. The handshake
// (greeting, sub-negotiation, request) is read as the loop reports bytes,
// parsed by the pure functions of proto.go and bounded by one
// reactor.Timer; password hashing and DNS run in the reactor's pool. Once
// the target is connected and the reply sent, the connection is a
// pkg/relay relay (spliced) and only a small session record stays, so an
// idle SOCKS session costs what an idle HTTP CONNECT tunnel costs.
package socks5

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/sluice-proxy/sluice/pkg/accounting"
	"github.com/sluice-proxy/sluice/pkg/acl"
	"github.com/sluice-proxy/sluice/pkg/auth"
	"github.com/sluice-proxy/sluice/pkg/endpoint"
	"github.com/sluice-proxy/sluice/pkg/ratelimit"
	"github.com/sluice-proxy/sluice/pkg/ratelog"
	"github.com/sluice-proxy/sluice/pkg/reactor"
	"github.com/sluice-proxy/sluice/pkg/relay"
)

// Defaults for the zero values of Config.
const (
	DefaultConnectTimeout   = 10 * time.Second
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultIdleTimeout      = time.Hour
)

// lookupTimeout bounds one DNS lookup of a target.
const lookupTimeout = 5 * time.Second

// Config describes one SOCKS5 server. The zero value (with Listen) is
// usable: no authentication, every destination allowed.
type Config struct {
	// Name names the service in logs. If empty, the listen address.
	Name string
	// Listen is the address New listens on. If empty, the service
	// listens where AddListener says (an interface's addresses).
	Listen endpoint.Addr
	// ConnectTimeout bounds a connect to a target (per address). If zero,
	// DefaultConnectTimeout; an expired connect answers "host
	// unreachable".
	ConnectTimeout time.Duration
	// HandshakeTimeout bounds the time from accept to a complete request
	// (and its authentication); past it the connection is closed. If
	// zero, DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// IdleTimeout closes a session that moved nothing either way for this
	// long. If zero, DefaultIdleTimeout.
	IdleTimeout time.Duration
	// MaxConns bounds live client connections and sessions; further ones
	// are closed at once. If zero, no bound.
	MaxConns int
	// Users, if set, requires every client to be a user: RFC 1929
	// username/password, or "no authentication" for a client whose
	// address one of the users owns. Others are refused (method 0xFF).
	Users *auth.Users
	// AddrUsers, if set on a server without Users, makes a client whose
	// address one of its users owns that user (rates, quotas, counters,
	// rules, access log name). Other clients stay anonymous.
	AddrUsers *auth.Users
	// ACL decides which requests may pass; the method a rule sees is the
	// command (CONNECT). If nil, everything is allowed. Its ConnectPorts,
	// if empty, allow every port (unlike the HTTP proxy's 443).
	ACL *acl.List
	// Pools are the relay pools, one per loop. If nil, the service makes
	// its own.
	Pools []*relay.Pool
	// Log receives the service's records. If nil, slog.Default().
	Log *slog.Logger
	// AccessLog, if set, receives one record per session or refused
	// request: client, user, command, target, reply, bytes and duration.
	AccessLog *slog.Logger
	// Rates, if set, holds the users' rate and connection limits: a
	// session relays at its user's rates, and a request over the user's
	// max_conns is refused ("not allowed by ruleset").
	Rates *ratelimit.Registry
	// Accounting, if set, counts every request, its bytes and the
	// connected time of each identity, and refuses requests over quota.
	Accounting *accounting.Accounting
	// Admit, if set, is asked on the loop for every accepted connection;
	// an error closes the connection at once (rate-limited log). It must
	// not block.
	Admit func() error
}

// Stats are a service's counters.
type Stats struct {
	Accepted  uint64 // client connections accepted
	Requests  uint64 // requests answered (any reply)
	Sessions  uint64 // sessions relayed (reply "succeeded")
	Refused   uint64 // requests answered with a failure reply, and failed handshakes
	BytesUp   uint64 // client to target
	BytesDown uint64 // target to client
}

func (s *Stats) add(o Stats) {
	s.Accepted += o.Accepted
	s.Requests += o.Requests
	s.Sessions += o.Sessions
	s.Refused += o.Refused
	s.BytesUp += o.BytesUp
	s.BytesDown += o.BytesDown
}

// Service is a running SOCKS5 server.
type Service struct {
	cfg     Config
	acl     *acl.List
	reactor *reactor.Reactor
	pools   []*relay.Pool
	log     *slog.Logger
	warn    *ratelog.Logger
	stats   []Stats // one per loop, owned by it
	live    *reactor.Live
	lns     *endpoint.Group
	udpBufs [][]byte        // one per loop, made at the first UDP association (udp.go)
	counted accounting.Live // sessions (and connections of quota holders) a sync adds to the accounting
}

// allPorts is the CONNECT port range of a rule list that names none.
var allPorts = []acl.PortRange{{Lo: 1, Hi: 65535}}

// New checks cfg and listens. Connections are accepted once Start is
// called.
func New(ctx context.Context, r *reactor.Reactor, cfg Config) (*Service, error) {
	if cfg.Pools == nil {
		cfg.Pools = relay.PoolSet(relay.PoolConfig{}, len(r.Loops()))
	}
	if len(cfg.Pools) != len(r.Loops()) {
		return nil, fmt.Errorf("socks5 %s: %d relay pools for %d loops", cfg.Listen, len(cfg.Pools), len(r.Loops()))
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	list := acl.List{}
	if cfg.ACL != nil {
		list = *cfg.ACL
	}
	if len(list.ConnectPorts) == 0 {
		list.ConnectPorts = allPorts
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	name := cfg.Name
	if name == "" {
		name = cfg.Listen.String()
	}
	log = log.With("socks5", name)
	s := &Service{
		cfg:     cfg,
		acl:     &list,
		reactor: r,
		pools:   cfg.Pools,
		log:     log,
		warn:    &ratelog.Logger{Out: log},
		stats:   make([]Stats, len(r.Loops())),
		udpBufs: make([][]byte, len(r.Loops())),
		live:    reactor.NewLive(),
	}
	s.lns = endpoint.NewGroup(r.Loops(), s.accept, endpoint.ListenOptions{}, func(err error) {
		s.warn.Log(slog.LevelWarn, "accept failed", "err", err)
	})
	if cfg.Listen.Network != "" {
		if _, err := s.AddListener(ctx, cfg.Listen); err != nil {
			return nil, fmt.Errorf("socks5: %w", err)
		}
	}
	return s, nil
}

// Addr returns the address New listened on, port 0 resolved ("" when
// cfg.Listen was empty).
func (s *Service) Addr() string { return s.lns.Addr() }

// Addrs returns the address of every listener, as in use.
func (s *Service) Addrs() []string { return s.lns.Addrs() }

// AddListener listens on a too (an interface's new address, or one more
// configured address); see endpoint.Group.Add.
func (s *Service) AddListener(ctx context.Context, a endpoint.Addr) (string, error) {
	return s.lns.Add(ctx, a)
}

// RemoveListener stops accepting on a and reports whether it listened
// there; connections accepted there live on.
func (s *Service) RemoveListener(a endpoint.Addr) bool { return s.lns.Remove(a) }

// Start accepts connections on every loop.
func (s *Service) Start() error { return s.lns.Start() }

// Active returns the number of live client connections and sessions.
func (s *Service) Active() int { return s.live.Count() }

// SetActiveLoops makes only the first n loops accept new connections (the
// tuner's loop knob); see endpoint.Listener.SetActiveLoops.
func (s *Service) SetActiveLoops(n int) { s.lns.SetActiveLoops(n) }

// StopAccepting closes the listeners; live sessions are not touched. It
// must not be called from a loop goroutine.
func (s *Service) StopAccepting() { s.lns.Close() }

// Drain stops accepting and waits until every live connection has ended or
// ctx is done. It must not be called from a loop goroutine.
func (s *Service) Drain(ctx context.Context) error {
	s.StopAccepting()
	return s.live.Wait(ctx)
}

// Stats sums the counters of every loop; call it once the reactor has
// stopped (see Snapshot while it runs).
func (s *Service) Stats() Stats {
	var total Stats
	for _, st := range s.stats {
		total.add(st)
	}
	return total
}

// Snapshot sums the counters of every loop while the reactor runs. It must
// not be called from a loop goroutine.
func (s *Service) Snapshot(ctx context.Context) (Stats, error) {
	return reactor.Gather(ctx, s.reactor.Loops(), func(l *reactor.Loop) Stats { return s.stats[l.ID()] }, (*Stats).add)
}
