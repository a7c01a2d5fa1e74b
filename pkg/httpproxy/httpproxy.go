// Package httpproxy is sluice's HTTP/1.1 forward proxy: absolute-form
// requests of every method and CONNECT tunnels, run as a state machine on
// the reactor's loops (no goroutine and no buffer per idle connection).
//
// A client connection lives on the loop that accepted it. Its request head
// is read into a buffer borrowed from the loop for as long as bytes are in
// flight and parsed strictly (package httpmsg); the request goes to the
// origin with hop-by-hop fields removed, Host taken from the URI and Via
// added; bodies stream both ways by Content-Length or chunked framing, each
// message checked as it passes. A CONNECT becomes a plain splice relay
// (package relay) once "200 Connection established" is sent. Every error
// the client can still be told about is a short HTTP response.
//
// Blocking work (DNS, password hashing) runs in the reactor's pool; the
// loop never waits.
package httpproxy

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/sluice-proxy/sluice/pkg/accounting"
	"github.com/sluice-proxy/sluice/pkg/acl"
	"github.com/sluice-proxy/sluice/pkg/auth"
	"github.com/sluice-proxy/sluice/pkg/endpoint"
	"github.com/sluice-proxy/sluice/pkg/filter"
	"github.com/sluice-proxy/sluice/pkg/httpcache"
	"github.com/sluice-proxy/sluice/pkg/httpmsg"
	"github.com/sluice-proxy/sluice/pkg/ratelimit"
	"github.com/sluice-proxy/sluice/pkg/ratelog"
	"github.com/sluice-proxy/sluice/pkg/reactor"
	"github.com/sluice-proxy/sluice/pkg/relay"
)

// Defaults for the zero values of Config.
const (
	DefaultConnectTimeout = 10 * time.Second
	DefaultHeaderTimeout  = 10 * time.Second
	DefaultIdleTimeout    = 60 * time.Second
	DefaultReadTimeout    = 60 * time.Second
	DefaultTunnelIdle     = time.Hour
)

// lookupTimeout bounds one DNS lookup of an origin.
const lookupTimeout = 5 * time.Second

// lingerTimeout bounds how long a connection that was sent an error is read
// and discarded before it is closed, so the client sees the response
// instead of a reset caused by its unread bytes.
const lingerTimeout = 2 * time.Second

// Config describes one HTTP proxy. The zero value (with Listen) is usable.
type Config struct {
	// Name names the service in logs. If empty, the listen address.
	Name string
	// Listen is the address New listens on. If empty, the service
	// listens where AddListener says (an interface's addresses).
	Listen endpoint.Addr
	// ConnectTimeout bounds a connect to an origin (per address). If
	// zero, DefaultConnectTimeout; an expired connect answers 504.
	ConnectTimeout time.Duration
	// HeaderTimeout bounds the time from a connection's first byte (or
	// its accept) to the end of a request head; past it the client gets
	// 408 and is closed (slowloris). If zero, DefaultHeaderTimeout.
	HeaderTimeout time.Duration
	// IdleTimeout closes a keep-alive connection with no request for this
	// long. If zero, DefaultIdleTimeout.
	IdleTimeout time.Duration
	// TunnelIdleTimeout closes a CONNECT tunnel that moved nothing either
	// way for this long (an idle tunnel costs no buffer and no timer
	// wake-up before then). If zero, DefaultTunnelIdle.
	TunnelIdleTimeout time.Duration
	// ReadTimeout bounds the wait for an origin's response head and each
	// silence of an exchange after it; without a head the client gets
	// 504. If zero, DefaultReadTimeout.
	ReadTimeout time.Duration
	// MaxConns bounds live client connections; further ones are closed at
	// once. If zero, no bound.
	MaxConns int
	// Transparent accepts connections that nftables or iptables
	// redirected to the listener (REDIRECT or DNAT): a request in origin
	// form ("GET /path") goes to the connection's original destination
	// (SO_ORIGINAL_DST), whatever its Host field says; Host names the
	// origin only for host rules, logs and the forwarded head.
	// Absolute-form requests and CONNECT work as usual.
	Transparent bool
	// TProxy accepts connections an nftables `tproxy` rule diverted to
	// the listener (it is made with IP_TRANSPARENT, which needs
	// CAP_NET_ADMIN): their local address is the original destination.
	// A connection whose local port is the listener's own came to the
	// proxy directly. TProxy implies Transparent.
	TProxy bool
	// ForwardedFor adds X-Forwarded-For with the client address. Off by
	// default: the client stays hidden from origins.
	ForwardedFor bool
	// Limits bound request and response heads; zero fields take the
	// httpmsg defaults.
	Limits httpmsg.Limits
	// Users, if set, requires Proxy-Authorization Basic from every client
	// (407 otherwise), except clients that Users maps by address.
	Users *auth.Users
	// ACL decides which requests may pass. If nil, acl.Default: every
	// method and host, CONNECT only to port 443.
	ACL *acl.List
	// BlockURLs, if set, answers 403 to requests whose URL (or CONNECT
	// target) matches one of its patterns.
	BlockURLs *filter.URLs
	// BodyWords, if set, blocks text responses containing one of its
	// words: with a 403 page when the word comes in the first bytes of the
	// body, else by cutting the response short (the head is already
	// out). Requests lose Accept-Encoding so that bodies come uncompressed.
	BodyWords *filter.Words
	// Pools are the relay pools, one per loop. If nil, the service makes
	// its own.
	Pools []*relay.Pool
	// Log receives the service's records. If nil, slog.Default().
	Log *slog.Logger
	// AccessLog, if set, receives one record per request: client, user,
	// method, URL or CONNECT target, status, bytes and duration.
	AccessLog *slog.Logger
	// Rates, if set, holds the users' rate and connection limits (config
	// class sections): an exchange of a limited user reads at the user's
	// rates, a CONNECT tunnel relays at them, and a connection over the
	// user's max_conns gets 429. If nil, nobody is limited.
	Rates *ratelimit.Registry
	// Admit, if set, is asked on the loop for every accepted connection;
	// an error closes the connection at once and is logged (rate-limited).
	// It must not block (the daemon's memory cap and the tuner's wake-up
	// use it).
	Admit func() error
	// Cache, if set, stores and serves GET responses (RFC 9111; see
	// cache.go). It may be shared by several services.
	Cache *httpcache.Cache
	// Accounting, if set, counts every request, its body bytes and the
	// connections and connected time of each identity (the user, or the
	// client address), and refuses requests over quota with 403
	// (account.go).
	Accounting *accounting.Accounting
	// AddrUsers, if set on a proxy without Users (no auth), makes a
	// client whose address one of its users owns that user: their rates,
	// quotas, counters, rules and access log name apply. Other clients
	// stay anonymous (counted as their address).
	AddrUsers *auth.Users
}

// Stats are a service's counters.
type Stats struct {
	Accepted  uint64 // client connections accepted
	Requests  uint64 // requests answered (any status), tunnels included
	Tunnels   uint64 // CONNECT tunnels established
	Errors    uint64 // requests answered by sluice with an error status
	BytesUp   uint64 // request bodies and tunnel bytes, client to origin
	BytesDown uint64 // response bodies and tunnel bytes, origin to client
	// Cache: requests answered from stored bodies (after a 304 too),
	// revalidations answered 304, and GET or HEAD requests whose answer
	// came from the origin.
	CacheHits, CacheRevalidated, CacheMisses uint64
}

func (s *Stats) add(o Stats) {
	s.Accepted += o.Accepted
	s.Requests += o.Requests
	s.Tunnels += o.Tunnels
	s.Errors += o.Errors
	s.BytesUp += o.BytesUp
	s.BytesDown += o.BytesDown
	s.CacheHits += o.CacheHits
	s.CacheRevalidated += o.CacheRevalidated
	s.CacheMisses += o.CacheMisses
}

// Service is a running HTTP proxy.
type Service struct {
	cfg     Config
	reactor *reactor.Reactor
	pools   []*relay.Pool
	bufs    []bufPool    // one per loop
	origins []originPool // one per loop: idle keep-alive origin connections
	dns     []dnsCache   // one per loop: recent lookups
	log     *slog.Logger
	warn    *ratelog.Logger
	stats   []Stats       // one per loop, owned by it
	live    *reactor.Live // client connections and tunnels
	lns     *endpoint.Group
	counted accounting.Live // tunnels and connections a sync adds to the accounting (account.go)
	// port is the listeners' port: with TProxy, a connection to another
	// local port was diverted.
	port atomic.Int32
}

// New checks cfg and listens. Connections are accepted once Start is
// called.
func New(ctx context.Context, r *reactor.Reactor, cfg Config) (*Service, error) {
	if cfg.Pools == nil {
		cfg.Pools = relay.PoolSet(relay.PoolConfig{}, len(r.Loops()))
	}
	if len(cfg.Pools) != len(r.Loops()) {
		return nil, fmt.Errorf("http proxy %s: %d relay pools for %d loops", cfg.Listen, len(cfg.Pools), len(r.Loops()))
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.HeaderTimeout <= 0 {
		cfg.HeaderTimeout = DefaultHeaderTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if cfg.TunnelIdleTimeout <= 0 {
		cfg.TunnelIdleTimeout = DefaultTunnelIdle
	}
	if cfg.ACL == nil {
		cfg.ACL = acl.Default()
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	name := cfg.Name
	if name == "" {
		name = cfg.Listen.String()
	}
	log = log.With("http_proxy", name)
	s := &Service{
		cfg:     cfg,
		reactor: r,
		pools:   cfg.Pools,
		bufs:    make([]bufPool, len(r.Loops())),
		log:     log,
		warn:    &ratelog.Logger{Out: log},
		stats:   make([]Stats, len(r.Loops())),
		live:    reactor.NewLive(),
	}
	s.origins = make([]originPool, len(r.Loops()))
	s.dns = make([]dnsCache, len(r.Loops()))
	for i, l := range r.Loops() {
		s.bufs[i].size = bufSize(cfg.Limits)
		s.origins[i].loop = l
	}
	s.lns = endpoint.NewGroup(r.Loops(), s.accept, endpoint.ListenOptions{Transparent: cfg.TProxy}, func(err error) {
		s.warn.Log(slog.LevelWarn, "accept failed", "err", err)
	})
	if cfg.TProxy {
		s.cfg.Transparent = true
	}
	if cfg.Listen.Network != "" {
		if _, err := s.AddListener(ctx, cfg.Listen); err != nil {
			return nil, fmt.Errorf("http proxy: %w", err)
		}
	}
	return s, nil
}

// Addr returns the address New listened on, port 0 resolved ("" when
// cfg.Listen was empty).
func (s *Service) Addr() string { return s.lns.Addr() }

// Addrs returns the address of every listener, as in use.
func (s *Service) Addrs() []string { return s.lns.Addrs() }

// AddListener listens on a too (an interface's new address); see
// endpoint.Group.Add.
func (s *Service) AddListener(ctx context.Context, a endpoint.Addr) (string, error) {
	addr, err := s.lns.Add(ctx, a)
	if err == nil {
		if ap, perr := netip.ParseAddrPort(addr); perr == nil {
			s.port.Store(int32(ap.Port()))
		}
	}
	return addr, err
}

// RemoveListener stops accepting on a and reports whether it listened
// there; connections accepted there live on.
func (s *Service) RemoveListener(a endpoint.Addr) bool { return s.lns.Remove(a) }

// Start accepts connections on every loop.
func (s *Service) Start() error { return s.lns.Start() }

// Active returns the number of live client connections and tunnels.
func (s *Service) Active() int { return s.live.Count() }

// SetActiveLoops makes only the first n loops accept new connections (the
// tuner's loop knob); see endpoint.Listener.SetActiveLoops.
func (s *Service) SetActiveLoops(n int) { s.lns.SetActiveLoops(n) }

// StopAccepting closes the listener; live connections are not touched. It
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

// bufPool lends the buffers heads and bodies pass through on one loop.
type bufPool struct {
	size   int
	free   [][]byte
	states []*cacheState // recycled cache states (cache.go)
}

// maxFreeBufs bounds the idle buffers a loop keeps.
const maxFreeBufs = 64

func bufSize(lim httpmsg.Limits) int {
	n := lim.MaxHead
	if n <= 0 {
		n = httpmsg.DefaultMaxHead
	}
	return max(n+1, 16384)
}

func (p *bufPool) get() []byte {
	if n := len(p.free); n > 0 {
		b := p.free[n-1]
		p.free[n-1] = nil
		p.free = p.free[:n-1]
		return b
	}
	return make([]byte, p.size)
}

func (p *bufPool) put(b []byte) {
	if len(p.free) < maxFreeBufs && len(b) == p.size {
		p.free = append(p.free, b)
	}
}
