package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-proxy/sluice/pkg/accounting"
	"github.com/sluice-proxy/sluice/pkg/endpoint"
	"github.com/sluice-proxy/sluice/pkg/ratelimit"
	"github.com/sluice-proxy/sluice/pkg/ratelog"
	"github.com/sluice-proxy/sluice/pkg/reactor"
	"github.com/sluice-proxy/sluice/pkg/relay"
	"github.com/sluice-proxy/sluice/pkg/sys"
)

// Defaults for the zero values of ServerConfig.
const (
	DefaultHeartbeat        = 30 * time.Second
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultMaxClients       = 64
	DefaultMaxIdleData      = 64  // pooled data connections a client may keep
	DefaultMaxPending       = 256 // public connections waiting for a data connection, per client
	DefaultWaitData         = 10 * time.Second
	// maxHellos bounds connections that have not logged in yet, so a
	// flood of silent connections cannot take every fd.
	maxHellos = 256
)

// PortRange is an inclusive range of ports.
type PortRange struct{ Lo, Hi uint16 }

// Contains reports whether p is in the range.
func (r PortRange) Contains(p uint16) bool { return p >= r.Lo && p <= r.Hi }

func (r PortRange) String() string { return fmt.Sprintf("%d-%d", r.Lo, r.Hi) }

// Account is a client the server knows by name, with a token of its own
// and, if Ports is set, the only ports it may claim.
type Account struct {
	Token string
	// Ports, if set, narrow the server's range for this client.
	Ports []PortRange
}

// ServerConfig describes a tunnel server. Listen is required, and Token or
// Accounts.
type ServerConfig struct {
	// Name names the service in logs and stats. If empty, the listen address.
	Name string
	// Listen is where clients connect. If its Network is empty, New listens
	// nowhere and listeners are added with AddListener.
	Listen endpoint.Addr
	// Bind is the host public ports listen on. If empty, every address.
	Bind string
	// Ports are the public ports clients may claim. If empty, 1024-65535.
	Ports []PortRange
	// Token lets any client name log in. If empty, only Accounts may.
	Token string
	// Accounts are clients with their own tokens (and ports); a name
	// listed here can only log in with its own token.
	Accounts map[string]Account
	// Heartbeat is the interval clients are told to send pings at; a
	// client silent for three of them is dropped. If zero, DefaultHeartbeat.
	Heartbeat time.Duration
	// HandshakeTimeout bounds the login or data hello. If zero,
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// MaxClients bounds logged-in clients. If zero, DefaultMaxClients.
	MaxClients int
	// MaxConns bounds one client's live public connections. If zero, no bound.
	MaxConns int
	// IdleTimeout closes a public connection that moved no byte this long.
	// If zero, never.
	IdleTimeout time.Duration
	// Admit, if set, is asked for every public connection; an error refuses it.
	Admit func() error
	// Rates, if set, gives a client whose name is a user that user's class:
	// rates on its public connections and its connection limit.
	Rates *ratelimit.Registry
	// Accounting, if set, counts each client's traffic and connected time
	// under its name.
	Accounting *accounting.Accounting
	// Pools are the relay pools, one per loop. If nil, the service makes its own.
	Pools []*relay.Pool
	// Log receives the service's records. If nil, slog.Default().
	Log *slog.Logger
}

// serverSettings is what Update swaps.
type serverSettings struct {
	bind      string
	ports     []PortRange
	token     string
	accounts  map[string]Account
	heartbeat time.Duration
	handshake time.Duration
	maxCli    int
	maxConns  int
	idle      time.Duration
	admit     func() error
	rates     *ratelimit.Registry
	acct      *accounting.Accounting
}

// tokenFor returns the token name must prove, or "" when it may not log in.
func (set *serverSettings) tokenFor(name string) string {
	if a, ok := set.accounts[name]; ok {
		return a.Token
	}
	return set.token
}

// portAllowed says why name may not claim port, or "" when it may.
func (set *serverSettings) portAllowed(name string, port uint16) string {
	in := func(rs []PortRange) bool {
		for _, r := range rs {
			if r.Contains(port) {
				return true
			}
		}
		return false
	}
	if len(set.ports) > 0 && !in(set.ports) {
		return fmt.Sprintf("port %d is outside the server's range %s", port, rangesString(set.ports))
	}
	if len(set.ports) == 0 && port < 1024 {
		return fmt.Sprintf("port %d is below 1024 and the server sets no range", port)
	}
	if a, ok := set.accounts[name]; ok && len(a.Ports) > 0 && !in(a.Ports) {
		return fmt.Sprintf("port %d is outside client %s's range %s", port, name, rangesString(a.Ports))
	}
	return ""
}

func rangesString(rs []PortRange) string {
	s := ""
	for i, r := range rs {
		if i > 0 {
			s += ","
		}
		s += r.String()
	}
	return s
}

// Server is a running tunnel server.
type Server struct {
	reactor *reactor.Reactor
	pools   []*relay.Pool
	log     *slog.Logger
	warn    *ratelog.Logger
	set     atomic.Pointer[serverSettings]
	lns     *endpoint.Group
	hasMain bool
	fails   failures
	hellos  atomic.Int64  // connections before login or data hello
	conns   *reactor.Live // public connections being relayed
	stats   []ServerStats // per loop, owned by it
	live    []map[*pubConn]struct{}

	mu       sync.Mutex
	sessions map[string]*session // by client name
	byID     map[[SessionLen]byte]*session
	ports    map[uint16]*pubPort // claimed (or being opened) public ports
	closed   bool
}

// ServerStats are a server's counters.
type ServerStats struct {
	Logins       uint64 // successful logins
	AuthFailures uint64 // wrong name or token, or a bad data hello
	Accepted     uint64 // public connections accepted
	Refused      uint64 // public connections closed at once
	Relayed      uint64 // public connections relayed to their end
	BytesUp      uint64 // public client to the tunnel client
	BytesDown    uint64 // tunnel client to public client
}

func (s *ServerStats) add(o ServerStats) {
	s.Logins += o.Logins
	s.AuthFailures += o.AuthFailures
	s.Accepted += o.Accepted
	s.Refused += o.Refused
	s.Relayed += o.Relayed
	s.BytesUp += o.BytesUp
	s.BytesDown += o.BytesDown
}

// NewServer checks cfg and listens on cfg.Listen, if set. Clients are
// accepted once Start is called.
func NewServer(ctx context.Context, r *reactor.Reactor, cfg ServerConfig) (*Server, error) {
	if cfg.Pools == nil {
		cfg.Pools = relay.PoolSet(relay.PoolConfig{}, len(r.Loops()))
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	name := cfg.Name
	if name == "" {
		name = cfg.Listen.String()
	}
	log = log.With("tunnel_server", name)
	n := len(r.Loops())
	s := &Server{
		reactor:  r,
		pools:    cfg.Pools,
		log:      log,
		warn:     &ratelog.Logger{Out: log},
		conns:    reactor.NewLive(),
		stats:    make([]ServerStats, n),
		live:     make([]map[*pubConn]struct{}, n),
		sessions: make(map[string]*session),
		byID:     make(map[[SessionLen]byte]*session),
		ports:    make(map[uint16]*pubPort),
	}
	for i := range s.live {
		s.live[i] = make(map[*pubConn]struct{})
	}
	s.lns = endpoint.NewGroup(r.Loops(), s.accept, endpoint.ListenOptions{}, func(err error) {
		s.warn.Log(slog.LevelWarn, "accept failed", "err", err)
	})
	if err := s.Update(cfg); err != nil {
		return nil, err
	}
	if cfg.Listen.Network != "" {
		if _, err := s.lns.Add(ctx, cfg.Listen); err != nil {
			return nil, fmt.Errorf("tunnel server: %w", err)
		}
		s.hasMain = true
	}
	return s, nil
}

// Update swaps tokens, accounts, ranges and limits. Clients whose token
// changed (or who may no longer log in) are logged out and must log in
// again; their live public connections go on. Ports a client holds that
// the new ranges exclude are closed.
func (s *Server) Update(cfg ServerConfig) error {
	if cfg.Token == "" && len(cfg.Accounts) == 0 {
		return errors.New("tunnel server: no token and no client accounts: nobody could log in")
	}
	for name, a := range cfg.Accounts {
		if err := CheckName(name); err != nil {
			return fmt.Errorf("tunnel server: client %w", err)
		}
		if a.Token == "" {
			return fmt.Errorf("tunnel server: client %s has no token", name)
		}
	}
	set := &serverSettings{
		bind: cfg.Bind, ports: cfg.Ports, token: cfg.Token, accounts: cfg.Accounts,
		heartbeat: cfg.Heartbeat, handshake: cfg.HandshakeTimeout, maxCli: cfg.MaxClients,
		maxConns: cfg.MaxConns, idle: cfg.IdleTimeout, admit: cfg.Admit, rates: cfg.Rates, acct: cfg.Accounting,
	}
	if set.heartbeat <= 0 {
		set.heartbeat = DefaultHeartbeat
	}
	if set.heartbeat < time.Second {
		set.heartbeat = time.Second
	}
	if set.handshake <= 0 {
		set.handshake = DefaultHandshakeTimeout
	}
	if set.maxCli <= 0 {
		set.maxCli = DefaultMaxClients
	}
	s.set.Store(set)
	// Sessions that no longer hold: logged out (posted to their loops).
	s.mu.Lock()
	var out []*session
	var ports []*pubPort
	for _, ss := range s.sessions {
		if set.tokenFor(ss.name) != ss.token {
			out = append(out, ss)
			continue
		}
		for p, pp := range ss.ports {
			if set.portAllowed(ss.name, p) != "" {
				ports = append(ports, pp)
			}
		}
	}
	s.mu.Unlock()
	for _, ss := range out {
		ss.ctlLoop.Post(func() { ss.end(CodeAuth, "token changed by a reload: log in again") })
	}
	for _, pp := range ports {
		s.log.Info("public port closed by a reload: outside the allowed range", "client", pp.sess.name, "port", pp.port)
		s.closePort(pp)
	}
	return nil
}

// AddListener listens for clients on a too. It returns the address in use.
func (s *Server) AddListener(ctx context.Context, a endpoint.Addr) (string, error) {
	return s.lns.Add(ctx, a)
}

// RemoveListener stops listening on a.
func (s *Server) RemoveListener(a endpoint.Addr) bool { return s.lns.Remove(a) }

// Addr returns the address New listened on, port 0 resolved.
func (s *Server) Addr() string {
	if !s.hasMain {
		return ""
	}
	return s.lns.Addr()
}

// Start accepts clients.
func (s *Server) Start() error { return s.lns.Start() }

// SetActiveLoops is the tuner's loop knob for the client listener.
func (s *Server) SetActiveLoops(n int) { s.lns.SetActiveLoops(n) }

// Active returns the live public connections.
func (s *Server) Active() int { return s.conns.Count() }

// StopAccepting closes the client listener, logs every client out and
// closes their public ports. Live public connections go on. It must not
// be called from a loop goroutine.
func (s *Server) StopAccepting() {
	s.lns.Close()
	s.mu.Lock()
	s.closed = true
	var all []*session
	for _, ss := range s.sessions {
		all = append(all, ss)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, ss := range all {
		wg.Add(1)
		ss.ctlLoop.Post(func() {
			defer wg.Done()
			ss.end(0, "server stopping")
		})
	}
	wg.Wait()
	// Ports close in goroutines (endpoint.Listener.Close waits for loops).
	for {
		s.mu.Lock()
		n := len(s.ports)
		s.mu.Unlock()
		if n == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Drain stops accepting and waits for the live public connections.
func (s *Server) Drain(ctx context.Context) error {
	s.StopAccepting()
	return s.conns.Wait(ctx)
}

// accept takes a new client connection: challenge it.
func (s *Server) accept(l *reactor.Loop, fd int) {
	set := s.set.Load()
	from := peerAddr(fd)
	if s.fails.blocked(from, time.Now()) {
		s.stats[l.ID()].AuthFailures++
		s.warn.Log(slog.LevelWarn, "client refused: too many failed logins", "addr", from.String())
		sys.CloseReset(fd)
		return
	}
	if s.hellos.Add(1) > maxHellos {
		s.hellos.Add(-1)
		s.warn.Log(slog.LevelWarn, "client refused: too many connections not logged in", "addr", from.String(), "max", maxHellos)
		sys.CloseReset(fd)
		return
	}
	if err := l.Register(fd, endpoint.ConnEvents, nil); err != nil {
		s.hellos.Add(-1)
		sys.Close(fd)
		return
	}
	h := &hello{s: s, from: from, counted: true}
	h.c = newFrameConn(l, fd, h, true)
	h.nonce = nonce()
	ch := Challenge{Version: Version, Nonce: h.nonce}
	h.c.send(ch.append(nil))
	h.c.deadline(set.handshake, errors.New("no login within the handshake timeout"))
	h.c.start()
}

func peerAddr(fd int) netip.Addr {
	sa, err := sys.PeerAddr(fd)
	if err != nil {
		return netip.Addr{}
	}
	switch a := sa.(type) {
	case *sys.SockaddrInet4:
		return netip.AddrFrom4(a.Addr)
	case *sys.SockaddrInet6:
		return netip.AddrFrom16(a.Addr).Unmap()
	}
	return netip.Addr{}
}

// hello is a client connection before it said what it is.
type hello struct {
	s       *Server
	c       *frameConn
	from    netip.Addr
	nonce   [NonceLen]byte
	counted bool // in s.hellos
}

// leave takes the connection out of the not-logged-in count, once.
func (h *hello) leave() {
	if h.counted {
		h.counted = false
		h.s.hellos.Add(-1)
	}
}

func (h *hello) frame(c *frameConn, t byte, p []byte) error {
	switch t {
	case tLogin:
		m, err := parseLogin(p)
		if err != nil {
			return err
		}
		h.login(m)
		return nil
	case tData:
		m, err := parseData(p)
		if err != nil {
			return err
		}
		h.data(m)
		return nil
	}
	return protoErr("%s frame before login", frameName(t))
}

func (h *hello) closed(c *frameConn, err error) {
	h.leave()
	if err != nil {
		h.s.log.Debug("client connection failed before login", "addr", h.from.String(), "err", err)
	}
}

// refuse answers a failed login or data hello and counts it against the
// address.
func (h *hello) refuse(code byte, msg string, args ...any) {
	s := h.s
	s.stats[h.c.loop.ID()].AuthFailures++
	if code == CodeAuth {
		if d := s.fails.fail(h.from, time.Now()); d > 0 {
			args = append(args, "blocked_for", d.String())
		}
	}
	s.warn.Log(slog.LevelWarn, msg, append([]any{"addr", h.from.String()}, args...)...)
	e := ErrorMsg{Code: code, Reason: msg}
	h.c.closeAfter(e.append(nil))
}

func (h *hello) login(m Login) {
	s := h.s
	set := s.set.Load()
	token := set.tokenFor(m.Name)
	if token == "" || !macEqual(m.MAC, loginMAC(token, h.nonce, m.Nonce, m.Name)) {
		h.refuse(CodeAuth, "login refused: wrong client name or token", "client", m.Name)
		return
	}
	s.fails.succeed(h.from)
	h.leave()
	ss := &session{srv: s, name: m.Name, token: token, id: sessionID(), from: h.from,
		ctl: h.c, ctlLoop: h.c.loop, ports: make(map[uint16]*pubPort), heartbeat: set.heartbeat}
	s.mu.Lock()
	old := s.sessions[m.Name]
	if old == nil && len(s.sessions) >= set.maxCli {
		s.mu.Unlock()
		h.refuse(CodeBusy, "login refused: too many clients", "client", m.Name, "max_clients", set.maxCli)
		return
	}
	if s.closed {
		s.mu.Unlock()
		h.c.close(nil)
		return
	}
	s.sessions[m.Name] = ss
	s.byID[ss.id] = ss
	if old != nil {
		// A client that comes back before its old session timed out
		// takes its ports over: their listeners stay open.
		delete(s.byID, old.id)
		old.replaced = true
		for p, pp := range old.ports {
			pp.sess = ss
			ss.ports[p] = pp
		}
		old.ports = map[uint16]*pubPort{}
	}
	s.mu.Unlock()
	if old != nil {
		old.ctlLoop.Post(func() { old.end(CodeReplaced, "a new login of the same client took over") })
	}
	s.stats[h.c.loop.ID()].Logins++
	h.c.h = ss
	w := Welcome{Session: ss.id, Heartbeat: uint16(min(set.heartbeat/time.Second, 0xffff)),
		MAC: serverMAC(token, h.nonce, m.Nonce, ss.id)}
	ss.ctl.send(w.append(nil))
	ss.lastSeen = h.c.loop.Now()
	ss.ctl.timer.Func = ss.checkAlive
	h.c.loop.Schedule(&ss.ctl.timer, 3*ss.heartbeat)
	s.log.Info("client logged in", "client", m.Name, "addr", h.from.String(), "replaced", old != nil)
}

func (h *hello) data(m Data) {
	s := h.s
	s.mu.Lock()
	ss := s.byID[m.Session]
	s.mu.Unlock()
	if ss == nil {
		h.refuse(CodeSession, "data connection for an unknown session")
		return
	}
	if !macEqual(m.MAC, dataMAC(ss.token, h.nonce, m.Session)) {
		h.refuse(CodeAuth, "data connection refused: wrong proof", "client", ss.name)
		return
	}
	h.c.deadline(0, nil)
	h.leave()
	ss.addData(h.c)
}

// sortClients orders clients by name for stable output.
func sortClients(cs []ClientStats) {
	sort.Slice(cs, func(i, j int) bool { return cs[i].Name < cs[j].Name })
	for i := range cs {
		sort.Strings(cs[i].Ports)
	}
}
