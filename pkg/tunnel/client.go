package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-proxy/sluice/pkg/endpoint"
	"github.com/sluice-proxy/sluice/pkg/ratelog"
	"github.com/sluice-proxy/sluice/pkg/reactor"
	"github.com/sluice-proxy/sluice/pkg/relay"
	"github.com/sluice-proxy/sluice/pkg/sys"
)

// Defaults for the zero values of ClientConfig.
const (
	DefaultPool           = 4
	DefaultConnectTimeout = 10 * time.Second
	DefaultMaxBackoff     = 30 * time.Second
	minBackoff            = 500 * time.Millisecond
	maxDataDials          = 64 // data connections being opened at once
	lookupTimeout         = 5 * time.Second
)

// Service is one local service a client publishes on a public port.
type Service struct {
	// Name names it in logs and on the server.
	Name string
	// RemotePort is the public port on the server.
	RemotePort uint16
	// Local is where public connections are relayed to: any endpoint.
	Local endpoint.Addr
}

// ClientConfig describes a tunnel client. Name, Server, Token and at least
// one service are required.
type ClientConfig struct {
	// Name is the client's name on the server.
	Name string
	// Server is the tunnel server's address.
	Server endpoint.Addr
	// Token proves the client's name.
	Token string
	// Services are published once logged in.
	Services []Service
	// Pool is the number of idle data connections kept open so a public
	// connection does not wait for a connect. If zero, DefaultPool; if
	// negative, none (every public connection waits for one).
	Pool int
	// ConnectTimeout bounds connects to the server and to local services.
	// If zero, DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// MaxBackoff bounds the wait between attempts to reach the server.
	// If zero, DefaultMaxBackoff.
	MaxBackoff time.Duration
	// IdleTimeout closes a tunnelled connection that moved no byte this
	// long. If zero, never.
	IdleTimeout time.Duration
	// Pools are the relay pools, one per loop. If nil, the client makes its own.
	Pools []*relay.Pool
	// Log receives the client's records. If nil, slog.Default().
	Log *slog.Logger
}

// clientSettings is what Update swaps.
type clientSettings struct {
	name, token string
	server      endpoint.Addr
	services    map[uint16]Service
	pool        int
	connect     time.Duration
	maxBackoff  time.Duration
	idle        time.Duration
}

// Client is a running tunnel client. Its state lives on one loop (home);
// its data connections and relays are spread over every loop.
type Client struct {
	reactor *reactor.Reactor
	pools   []*relay.Pool
	home    *reactor.Loop
	log     *slog.Logger
	warn    *ratelog.Logger
	set     atomic.Pointer[clientSettings]
	conns   *reactor.Live
	stats   []ClientCounters // per loop, owned by it
	live    []map[*tunnelled]struct{}
	next    atomic.Uint32 // loop for the next data connection

	// home's
	state       string // "connecting", "logging in", "up", "waiting"
	ctl         *frameConn
	nonce       [NonceLen]byte // the server's, of the current login
	clientNonce [NonceLen]byte
	session     [SessionLen]byte
	gen         int // session generation: data connections of older ones are dropped
	heartbeat   time.Duration
	lastSeen    time.Duration
	backoff     time.Duration
	retry       reactor.Timer
	ping        reactor.Timer
	dialing     int               // data connections being opened
	ports       map[uint16]string // registration state per port
	stopped     bool
	lastErr     string

	mu   sync.Mutex // guards data
	data map[*clientData]struct{}
	snap atomic.Pointer[clientView] // for Snapshot, written on home
}

// ClientCounters are a client's counters.
type ClientCounters struct {
	Logins    uint64 // successful logins
	Relayed   uint64 // tunnelled connections ended
	Failed    uint64 // tunnelled connections whose local service could not be reached
	BytesUp   uint64 // public client to local service
	BytesDown uint64 // local service to public client
}

func (c *ClientCounters) add(o ClientCounters) {
	c.Logins += o.Logins
	c.Relayed += o.Relayed
	c.Failed += o.Failed
	c.BytesUp += o.BytesUp
	c.BytesDown += o.BytesDown
}

// clientView is the home loop's state as Snapshot shows it.
type clientView struct {
	state   string
	lastErr string
	ports   map[uint16]string
}

// NewClient checks cfg. The client connects once Start is called.
func NewClient(r *reactor.Reactor, cfg ClientConfig) (*Client, error) {
	if cfg.Pools == nil {
		cfg.Pools = relay.PoolSet(relay.PoolConfig{}, len(r.Loops()))
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	n := len(r.Loops())
	c := &Client{
		reactor: r,
		pools:   cfg.Pools,
		home:    r.Loops()[0],
		log:     log.With("tunnel_client", cfg.Name),
		conns:   reactor.NewLive(),
		stats:   make([]ClientCounters, n),
		live:    make([]map[*tunnelled]struct{}, n),
		state:   "stopped",
		ports:   map[uint16]string{},
		data:    map[*clientData]struct{}{},
	}
	c.warn = &ratelog.Logger{Out: c.log}
	for i := range c.live {
		c.live[i] = map[*tunnelled]struct{}{}
	}
	set, err := clientSet(cfg)
	if err != nil {
		return nil, err
	}
	c.set.Store(set)
	c.retry.Func = c.connect
	c.ping.Func = c.heartbeatTick
	c.publish()
	return c, nil
}

func clientSet(cfg ClientConfig) (*clientSettings, error) {
	if err := CheckName(cfg.Name); err != nil {
		return nil, fmt.Errorf("tunnel client: %w", err)
	}
	if cfg.Token == "" {
		return nil, fmt.Errorf("tunnel client %s: no token", cfg.Name)
	}
	if cfg.Server.Network == "" {
		return nil, fmt.Errorf("tunnel client %s: no server", cfg.Name)
	}
	set := &clientSettings{name: cfg.Name, token: cfg.Token, server: cfg.Server, services: map[uint16]Service{},
		pool: cfg.Pool, connect: cfg.ConnectTimeout, maxBackoff: cfg.MaxBackoff, idle: cfg.IdleTimeout}
	for _, s := range cfg.Services {
		if err := CheckName(s.Name); err != nil {
			return nil, fmt.Errorf("tunnel client %s: service %w", cfg.Name, err)
		}
		if s.RemotePort == 0 {
			return nil, fmt.Errorf("tunnel client %s: service %s has no remote port", cfg.Name, s.Name)
		}
		if o, dup := set.services[s.RemotePort]; dup {
			return nil, fmt.Errorf("tunnel client %s: services %s and %s both publish port %d", cfg.Name, o.Name, s.Name, s.RemotePort)
		}
		set.services[s.RemotePort] = s
	}
	if len(set.services) == 0 {
		return nil, fmt.Errorf("tunnel client %s: no service to publish", cfg.Name)
	}
	if set.pool == 0 {
		set.pool = DefaultPool
	}
	if set.pool < 0 {
		set.pool = 0
	}
	if set.connect <= 0 {
		set.connect = DefaultConnectTimeout
	}
	if set.maxBackoff <= 0 {
		set.maxBackoff = DefaultMaxBackoff
	}
	return set, nil
}

// Start begins connecting to the server; it retries forever.
func (c *Client) Start() {
	c.home.Post(func() {
		c.stopped = false
		c.connect()
	})
}

// Update applies a new config: services are registered and unregistered
// on the live session; a new server, name or token logs in again. Live
// tunnelled connections go on either way.
func (c *Client) Update(cfg ClientConfig) error {
	set, err := clientSet(cfg)
	if err != nil {
		return err
	}
	old := c.set.Swap(set)
	c.home.Post(func() {
		if c.stopped {
			return
		}
		if old.name != set.name || old.token != set.token || old.server != set.server {
			c.log.Info("server, name or token changed: logging in again")
			c.reconnect("config changed", false)
			return
		}
		if c.state != "up" {
			return
		}
		for p, s := range set.services {
			if o, ok := old.services[p]; !ok || o.Name != s.Name {
				c.register(s)
			}
		}
		for p := range old.services {
			if _, ok := set.services[p]; !ok {
				c.ctl.send(appendPort(nil, tUnregister, p))
				delete(c.ports, p)
			}
		}
		c.publish()
	})
	return nil
}

// Stop logs out and closes idle data connections; tunnelled connections
// go on. It must not be called from a loop goroutine.
func (c *Client) Stop() {
	done := make(chan struct{})
	c.home.Post(func() {
		c.stopped = true
		c.home.Cancel(&c.retry)
		c.endSession()
		c.state = "stopped"
		c.publish()
		close(done)
	})
	<-done
}

// Drain stops and waits for the tunnelled connections to end.
func (c *Client) Drain(ctx context.Context) error {
	c.Stop()
	return c.conns.Wait(ctx)
}

// Active returns the live tunnelled connections.
func (c *Client) Active() int { return c.conns.Count() }

// connect dials the server (after a lookup in the pool if it needs one).
func (c *Client) connect() {
	if c.stopped {
		return
	}
	set := c.set.Load()
	c.state = "connecting"
	c.publish()
	gen := c.gen
	resolveThen(c.reactor, c.home, set.server, func(sas []sys.Sockaddr, err error) {
		if c.stopped || gen != c.gen {
			return
		}
		if err != nil {
			c.failed(fmt.Errorf("resolve %s: %w", set.server, err))
			return
		}
		dialAny(c.home, sas, set.connect, func(fd int, err error) {
			if c.stopped || gen != c.gen {
				if err == nil {
					c.home.Close(fd)
				}
				return
			}
			if err != nil {
				c.failed(fmt.Errorf("connect %s: %w", set.server, err))
				return
			}
			c.state = "logging in"
			c.publish()
			c.ctl = newFrameConn(c.home, fd, (*clientCtl)(c), false)
			c.ctl.deadline(set.connect, errors.New("no answer to the login within the connect timeout"))
			c.ctl.start()
		})
	})
}

// failed ends the attempt or session and schedules the next one.
func (c *Client) failed(err error) {
	c.lastErr = err.Error()
	c.endSession()
	if c.stopped {
		return
	}
	set := c.set.Load()
	if c.backoff == 0 {
		c.backoff = minBackoff
	} else {
		c.backoff = min(2*c.backoff, set.maxBackoff)
	}
	// Jitter: 75% to 125%, so clients of one server restart apart.
	wait := time.Duration(float64(c.backoff) * (0.75 + rand.Float64()/2))
	c.warn.Log(slog.LevelWarn, "tunnel server unreachable, retrying", "server", set.server.String(), "err", err, "retry_in", wait.Round(time.Millisecond).String())
	c.state = "waiting"
	c.publish()
	c.home.Schedule(&c.retry, wait)
}

// reconnect drops the session and connects again at once.
func (c *Client) reconnect(why string, backoff bool) {
	if backoff {
		c.failed(errors.New(why))
		return
	}
	c.endSession()
	c.backoff = 0
	c.connect()
}

// endSession closes the control connection and the idle data
// connections of the current session.
func (c *Client) endSession() {
	c.gen++
	c.home.Cancel(&c.ping)
	if c.ctl != nil {
		ctl := c.ctl
		c.ctl = nil
		ctl.close(nil)
	}
	c.dialing = 0
	for p := range c.ports {
		delete(c.ports, p)
	}
	c.mu.Lock()
	var idle []*clientData
	for d := range c.data {
		idle = append(idle, d)
	}
	c.mu.Unlock()
	for _, d := range idle {
		d.loop.Post(func() { d.drop() })
	}
	if c.state == "up" {
		c.log.Info("logged out of the tunnel server")
	}
}

// clientCtl is the client's control connection handler.
type clientCtl Client

func (h *clientCtl) frame(fc *frameConn, t byte, p []byte) error {
	c := (*Client)(h)
	c.lastSeen = c.home.Now()
	set := c.set.Load()
	switch t {
	case tChallenge:
		m, err := parseChallenge(p)
		if err != nil {
			return err
		}
		if m.Version != Version {
			return fmt.Errorf("server speaks tunnel protocol version %d, this client %d", m.Version, Version)
		}
		c.nonce = m.Nonce
		login := Login{Name: set.name, Nonce: nonce()}
		login.MAC = loginMAC(set.token, m.Nonce, login.Nonce, set.name)
		fc.send(login.append(nil))
		c.clientNonce = login.Nonce
	case tWelcome:
		m, err := parseWelcome(p)
		if err != nil {
			return err
		}
		if !macEqual(m.MAC, serverMAC(set.token, c.nonce, c.clientNonce, m.Session)) {
			return errors.New("the server could not prove it knows the token: not the right server")
		}
		c.up(m)
	case tError:
		m, err := parseError(p)
		if err != nil {
			return err
		}
		return &ServerError{Code: m.Code, Reason: m.Reason}
	case tRegistered:
		port, err := parsePort(p)
		if err != nil {
			return err
		}
		c.ports[port] = "published"
		c.log.Info("service published", "service", set.services[port].Name, "public_port", port)
		c.publish()
	case tRefused:
		m, err := parseRefused(p)
		if err != nil {
			return err
		}
		c.ports[m.Port] = "refused: " + m.Reason
		c.log.Error("service refused by the server", "service", set.services[m.Port].Name, "public_port", m.Port, "reason", m.Reason)
		c.publish()
	case tNeed:
		r := reader{p: p}
		n := int(r.u16())
		if err := r.done(); err != nil {
			return err
		}
		for i := 0; i < n && c.dialing < maxDataDials; i++ {
			c.openData()
		}
	case tPong:
		if err := parseEmpty(p); err != nil {
			return err
		}
	default:
		return protoErr("unexpected %s frame from the server", frameName(t))
	}
	return nil
}

func (h *clientCtl) closed(fc *frameConn, err error) {
	c := (*Client)(h)
	if c.ctl != fc {
		return // ended by endSession
	}
	c.ctl = nil
	if err == nil {
		err = errors.New("server closed the control connection")
	}
	var se *ServerError
	if errors.As(err, &se) && se.Code == CodeAuth {
		c.log.Error("login refused by the server: check the name and token", "reason", se.Reason)
	}
	c.failed(err)
}

// ServerError is an Error frame from the server.
type ServerError struct {
	Code   byte
	Reason string
}

func (e *ServerError) Error() string { return "server: " + e.Reason }

// up starts a session: register every service, open the pool.
func (c *Client) up(m Welcome) {
	set := c.set.Load()
	c.ctl.deadline(0, nil)
	c.session = m.Session
	c.heartbeat = time.Duration(m.Heartbeat) * time.Second
	c.backoff = 0
	c.lastErr = ""
	c.state = "up"
	c.stats[c.home.ID()].Logins++
	c.log.Info("logged in to the tunnel server", "server", set.server.String())
	for _, s := range set.services {
		c.register(s)
	}
	for i := 0; i < set.pool; i++ {
		c.openData()
	}
	c.home.Schedule(&c.ping, c.heartbeat)
	c.publish()
}

func (c *Client) register(s Service) {
	c.ports[s.RemotePort] = "registering"
	r := Register{Port: s.RemotePort, Name: s.Name}
	c.ctl.send(r.append(nil))
}

// heartbeatTick pings the server, and gives up on one silent for three
// heartbeats.
func (c *Client) heartbeatTick() {
	if c.state != "up" {
		return
	}
	if c.home.Now()-c.lastSeen > 3*c.heartbeat {
		c.failed(fmt.Errorf("no answer from the server for %s", 3*c.heartbeat))
		return
	}
	c.ctl.send(appendFrame(nil, tPing, nil))
	c.home.Schedule(&c.ping, c.heartbeat)
}

// openData opens one more data connection, on the next loop. On home.
func (c *Client) openData() {
	set := c.set.Load()
	loops := c.reactor.Loops()
	l := loops[int(c.next.Add(1))%len(loops)]
	c.dialing++
	d := &clientData{c: c, loop: l, gen: c.gen, session: c.session, token: set.token}
	c.mu.Lock()
	c.data[d] = struct{}{}
	c.mu.Unlock()
	server := set.server
	timeout := set.connect
	l.Post(func() {
		resolveThen(c.reactor, l, server, func(sas []sys.Sockaddr, err error) {
			if err != nil {
				d.gone(fmt.Errorf("resolve %s: %w", server, err))
				return
			}
			dialAny(l, sas, timeout, d.dialed)
		})
	})
}

// dataDone is told on home that a data connection stopped being idle:
// used by a public connection (replace it) or lost.
func (c *Client) dataDone(gen int, used bool) {
	if gen != c.gen {
		return
	}
	if c.dialing > 0 {
		c.dialing--
	}
	if used && c.state == "up" && c.dialing < maxDataDials {
		c.openData()
	}
}

// clientData is one of the client's data connections until Start.
type clientData struct {
	c       *Client
	loop    *reactor.Loop
	gen     int
	session [SessionLen]byte
	token   string
	fc      *frameConn
	done    bool
}

func (d *clientData) dialed(fd int, err error) {
	if err != nil {
		d.gone(err)
		return
	}
	if d.done { // the session ended meanwhile
		d.loop.Close(fd)
		return
	}
	d.fc = newFrameConn(d.loop, fd, d, true)
	d.fc.deadline(d.c.set.Load().connect, errors.New("no challenge from the server"))
	d.fc.start()
}

func (d *clientData) frame(fc *frameConn, t byte, p []byte) error {
	switch t {
	case tChallenge:
		m, err := parseChallenge(p)
		if err != nil {
			return err
		}
		h := Data{Session: d.session, MAC: dataMAC(d.token, m.Nonce, d.session)}
		fc.send(h.append(nil))
		fc.deadline(0, nil)
		return nil
	case tStart:
		m, err := parseStart(p)
		if err != nil {
			return err
		}
		fd, err := fc.detach()
		if err != nil {
			return err
		}
		d.forget()
		c := d.c
		gen := d.gen
		c.home.Post(func() { c.dataDone(gen, true) })
		c.serve(d.loop, fd, m)
		return nil
	case tError:
		m, err := parseError(p)
		if err != nil {
			return err
		}
		return &ServerError{Code: m.Code, Reason: m.Reason}
	}
	return protoErr("unexpected %s frame on a data connection", frameName(t))
}

func (d *clientData) closed(fc *frameConn, err error) { d.gone(err) }

// gone is a data connection that ended before Start.
func (d *clientData) gone(err error) {
	if d.done {
		return
	}
	d.forget()
	if err != nil {
		d.c.log.Debug("data connection failed", "err", err)
	}
	c, gen := d.c, d.gen
	c.home.Post(func() { c.dataDone(gen, false) })
}

// drop closes an idle data connection of a session that ended. On d.loop.
func (d *clientData) drop() {
	if d.done {
		return
	}
	d.forget()
	if d.fc != nil {
		d.fc.h = discard{}
		d.fc.close(nil)
	}
}

func (d *clientData) forget() {
	d.done = true
	d.c.mu.Lock()
	delete(d.c.data, d)
	d.c.mu.Unlock()
}

// discard is the handler of a connection nobody needs news of.
type discard struct{}

func (discard) frame(*frameConn, byte, []byte) error { return errors.New("unexpected frame") }
func (discard) closed(*frameConn, error)             {}

// serve connects a started data connection to its local service and
// relays. On l.
func (c *Client) serve(l *reactor.Loop, data int, m Start) {
	set := c.set.Load()
	svc, ok := set.services[m.Port]
	if !ok {
		c.stats[l.ID()].Failed++
		c.warn.Log(slog.LevelWarn, "connection for a port this client does not publish", "public_port", m.Port)
		l.CloseReset(data)
		return
	}
	c.conns.Add()
	resolveThen(c.reactor, l, svc.Local, func(sas []sys.Sockaddr, err error) {
		if err != nil {
			c.localFailed(l, data, svc, fmt.Errorf("resolve: %w", err))
			return
		}
		dialAny(l, sas, set.connect, func(fd int, err error) {
			if err != nil {
				c.localFailed(l, data, svc, err)
				return
			}
			t := &tunnelled{c: c}
			r := relay.Start(l, c.pools[l.ID()], data, fd, relay.Options{IdleTimeout: set.idle, Done: t.done})
			if !t.ended {
				t.relay = r
				c.live[l.ID()][t] = struct{}{}
			}
		})
	})
}

// tunnelled is a connection being relayed between a data connection and
// its local service.
type tunnelled struct {
	c     *Client
	relay *relay.Relay
	ended bool
}

func (c *Client) localFailed(l *reactor.Loop, data int, svc Service, err error) {
	c.stats[l.ID()].Failed++
	c.warn.Log(slog.LevelWarn, "local service unreachable", "service", svc.Name, "local", svc.Local.String(), "err", err)
	l.CloseReset(data) // the public client sees a reset, as if refused
	c.conns.Done()
}

func (t *tunnelled) done(r *relay.Relay, err error) {
	c, l := t.c, r.Loop()
	t.ended = true
	delete(c.live[l.ID()], t)
	st := &c.stats[l.ID()]
	st.Relayed++
	st.BytesUp += r.BytesAB()
	st.BytesDown += r.BytesBA()
	c.conns.Done()
}

// publish copies the home state for Snapshot. On home.
func (c *Client) publish() {
	v := &clientView{state: c.state, lastErr: c.lastErr, ports: make(map[uint16]string, len(c.ports))}
	for p, s := range c.ports {
		v.ports[p] = s
	}
	c.snap.Store(v)
}

// ClientStatus is what `sluice stats` shows of a client.
type ClientStatus struct {
	ClientCounters
	State    string   `json:"state"`
	Server   string   `json:"server"`
	LastErr  string   `json:"last_error,omitempty"`
	Services []string `json:"services"` // "PORT name -> local: state"
	Active   int      `json:"active"`
}

// Snapshot returns the client's state and counters. It must not be called
// from a loop goroutine.
func (c *Client) Snapshot(ctx context.Context) (ClientStatus, error) {
	cnt, err := reactor.Gather(ctx, c.reactor.Loops(), func(l *reactor.Loop) ClientCounters {
		st := c.stats[l.ID()]
		for t := range c.live[l.ID()] {
			st.BytesUp += t.relay.BytesAB()
			st.BytesDown += t.relay.BytesBA()
		}
		return st
	}, (*ClientCounters).add)
	set := c.set.Load()
	v := c.snap.Load()
	st := ClientStatus{ClientCounters: cnt, State: v.state, Server: set.server.String(), LastErr: v.lastErr, Active: c.conns.Count()}
	for p, s := range set.services {
		state := v.ports[p]
		if state == "" {
			state = "not registered"
		}
		st.Services = append(st.Services, fmt.Sprintf("%d %s -> %s: %s", p, s.Name, s.Local, state))
	}
	sort.Strings(st.Services)
	return st, err
}

// resolveThen calls then on l with a's addresses, looked up in the
// reactor's pool when a names a host.
func resolveThen(r *reactor.Reactor, l *reactor.Loop, a endpoint.Addr, then func([]sys.Sockaddr, error)) {
	if !a.NeedsLookup() {
		sas, err := a.Sockaddrs(context.Background(), false)
		then(sas, err)
		return
	}
	err := r.Pool().Submit(l, func() func() {
		ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
		defer cancel()
		sas, err := a.Sockaddrs(ctx, false)
		return func() { then(sas, err) }
	})
	if err != nil {
		then(nil, err)
	}
}

// dialAny connects to the first of sas that answers.
func dialAny(l *reactor.Loop, sas []sys.Sockaddr, timeout time.Duration, done endpoint.DialFunc) {
	if len(sas) == 0 {
		done(-1, errors.New("no address"))
		return
	}
	var errs []error
	var try func(i int)
	try = func(i int) {
		endpoint.Dial(l, sas[i], timeout, func(fd int, err error) {
			if err == nil {
				done(fd, nil)
				return
			}
			errs = append(errs, err)
			if i+1 < len(sas) {
				try(i + 1)
				return
			}
			done(-1, errors.Join(errs...))
		})
	}
	try(0)
}
