package socks5

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/sluice-proxy/sluice/pkg/accounting"
	"github.com/sluice-proxy/sluice/pkg/acl"
	"github.com/sluice-proxy/sluice/pkg/endpoint"
	"github.com/sluice-proxy/sluice/pkg/ratelimit"
	"github.com/sluice-proxy/sluice/pkg/reactor"
	"github.com/sluice-proxy/sluice/pkg/relay"
	"github.com/sluice-proxy/sluice/pkg/sys"
)

// state is where a client connection's handshake is.
type state uint8

const (
	stGreeting state = iota // reading the method selection
	stAuth                  // reading the RFC 1929 request
	stVerify                // the password is checked in the pool
	stRequest               // reading the request
	stPolicy                // resolving (in the pool) and checking the rules
	stDial                  // connecting to the target
	stBind                  // BIND: waiting for the inbound connection (bind.go)
	stClosed                // closed, or handed to a relay
)

// maxPending bounds the handshake bytes a connection keeps: a greeting, an
// RFC 1929 request and a request at their largest, and one read of early
// data after them.
const maxPending = 257 + 513 + 262 + readChunk

// readChunk is the most one read takes during the handshake.
const readChunk = 2048

// conn is one client connection during its handshake. All of it is
// touched only on its loop; once the session is relayed only its session
// value stays.
type conn struct {
	s        *Service
	loop     *reactor.Loop
	fd       int
	client   netip.Addr
	state    state
	timer    reactor.Timer
	readable bool
	v4       bool   // the client speaks SOCKS4 or 4a: its replies are SOCKS4's
	in       []byte // bytes read and not yet used

	user  string
	req   Request
	host  string     // the target as rules see it (acl.CanonicalHost)
	ip    netip.Addr // the target's address, when the request names one
	addrs []netip.Addr
	next  int
	start time.Time

	lfd  int                // BIND's listening socket; -1 when none
	rl   *ratelimit.User    // the user's connection limit slot, if taken
	acct *accounting.Record // the identity this request counts for
}

func (s *Service) accept(l *reactor.Loop, fd int) {
	s.stats[l.ID()].Accepted++
	if n := s.live.Add(); s.cfg.MaxConns > 0 && n > int64(s.cfg.MaxConns) {
		l.Close(fd)
		s.live.Done()
		s.warn.Log(slog.LevelWarn, "connection limit reached", "max_conns", s.cfg.MaxConns)
		return
	}
	if s.cfg.Admit != nil {
		if err := s.cfg.Admit(); err != nil {
			l.Close(fd)
			s.live.Done()
			s.warn.Log(slog.LevelWarn, "connection refused", "err", err)
			return
		}
	}
	c := &conn{s: s, loop: l, fd: fd, lfd: -1, readable: true, start: time.Now()}
	if sa, err := sys.PeerAddr(fd); err == nil {
		c.client = sockaddrAddrPort(sa).Addr()
	}
	c.timer.Func = c.expire
	if err := l.Register(fd, endpoint.ConnEvents, c); err != nil {
		l.Close(fd)
		s.live.Done()
		s.warn.Log(slog.LevelWarn, "accept failed", "err", err)
		return
	}
	l.Schedule(&c.timer, s.cfg.HandshakeTimeout)
	c.pump()
}

func sockaddrAddrPort(sa sys.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *sys.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *sys.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
	}
	return netip.AddrPort{}
}

// HandleEvent records the client socket's readiness.
func (c *conn) HandleEvent(ev uint32) {
	if ev&(sys.EventIn|sys.EventRdHup|sys.EventHup|sys.EventErr) != 0 {
		c.readable = true
	}
	if c.state == stBind && ev&(sys.EventRdHup|sys.EventHup|sys.EventErr) != 0 {
		c.close(false) // the client gave up waiting
		return
	}
	c.pump()
}

// expire ends a handshake that took too long (a client that stopped
// mid-way, or a slow lookup or login).
func (c *conn) expire() {
	if c.state == stBind {
		// The expected host never came: the second reply says so.
		c.refuse(RepHostUnreachable, "bind: no inbound connection in time")
		return
	}
	c.s.log.Debug("handshake timeout", "client", c.client.String(), "state", int(c.state))
	c.s.stats[c.loop.ID()].Refused++
	c.close(true)
}

// pump parses what was read and reads more while the handshake waits for
// bytes.
func (c *conn) pump() {
	for c.state == stGreeting || c.state == stAuth || c.state == stRequest {
		if len(c.in) > 0 && c.step() {
			continue
		}
		if c.state == stClosed || !c.readable {
			return
		}
		if !c.read() {
			return
		}
	}
}

// read appends one read's bytes to c.in; false when nothing came (the
// connection may have been closed).
func (c *conn) read() bool {
	var buf [readChunk]byte
	n, err := sys.Read(c.fd, buf[:])
	if sys.IsAgain(err) {
		c.readable = false
		return false
	}
	if err != nil || n == 0 {
		c.s.log.Debug("client closed during the handshake", "client", c.client.String(), "err", err)
		c.s.stats[c.loop.ID()].Refused++
		c.close(false)
		return false
	}
	if len(c.in)+n > maxPending {
		c.protoError(errors.New("handshake too long"))
		return false
	}
	c.in = append(c.in, buf[:n]...)
	return true
}

// step parses one message of c.in and acts on it; false when the message
// is incomplete or the handshake now waits (pool, dial) or ended.
func (c *conn) step() bool {
	switch c.state {
	case stGreeting:
		if c.in[0] == Version4 {
			return c.request4()
		}
		methods, n, err := ParseGreeting(c.in)
		if err == ErrShort {
			return false
		}
		if err != nil {
			c.protoError(err)
			return false
		}
		c.in = c.in[n:]
		return c.selectMethod(methods)
	case stAuth:
		name, pass, n, err := ParseUserPass(c.in)
		if err == ErrShort {
			return false
		}
		if err != nil {
			c.protoError(err)
			return false
		}
		c.in = c.in[n:]
		c.login(name, pass)
		return c.state == stRequest
	case stRequest:
		req, n, err := ParseRequest(c.in)
		if err == ErrShort {
			return false
		}
		switch err {
		case nil:
		case ErrAddrType:
			c.refuse(RepAddrNotSupported, "address type not supported")
			return false
		case ErrEmpty:
			c.refuse(RepHostUnreachable, "empty domain name")
			return false
		default:
			c.protoError(err)
			return false
		}
		c.in = c.in[n:]
		c.req = req
		c.request()
		return false
	}
	return false
}

// protoError closes a connection that does not speak SOCKS5 as it should;
// there is no reply that could tell it.
func (c *conn) protoError(err error) {
	c.s.log.Debug("bad handshake", "client", c.client.String(), "err", err)
	c.s.stats[c.loop.ID()].Refused++
	c.close(true)
}

// send writes a short handshake message. A fresh socket's send buffer
// always has room for it, so a short write is an error like any other.
func (c *conn) send(msg []byte) bool {
	n, err := sys.Write(c.fd, msg)
	if err != nil || n != len(msg) {
		c.s.log.Debug("handshake write failed", "client", c.client.String(), "err", err)
		c.close(true)
		return false
	}
	return true
}

// selectMethod answers the greeting. With users, a client whose address
// belongs to a user may skip authentication; anyone else must log in with
// RFC 1929. Without users nobody logs in.
func (c *conn) selectMethod(methods []byte) bool {
	users := c.s.cfg.Users
	var m Method
	switch {
	case users == nil && Offers(methods, MethodNoAuth):
		m = MethodNoAuth
		if au := c.s.cfg.AddrUsers; au != nil {
			c.user, _ = au.UserFor(c.client)
		}
	case users != nil && Offers(methods, MethodNoAuth):
		if name, ok := users.UserFor(c.client); ok {
			m, c.user = MethodNoAuth, name
			break
		}
		fallthrough
	case users != nil && Offers(methods, MethodUserPass):
		m = MethodUserPass
		if !Offers(methods, MethodUserPass) {
			m = MethodNoAcceptable
		}
	default:
		m = MethodNoAcceptable
	}
	if m == MethodNoAcceptable {
		c.s.warn.Log(slog.LevelInfo, "no acceptable authentication method", "client", c.client.String(),
			"auth", users != nil)
		c.s.stats[c.loop.ID()].Refused++
		if c.send([]byte{Version, byte(MethodNoAcceptable)}) {
			c.close(false)
		}
		return false
	}
	if !c.send([]byte{Version, byte(m)}) {
		return false
	}
	if m == MethodUserPass {
		c.state = stAuth
	} else {
		c.state = stRequest
	}
	return true
}

// login checks RFC 1929 credentials like the HTTP proxy checks Basic
// ones: a recent success from the cache, else bcrypt in the pool.
func (c *conn) login(name, pass string) {
	users := c.s.cfg.Users
	now := time.Now()
	if users.Cached(name, pass, now) {
		c.loggedIn(name, true)
		return
	}
	if users.Blocked(c.client, now) {
		c.s.warn.Log(slog.LevelWarn, "too many failed logins", "client", c.client.String())
		c.loggedIn(name, false)
		return
	}
	c.state = stVerify
	client := c.client
	err := c.s.reactor.Pool().Submit(c.loop, func() func() {
		ok := users.Verify(client, name, pass, time.Now())
		return func() {
			if c.state == stVerify {
				c.loggedIn(name, ok)
				c.pump()
			}
		}
	})
	if err != nil {
		c.s.warn.Log(slog.LevelWarn, "blocking pool full: login refused", "client", c.client.String())
		c.loggedIn(name, false)
	}
}

// loggedIn answers the sub-negotiation (RFC 1929 section 2): a failure
// closes the connection.
func (c *conn) loggedIn(name string, ok bool) {
	if !ok {
		c.s.warn.Log(slog.LevelWarn, "failed login", "client", c.client.String(), "user", name)
		c.s.stats[c.loop.ID()].Refused++
		if c.send([]byte{AuthVersion, AuthFailure}) {
			c.close(false)
		}
		return
	}
	if !c.send([]byte{AuthVersion, AuthSuccess}) {
		return
	}
	c.user = name
	c.state = stRequest
}

// request applies the policy to a parsed request: command, connection
// limit, quota, rules before and after resolution.
func (c *conn) request() {
	c.state = stPolicy
	c.start = time.Now()
	// The handshake is complete: from here the lookup (lookupTimeout) and
	// each connect (ConnectTimeout) bound the wait, and a slow target gets
	// its reply code instead of a silent close.
	c.loop.Cancel(&c.timer)
	a := c.req.Addr
	switch c.req.Cmd {
	case CmdConnect, CmdBind:
	case CmdUDPAssociate:
		// DST names where the client will send from, not a target: the
		// rules see each datagram's destination (udp.go).
		if c.admit() {
			c.udpAssociate()
		}
		return
	default:
		c.refuse(RepCmdNotSupported, "command not supported")
		return
	}
	if a.Host != "" {
		c.host, c.ip = acl.CanonicalHost(a.Host)
		if !c.ip.IsValid() && !endpoint.ValidHost(c.host) {
			c.refuse(RepHostUnreachable, "bad domain name")
			return
		}
	} else {
		// An IPv4-mapped IPv6 address is the IPv4 address, for the rules
		// and the connect alike.
		c.ip = a.IP.Unmap()
		c.host = c.ip.String()
	}
	if a.Port == 0 && c.req.Cmd == CmdConnect { // BIND may not know the port its peer comes from
		c.refuse(RepHostUnreachable, "port 0")
		return
	}
	if !c.admit() {
		return
	}
	if d, ok := c.s.acl.CheckHost(c.aclRequest(netip.Addr{})); ok && d.Action == acl.Deny && !c.ip.IsValid() {
		c.deny(d, netip.Addr{})
		return
	}
	if c.ip.IsValid() {
		c.resolved([]netip.Addr{c.ip}, nil)
		return
	}
	host := c.host
	err := c.s.reactor.Pool().Submit(c.loop, func() func() {
		ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
		defer cancel()
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		return func() { c.resolved(ips, err) }
	})
	if err != nil {
		c.refuse(RepGeneralFailure, "blocking pool full")
	}
}

// admit takes the user's connection limit slot and opens the identity's
// accounting record, checking its quota.
func (c *conn) admit() bool {
	if u := c.s.cfg.Rates.User(c.user); u != nil {
		if !u.Acquire() {
			c.s.warn.Log(slog.LevelWarn, "connection limit reached", "client", c.client.String(), "user", c.user,
				"max_conns", u.MaxConns())
			c.refuse(RepNotAllowed, "too many connections for this user")
			return false
		}
		c.rl = u
	}
	if a := c.s.cfg.Accounting; a != nil {
		c.acct = a.Record(accounting.Key(c.user, c.client))
		c.acct.Open(c.start)
		if _, err := c.acct.CheckQuota(c.start); err != nil {
			c.s.warn.Log(slog.LevelWarn, "quota exceeded", "client", c.client.String(), "user", c.acct.Key(),
				"target", c.req.Addr.String(), "err", err)
			c.refuse(RepNotAllowed, err.Error())
			return false
		}
	}
	return true
}

// aclRequest is what the rules look at for the request.
func (c *conn) aclRequest(ip netip.Addr) acl.Request {
	r := acl.Request{Client: c.client, User: c.user, Method: c.req.Cmd.String(), Host: c.host,
		Port: int(c.req.Addr.Port), Addr: ip, Time: c.start}
	if u := c.s.cfg.Users; u != nil && c.user != "" {
		r.Class = u.ClassOf(c.user)
	} else if u := c.s.cfg.AddrUsers; u != nil && c.user != "" {
		r.Class = u.ClassOf(c.user)
	}
	return r
}

// resolved checks every address against the rules (all must pass, so a
// name that resolves partly into a denied range is denied) and dials.
func (c *conn) resolved(ips []netip.Addr, err error) {
	if c.state != stPolicy {
		return
	}
	if err != nil || len(ips) == 0 {
		// A name that rules deny is "not allowed" even when it does not
		// resolve: the answer must not tell which denied names exist.
		if d := c.s.acl.Check(c.aclRequest(netip.Addr{})); d.Action == acl.Deny {
			c.deny(d, netip.Addr{})
			return
		}
		c.refuse(RepHostUnreachable, "cannot resolve "+c.host)
		return
	}
	for i, ip := range ips {
		ip = ip.Unmap()
		ips[i] = ip
		if d := c.s.acl.Check(c.aclRequest(ip)); d.Action == acl.Deny {
			c.deny(d, ip)
			return
		}
	}
	c.addrs = ips
	if c.req.Cmd == CmdBind {
		c.bind()
		return
	}
	c.state = stDial
	c.dialNext()
}

func (c *conn) deny(d acl.Decision, ip netip.Addr) {
	addr := ""
	if ip.IsValid() {
		addr = ip.String()
	}
	c.s.warn.Log(slog.LevelInfo, "request denied", "client", c.client.String(), "user", c.user,
		"command", c.req.Cmd.String(), "target", c.req.Addr.String(), "addr", addr, "rule", d.Rule)
	c.refuse(RepNotAllowed, "denied by rule")
}

func (c *conn) dialNext() {
	ip := c.addrs[c.next]
	c.next++
	var sa sys.Sockaddr
	port := int(c.req.Addr.Port)
	if ip.Is4() {
		sa = &sys.SockaddrInet4{Port: port, Addr: ip.As4()}
	} else {
		sa = &sys.SockaddrInet6{Port: port, Addr: ip.As16()}
	}
	endpoint.Dial(c.loop, sa, c.s.cfg.ConnectTimeout, c.connected)
}

// dialReply is the reply code for a failed connect (RFC 1928 section 6).
func dialReply(err error) Reply {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return RepConnRefused
	case errors.Is(err, syscall.ENETUNREACH):
		return RepNetUnreachable
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, endpoint.ErrConnectTimeout):
		return RepHostUnreachable
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return RepNotAllowed // a local firewall refused it
	}
	return RepGeneralFailure
}

func (c *conn) connected(fd int, err error) {
	if c.state != stDial {
		if fd >= 0 {
			c.loop.Close(fd)
		}
		return
	}
	if err != nil {
		if c.next < len(c.addrs) {
			c.dialNext()
			return
		}
		c.refuse(dialReply(err), err.Error())
		return
	}
	// BND is the address sluice connected from, as the RFC asks; the
	// client's own address is never in a reply.
	var bound netip.AddrPort
	if sa, err := sys.LocalAddr(fd); err == nil {
		bound = sockaddrAddrPort(sa)
	}
	var buf [32]byte
	if !c.send(c.reply(buf[:0], RepSucceeded, bound)) {
		c.loop.Close(fd)
		return
	}
	// Bytes the client sent after its request (optimistic clients) go
	// first; a fresh socket takes them whole.
	var early uint64
	if len(c.in) > 0 {
		n, werr := sys.Write(fd, c.in)
		if werr != nil || n != len(c.in) {
			c.loop.Close(fd)
			c.close(true)
			return
		}
		early = uint64(n)
	}
	c.startSession(fd, early)
}

// refuse answers the request with a failure reply, logs it and closes.
func (c *conn) refuse(rep Reply, reason string) {
	c.s.log.Debug("request refused", "client", c.client.String(), "user", c.user, "target", c.req.Addr.String(),
		"reply", int(rep), "reason", reason)
	st := &c.s.stats[c.loop.ID()]
	st.Requests++
	st.Refused++
	c.logAccess(rep, 0, 0)
	if c.acct != nil {
		c.acct.Add(1, 0, 0, time.Now())
	}
	var buf [16]byte
	if c.send(c.reply(buf[:0], rep, netip.AddrPort{})) {
		c.close(false)
	}
}

// reply appends the reply in the client's protocol: SOCKS4 knows only
// "granted" and "rejected".
func (c *conn) reply(dst []byte, rep Reply, bound netip.AddrPort) []byte {
	if c.v4 {
		return AppendReply4(dst, rep == RepSucceeded, bound)
	}
	return AppendReply(dst, rep, bound)
}

// request4 takes a SOCKS4 or 4a request: CONNECT only, and with users
// only from a client whose address belongs to one (SOCKS4 carries no
// password; its user id is not trusted).
func (c *conn) request4() bool {
	req, _, n, err := ParseRequest4(c.in)
	if err == ErrShort {
		return false
	}
	c.v4 = true
	if err != nil {
		c.protoError(err)
		return false
	}
	c.in = c.in[n:]
	c.req = req
	if users := c.s.cfg.Users; users != nil {
		name, ok := users.UserFor(c.client)
		if !ok {
			c.s.warn.Log(slog.LevelInfo, "socks4 client is no user", "client", c.client.String())
			c.state = stPolicy
			c.refuse(RepNotAllowed, "socks4 without an address that belongs to a user")
			return false
		}
		c.user = name
	} else if au := c.s.cfg.AddrUsers; au != nil {
		c.user, _ = au.UserFor(c.client)
	}
	if req.Cmd != CmdConnect {
		c.state = stPolicy
		c.refuse(RepCmdNotSupported, "socks4 takes CONNECT only")
		return false
	}
	c.request()
	return false
}

func (c *conn) logAccess(rep Reply, up, down uint64) {
	c.s.logAccess(c.client, c.user, c.req, rep, up, down, c.start)
}

func (s *Service) logAccess(client netip.Addr, user string, req Request, rep Reply, up, down uint64, start time.Time) {
	if s.cfg.AccessLog == nil {
		return
	}
	s.cfg.AccessLog.Info("session", "client", client.String(), "user", user, "command", req.Cmd.String(),
		"target", req.Addr.String(), "reply", int(rep), "bytes_up", up, "bytes_down", down,
		"duration", time.Since(start).Round(time.Microsecond))
}

// close ends the connection before it became a session; reset sends RST
// instead of FIN.
func (c *conn) close(reset bool) {
	if c.state == stClosed {
		return
	}
	c.state = stClosed
	c.loop.Cancel(&c.timer)
	c.in = nil
	if c.lfd >= 0 {
		c.loop.Close(c.lfd)
		c.lfd = -1
	}
	if c.rl != nil {
		c.rl.Release()
		c.rl = nil
	}
	if c.acct != nil {
		c.acct.Close(time.Now())
		c.acct = nil
	}
	if reset {
		c.loop.CloseReset(c.fd)
	} else {
		c.loop.Close(c.fd)
	}
	c.s.live.Done()
}

// startSession hands both fds to a relay; only the session value stays.
func (c *conn) startSession(up int, early uint64) {
	c.loop.Cancel(&c.timer)
	c.state = stClosed // the relay owns both fds from here
	c.in = nil
	st := &c.s.stats[c.loop.ID()]
	st.Requests++
	st.Sessions++
	ss := &session{s: c.s, client: c.client, user: c.user, req: c.req, start: c.start, early: early, rl: c.rl, rec: c.acct}
	opts := relay.Options{IdleTimeout: c.s.cfg.IdleTimeout, Done: ss.done}
	if c.rl != nil {
		opts.LimitAB, opts.LimitBA = c.rl.Up(), c.rl.Down()
	}
	r := relay.Start(c.loop, c.s.pools[c.loop.ID()], c.fd, up, opts)
	if ss.rec != nil && !ss.ended {
		ss.relay = r
		c.s.counted.Add(c.s.cfg.Accounting, ss, ss.rec.Limited())
	}
}

// session is what a relayed SOCKS session keeps besides its relay: its
// access record, limit slot and accounting.
type session struct {
	s                *Service
	client           netip.Addr
	user             string
	req              Request
	start            time.Time
	early            uint64 // client bytes written before the relay started
	rl               *ratelimit.User
	rec              *accounting.Record // nil without accounting
	relay            *relay.Relay       // set while in s.counted
	addedUp, addedDn uint64             // bytes already added to rec
	ended            bool
}

func (ss *session) done(r *relay.Relay, err error) {
	ss.ended = true
	up, down := ss.early+r.BytesAB(), r.BytesBA()
	st := &ss.s.stats[r.Loop().ID()]
	st.BytesUp += up
	st.BytesDown += down
	ss.s.logAccess(ss.client, ss.user, ss.req, RepSucceeded, up, down, ss.start)
	if ss.rec != nil {
		if ss.relay != nil {
			ss.s.counted.Remove(ss)
		}
		now := time.Now()
		ss.rec.Add(1, up-ss.addedUp, down-ss.addedDn, now)
		ss.rec.Close(now)
	}
	if ss.rl != nil {
		ss.rl.Release()
	}
	ss.s.live.Done()
}

// Home is the session's loop (accounting.Member).
func (ss *session) Home() *reactor.Loop { return ss.relay.Loop() }

// SyncAcct adds what the session moved so far and closes it over quota
// (accounting.Member).
func (ss *session) SyncAcct(now time.Time) {
	if ss.ended {
		return
	}
	up, dn := ss.early+ss.relay.BytesAB(), ss.relay.BytesBA()
	if up != ss.addedUp || dn != ss.addedDn {
		ss.rec.Add(0, up-ss.addedUp, dn-ss.addedDn, now)
		ss.addedUp, ss.addedDn = up, dn
	}
	if err := ss.rec.Check(now); err != nil {
		ss.s.warn.Log(slog.LevelWarn, "quota exceeded: session closed", "client", ss.client.String(),
			"user", ss.rec.Key(), "target", ss.req.Addr.String(), "err", err)
		ss.relay.Abort()
	}
}
