package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/sluice-proxy/sluice/pkg/accounting"
	"github.com/sluice-proxy/sluice/pkg/endpoint"
	"github.com/sluice-proxy/sluice/pkg/ratelimit"
	"github.com/sluice-proxy/sluice/pkg/reactor"
	"github.com/sluice-proxy/sluice/pkg/relay"
	"github.com/sluice-proxy/sluice/pkg/sys"
)

// session is one logged-in client on the server. Its control connection
// lives on ctlLoop, which owns the fields marked so; the pools of data
// connections and waiting public connections are shared by the loops
// under srv.mu (they change once per public connection, not per byte).
type session struct {
	srv       *Server
	name      string
	token     string
	id        [SessionLen]byte
	from      netip.Addr
	heartbeat time.Duration

	// ctlLoop's
	ctl      *frameConn
	ctlLoop  *reactor.Loop
	lastSeen time.Duration
	ended    bool

	// under srv.mu
	ports     map[uint16]*pubPort
	idle      []*dataConn
	pending   []*pubConn
	requested int  // data connections asked for with Need and not yet come
	replaced  bool // a newer login took over
	gone      bool // ended: no more data connections or public ones

	accepted  atomic.Uint64
	active    atomic.Int64
	bytesUp   atomic.Uint64 // of ended public connections
	bytesDown atomic.Uint64
}

// pubPort is a public port a session claimed.
type pubPort struct {
	port    uint16
	name    string
	sess    *session // under srv.mu; changes when a client logs in again
	ln      *endpoint.Listener
	addr    string
	closing bool
}

// frame handles the control connection's frames after login.
func (ss *session) frame(c *frameConn, t byte, p []byte) error {
	ss.lastSeen = c.loop.Now()
	switch t {
	case tPing:
		if err := parseEmpty(p); err != nil {
			return err
		}
		c.send(appendFrame(nil, tPong, nil))
	case tRegister:
		m, err := parseRegister(p)
		if err != nil {
			return err
		}
		ss.register(m)
	case tUnregister:
		port, err := parsePort(p)
		if err != nil {
			return err
		}
		ss.unregister(port)
	default:
		return protoErr("unexpected %s frame on a control connection", frameName(t))
	}
	return nil
}

func (ss *session) closed(c *frameConn, err error) {
	why := "control connection closed"
	if err != nil {
		why = "control connection failed: " + err.Error()
	}
	ss.end(0, why)
}

// checkAlive is the control connection's timer: a client silent for three
// heartbeats is dropped.
func (ss *session) checkAlive() {
	l := ss.ctlLoop
	if dead := ss.lastSeen + 3*ss.heartbeat; l.Now() < dead {
		l.ScheduleAt(&ss.ctl.timer, dead)
		return
	}
	ss.end(0, fmt.Sprintf("no heartbeat for %s", 3*ss.heartbeat))
}

// end logs the session out: its control connection closes (after an
// Error frame when code is set), its public ports close unless a newer
// login took them, its idle data connections close and waiting public
// connections are refused. Live public connections go on. On ctlLoop.
func (ss *session) end(code byte, why string) {
	if ss.ended {
		return
	}
	ss.ended = true
	s := ss.srv
	if code != 0 {
		e := ErrorMsg{Code: code, Reason: why}
		ss.ctl.closeAfter(e.append(nil))
	} else {
		ss.ctl.close(nil)
	}
	s.mu.Lock()
	ss.gone = true
	if s.sessions[ss.name] == ss {
		delete(s.sessions, ss.name)
	}
	if s.byID[ss.id] == ss {
		delete(s.byID, ss.id)
	}
	idle, pending := ss.idle, ss.pending
	ss.idle, ss.pending = nil, nil
	var ports []*pubPort
	for _, pp := range ss.ports {
		ports = append(ports, pp)
	}
	ss.ports = map[uint16]*pubPort{}
	s.mu.Unlock()
	for _, pp := range ports {
		s.closePort(pp)
	}
	for _, dc := range idle {
		dc.c.loop.Post(func() { dc.c.close(nil) })
	}
	for _, pc := range pending {
		pc.loop.Post(func() { pc.refuse("client logged out") })
	}
	if !ss.replaced {
		s.log.Info("client logged out", "client", ss.name, "why", why)
	}
}

// register claims a public port: checked here, listened on in the
// blocking pool (binding may resolve a name), answered on ctlLoop.
func (ss *session) register(m Register) {
	s := ss.srv
	set := s.set.Load()
	refuse := func(reason string) {
		s.warn.Log(slog.LevelWarn, "public port refused", "client", ss.name, "port", m.Port, "service", m.Name, "reason", reason)
		r := Refused{Port: m.Port, Reason: reason}
		ss.ctl.send(r.append(nil))
	}
	if why := set.portAllowed(ss.name, m.Port); why != "" {
		refuse(why)
		return
	}
	s.mu.Lock()
	if pp := s.ports[m.Port]; pp != nil {
		mine := pp.sess == ss && !pp.closing
		s.mu.Unlock()
		if !mine {
			refuse(fmt.Sprintf("port %d is taken by another client", m.Port))
			return
		}
		if pp.ln != nil { // held since a previous login: already listening
			pp.name = m.Name
			ss.ctl.send(appendPort(nil, tRegistered, m.Port))
		}
		return
	}
	pp := &pubPort{port: m.Port, name: m.Name, sess: ss}
	s.ports[m.Port] = pp
	ss.ports[m.Port] = pp
	s.mu.Unlock()
	addr := endpoint.Addr{Network: endpoint.TCP, Host: set.bind, Port: uint32(m.Port)}
	l := ss.ctlLoop
	err := s.reactor.Pool().Submit(l, func() func() {
		ln, err := endpoint.Listen(context.Background(), addr)
		if err == nil {
			err = ln.Serve(s.reactor.Loops(), func(al *reactor.Loop, fd int) { s.public(al, fd, pp) })
			if err != nil {
				ln.Close()
			}
		}
		return func() { ss.listened(pp, ln, err) }
	})
	if err != nil {
		ss.listened(pp, nil, err)
	}
}

// listened answers a Register once its listener is up, or not.
func (ss *session) listened(pp *pubPort, ln *endpoint.Listener, err error) {
	s := ss.srv
	s.mu.Lock()
	owner := pp.sess
	if err != nil {
		if s.ports[pp.port] == pp {
			delete(s.ports, pp.port)
		}
		delete(owner.ports, pp.port)
		s.mu.Unlock()
		if !owner.ended {
			s.warn.Log(slog.LevelWarn, "public port refused", "client", owner.name, "port", pp.port, "err", err)
			r := Refused{Port: pp.port, Reason: err.Error()}
			owner.ctl.send(r.append(nil))
		}
		return
	}
	pp.ln, pp.addr = ln, ln.Addr()
	closing := pp.closing
	s.mu.Unlock()
	if closing {
		go s.finishClose(pp) // given up while it was being opened
		return
	}
	s.log.Info("public port open", "client", owner.name, "service", pp.name, "listen", pp.addr)
	if owner == ss {
		ss.ctl.send(appendPort(nil, tRegistered, pp.port))
	}
}

func (ss *session) unregister(port uint16) {
	s := ss.srv
	s.mu.Lock()
	pp := ss.ports[port]
	s.mu.Unlock()
	if pp != nil {
		s.log.Info("public port closed by its client", "client", ss.name, "port", port)
		s.closePort(pp)
	}
}

// closePort stops listening on pp and frees the port once closed. Any
// goroutine.
func (s *Server) closePort(pp *pubPort) {
	s.mu.Lock()
	if pp.closing {
		s.mu.Unlock()
		return
	}
	pp.closing = true
	delete(pp.sess.ports, pp.port)
	opening := pp.ln == nil
	s.mu.Unlock()
	if !opening {
		go s.finishClose(pp)
	}
}

func (s *Server) finishClose(pp *pubPort) {
	pp.ln.Close()
	s.mu.Lock()
	if s.ports[pp.port] == pp {
		delete(s.ports, pp.port)
	}
	s.mu.Unlock()
}

// dataConn is a pooled data connection, idle until a public connection
// takes it.
type dataConn struct {
	ss    *session
	c     *frameConn
	taken bool // popped from the pool: its loop must not close it
}

// frame: nothing may arrive on an idle data connection.
func (dc *dataConn) frame(c *frameConn, t byte, p []byte) error {
	return protoErr("%s frame on an idle data connection", frameName(t))
}

func (dc *dataConn) closed(c *frameConn, err error) {
	s := dc.ss.srv
	s.mu.Lock()
	for i, o := range dc.ss.idle {
		if o == dc {
			dc.ss.idle = append(dc.ss.idle[:i], dc.ss.idle[i+1:]...)
			break
		}
	}
	s.mu.Unlock()
}

// HandleEvent of an idle data connection: the client closed it, or sent
// what it must not. A taken one is its new owner's.
func (dc *dataConn) HandleEvent(ev uint32) {
	s := dc.ss.srv
	s.mu.Lock()
	taken := dc.taken
	s.mu.Unlock()
	if !taken {
		dc.c.HandleEvent(ev)
	}
}

// addData pools a data connection that proved itself, or gives it to the
// oldest public connection waiting. On the data connection's loop.
func (ss *session) addData(c *frameConn) {
	s := ss.srv
	dc := &dataConn{ss: ss, c: c}
	c.h = dc
	s.mu.Lock()
	if ss.requested > 0 {
		ss.requested--
	}
	if ss.gone {
		s.mu.Unlock()
		c.close(nil)
		return
	}
	if len(ss.pending) > 0 {
		pc := ss.pending[0]
		ss.pending = ss.pending[1:]
		dc.taken = true
		s.mu.Unlock()
		s.pair(pc, dc)
		return
	}
	if len(ss.idle) >= DefaultMaxIdleData {
		s.mu.Unlock()
		s.log.Debug("data connection over the pool bound closed", "client", ss.name)
		c.close(nil)
		return
	}
	ss.idle = append(ss.idle, dc)
	s.mu.Unlock()
	// Called from c's own frame handler: its read loop goes on with the
	// new handler (a frame on an idle data connection is an error).
	c.loop.SetHandler(c.fd, dc)
}

// pubConn is a public connection, waiting for a data connection and then
// relayed through it.
type pubConn struct {
	s      *Server
	ss     *session
	loop   *reactor.Loop
	fd     int
	port   uint16
	from   string
	timer  reactor.Timer
	relay  *relay.Relay
	user   *ratelimit.User
	rec    *accounting.Record
	ended  bool
	counts bool // counted in ss.active and s.conns
}

// public takes a connection accepted on a public port.
func (s *Server) public(l *reactor.Loop, fd int, pp *pubPort) {
	st := &s.stats[l.ID()]
	st.Accepted++
	set := s.set.Load()
	s.mu.Lock()
	ss := pp.sess
	gone := ss.gone || pp.closing
	s.mu.Unlock()
	pc := &pubConn{s: s, ss: ss, loop: l, fd: fd, port: pp.port}
	if sa, err := sys.PeerAddr(fd); err == nil {
		pc.from = endpoint.FormatSockaddr(sa)
	}
	if gone {
		pc.refuseNow("client logged out")
		return
	}
	ss.accepted.Add(1)
	if set.maxConns > 0 && ss.active.Load() >= int64(set.maxConns) {
		pc.refuseNow("client's connection limit reached")
		return
	}
	if set.admit != nil {
		if err := set.admit(); err != nil {
			pc.refuseNow(err.Error())
			return
		}
	}
	if set.rates != nil {
		if u := set.rates.User(ss.name); u != nil {
			if !u.Acquire() {
				pc.refuseNow("client's class connection limit reached")
				return
			}
			pc.user = u
		}
	}
	if err := l.Register(fd, endpoint.ConnEvents, nil); err != nil {
		pc.refuseNow(err.Error())
		return
	}
	pc.counts = true
	ss.active.Add(1)
	s.conns.Add()
	if set.acct != nil {
		pc.rec = set.acct.Record(accounting.Key(ss.name, netip.Addr{}))
		now := time.Now()
		if err := pc.rec.Check(now); err != nil {
			pc.refuse("quota exceeded: " + err.Error())
			return
		}
		pc.rec.Open(now)
	}
	s.mu.Lock()
	if ss.gone {
		s.mu.Unlock()
		pc.refuse("client logged out")
		return
	}
	if dc := ss.takeIdle(l); dc != nil {
		s.mu.Unlock()
		if dc.c.loop == l {
			s.pair(pc, dc)
		} else {
			dc.c.loop.Post(func() { s.pair(pc, dc) })
		}
		return
	}
	if len(ss.pending) >= DefaultMaxPending {
		s.mu.Unlock()
		pc.refuse("too many public connections waiting for the client")
		return
	}
	ss.pending = append(ss.pending, pc)
	need := len(ss.pending) - ss.requested
	if need > 0 {
		ss.requested += need
	}
	s.mu.Unlock()
	pc.timer.Func = pc.waitedTooLong
	l.Schedule(&pc.timer, DefaultWaitData)
	if need > 0 {
		ss.ctlLoop.Post(func() {
			if !ss.ended {
				ss.ctl.send(appendCount(nil, need))
			}
		})
	}
}

// takeIdle pops an idle data connection, one on l if there is one. Under
// srv.mu.
func (ss *session) takeIdle(l *reactor.Loop) *dataConn {
	n := len(ss.idle)
	if n == 0 {
		return nil
	}
	i := n - 1
	for j := n - 1; j >= 0; j-- {
		if ss.idle[j].c.loop == l {
			i = j
			break
		}
	}
	dc := ss.idle[i]
	ss.idle = append(ss.idle[:i], ss.idle[i+1:]...)
	dc.taken = true
	// The pool shrank by one: the client replaces it when it sees Start.
	return dc
}

// waitedTooLong refuses a public connection no data connection came for.
func (pc *pubConn) waitedTooLong() {
	s := pc.s
	s.mu.Lock()
	found := false
	for i, o := range pc.ss.pending {
		if o == pc {
			pc.ss.pending = append(pc.ss.pending[:i], pc.ss.pending[i+1:]...)
			found = true
			break
		}
	}
	s.mu.Unlock()
	if found {
		pc.refuse(fmt.Sprintf("no data connection from the client within %s", DefaultWaitData))
	}
}

// pair relays pc through dc, moving dc to pc's loop first if it lives on
// another one. Called on dc's loop with dc taken (no longer in the pool,
// so nothing else touches it).
func (s *Server) pair(pc *pubConn, dc *dataConn) {
	fd, err := dc.c.detach()
	from := dc.c.loop
	if err != nil {
		dc.c.close(err)
		pc.loop.Post(func() { pc.refuse("data connection failed: " + err.Error()) })
		return
	}
	if from == pc.loop {
		pc.start(fd)
		return
	}
	if err := from.Unregister(fd); err != nil {
		sys.CloseReset(fd)
		pc.loop.Post(func() { pc.refuse("data connection failed: " + err.Error()) })
		return
	}
	pc.loop.Post(func() {
		if err := pc.loop.Register(fd, endpoint.ConnEvents, nil); err != nil {
			sys.CloseReset(fd)
			pc.refuse("data connection failed: " + err.Error())
			return
		}
		pc.start(fd)
	})
}

// start sends Start on the data connection and relays. On pc's loop.
func (pc *pubConn) start(data int) {
	pc.loop.Cancel(&pc.timer)
	st := Start{Port: pc.port, From: pc.from}
	b := st.append(nil)
	if n, err := sys.Write(data, b); n != len(b) {
		pc.loop.CloseReset(data)
		if err == nil {
			err = errors.New("short write")
		}
		pc.refuse("data connection failed: " + err.Error())
		return
	}
	opts := relay.Options{IdleTimeout: pc.s.set.Load().idle, Done: pc.done}
	if pc.user != nil {
		opts.LimitAB, opts.LimitBA = pc.user.Up(), pc.user.Down()
	}
	r := relay.Start(pc.loop, pc.s.pools[pc.loop.ID()], pc.fd, data, opts)
	if !pc.ended {
		pc.relay = r
		pc.s.live[pc.loop.ID()][pc] = struct{}{}
	}
}

// refuseNow closes a public connection not yet registered or counted.
func (pc *pubConn) refuseNow(why string) {
	pc.s.stats[pc.loop.ID()].Refused++
	sys.CloseReset(pc.fd)
	pc.release()
	pc.s.warn.Log(slog.LevelWarn, "public connection refused", "client", pc.ss.name, "port", pc.port, "from", pc.from, "why", why)
}

// refuse closes a registered public connection with RST.
func (pc *pubConn) refuse(why string) {
	pc.loop.Cancel(&pc.timer)
	pc.s.stats[pc.loop.ID()].Refused++
	pc.loop.CloseReset(pc.fd)
	pc.release()
	pc.s.warn.Log(slog.LevelWarn, "public connection refused", "client", pc.ss.name, "port", pc.port, "from", pc.from, "why", why)
}

// release gives back what the connection counted in.
func (pc *pubConn) release() {
	if pc.user != nil {
		pc.user.Release()
		pc.user = nil
	}
	if pc.rec != nil {
		pc.rec.Close(time.Now())
		pc.rec = nil
	}
	if pc.counts {
		pc.counts = false
		pc.ss.active.Add(-1)
		pc.s.conns.Done()
	}
}

func (pc *pubConn) done(r *relay.Relay, err error) {
	pc.ended = true
	s := pc.s
	delete(s.live[pc.loop.ID()], pc)
	st := &s.stats[pc.loop.ID()]
	st.Relayed++
	up, down := r.BytesAB(), r.BytesBA()
	st.BytesUp += up
	st.BytesDown += down
	pc.ss.bytesUp.Add(up)
	pc.ss.bytesDown.Add(down)
	if pc.rec != nil {
		pc.rec.Add(1, up, down, time.Now())
	}
	if err != nil && !errors.Is(err, relay.ErrIdleTimeout) {
		s.log.Debug("public connection reset", "client", pc.ss.name, "port", pc.port, "err", err)
	}
	pc.release()
}

// ClientStats describe one logged-in client for `sluice stats`.
type ClientStats struct {
	Name      string   `json:"name"`
	Addr      string   `json:"addr"`
	Ports     []string `json:"ports"` // "PORT service"
	IdleData  int      `json:"idle_data"`
	Active    int64    `json:"active"`
	Accepted  uint64   `json:"accepted"`
	BytesUp   uint64   `json:"bytes_up"`
	BytesDown uint64   `json:"bytes_down"`
}

// Snapshot returns the server's counters (with live connections' bytes so
// far) and its clients. It must not be called from a loop goroutine.
func (s *Server) Snapshot(ctx context.Context) (ServerStats, []ClientStats, error) {
	type live struct {
		st     ServerStats
		byName map[string][2]uint64
	}
	got, err := reactor.Gather(ctx, s.reactor.Loops(), func(l *reactor.Loop) live {
		v := live{st: s.stats[l.ID()], byName: map[string][2]uint64{}}
		for pc := range s.live[l.ID()] {
			up, down := pc.relay.BytesAB(), pc.relay.BytesBA()
			v.st.BytesUp += up
			v.st.BytesDown += down
			b := v.byName[pc.ss.name]
			v.byName[pc.ss.name] = [2]uint64{b[0] + up, b[1] + down}
		}
		return v
	}, func(t *live, o live) {
		t.st.add(o.st)
		if t.byName == nil {
			t.byName = map[string][2]uint64{}
		}
		for k, b := range o.byName {
			a := t.byName[k]
			t.byName[k] = [2]uint64{a[0] + b[0], a[1] + b[1]}
		}
	})
	s.mu.Lock()
	var cs []ClientStats
	for _, ss := range s.sessions {
		c := ClientStats{Name: ss.name, Addr: ss.from.String(), IdleData: len(ss.idle),
			Active: ss.active.Load(), Accepted: ss.accepted.Load(),
			BytesUp: ss.bytesUp.Load() + got.byName[ss.name][0], BytesDown: ss.bytesDown.Load() + got.byName[ss.name][1]}
		for p, pp := range ss.ports {
			c.Ports = append(c.Ports, strconv.Itoa(int(p))+" "+pp.name)
		}
		cs = append(cs, c)
	}
	s.mu.Unlock()
	sortClients(cs)
	return got.st, cs, err
}
