package socks5

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/sluice-proxy/sluice/pkg/accounting"
	"github.com/sluice-proxy/sluice/pkg/acl"
	"github.com/sluice-proxy/sluice/pkg/endpoint"
	"github.com/sluice-proxy/sluice/pkg/ratelimit"
	"github.com/sluice-proxy/sluice/pkg/reactor"
	"github.com/sluice-proxy/sluice/pkg/sys"
)

// UDP ASSOCIATE (RFC 1928 section 7). An association is, on the loop of
// its TCP connection: that connection (kept open and watched: when it
// ends, the association ends), one UDP socket facing the client, bound to
// the address the client reached sluice on, and one outward UDP socket
// per address family, made when first needed. Datagrams are read with
// the loop into one buffer per loop; nothing is kept per datagram.
//
// The client's datagrams are accepted only from the TCP client's address
// (and from the port the request named, or else the port of the first
// datagram); FRAG != 0 is dropped (no reassembly, as the RFC allows);
// every destination passes the rules (method UDP), domain names resolved
// in the pool. Replies are accepted only from destinations the client
// sent to (at most maxPeers remembered), so the socket is no open relay
// toward the client. Bytes count for the identity at every accounting
// sync and when the association ends (a quota ends it too); UDP is not
// rate limited.

// maxPeers bounds the destinations an association remembers for replies;
// past it the set starts over.
const maxPeers = 256

// udpHeadroom is room before a received reply for the largest header.
const udpHeadroom = 3 + 1 + 16 + 2

// udpBufSize is the largest datagram relayed.
const udpBufSize = 65535

type association struct {
	s          *Service
	loop       *reactor.Loop
	tcp, cl    int
	out4, out6 int // -1 until needed
	client     netip.Addr
	clientPort uint16 // 0 until the first datagram
	user       string
	req        Request
	start      time.Time
	peers      map[netip.AddrPort]struct{}
	up, down   uint64
	// addedUp and addedDn are what syncs added to acct so far.
	addedUp, addedDn uint64
	rl               *ratelimit.User
	acct             *accounting.Record
	timer            reactor.Timer
	last             time.Duration // loop clock at the last datagram
	closed           bool

	tcpEnd, clEnd, out4End, out6End assocEnd
}

// assocEnd is the handler of one of an association's fds.
type assocEnd struct {
	a     *association
	which int // 0 TCP, 1 client side, 4 and 6 the outward sockets
}

// HandleEvent reads what the fd has.
func (e *assocEnd) HandleEvent(ev uint32) {
	a := e.a
	if a.closed {
		return
	}
	switch e.which {
	case 0:
		a.readTCP()
	case 1:
		a.fromClient()
	case 4:
		a.fromTarget(a.out4)
	case 6:
		a.fromTarget(a.out6)
	}
}

// udpBuf is the loop's datagram buffer.
func (s *Service) udpBuf(l *reactor.Loop) []byte {
	b := s.udpBufs[l.ID()]
	if b == nil {
		b = make([]byte, udpHeadroom+udpBufSize)
		s.udpBufs[l.ID()] = b
	}
	return b
}

// udpAssociate answers a UDP ASSOCIATE: the client-side socket is bound,
// its address replied, and the TCP connection becomes the association's.
func (c *conn) udpAssociate() {
	var local netip.Addr
	if sa, err := sys.LocalAddr(c.fd); err == nil {
		local = sockaddrAddrPort(sa).Addr()
	}
	fam, bind := sys.AFInet, sys.Sockaddr(&sys.SockaddrInet4{Addr: local.As4()})
	if !local.Is4() {
		fam, bind = sys.AFInet6, &sys.SockaddrInet6{Addr: local.As16()}
	}
	cl, err := sys.UDPSocket(fam)
	if err == nil {
		if err = sys.Bind(cl, bind); err != nil {
			sys.Close(cl)
		}
	}
	if err != nil {
		c.refuse(RepGeneralFailure, "udp socket: "+err.Error())
		return
	}
	var bound netip.AddrPort
	if sa, err := sys.LocalAddr(cl); err == nil {
		bound = sockaddrAddrPort(sa)
	}
	a := &association{s: c.s, loop: c.loop, tcp: c.fd, cl: cl, out4: -1, out6: -1, client: c.client, user: c.user,
		req: c.req, start: c.start, rl: c.rl, acct: c.acct, last: c.loop.Now()}
	a.tcpEnd, a.clEnd, a.out4End, a.out6End = assocEnd{a, 0}, assocEnd{a, 1}, assocEnd{a, 4}, assocEnd{a, 6}
	if ip := c.req.Addr.IP.Unmap(); c.req.Addr.Host == "" && ip.IsValid() && !ip.IsUnspecified() && c.req.Addr.Port != 0 {
		a.clientPort = c.req.Addr.Port
	}
	if err := c.loop.Register(cl, sys.EventIn|sys.EventEdge, &a.clEnd); err != nil {
		sys.Close(cl)
		c.refuse(RepGeneralFailure, "udp socket: "+err.Error())
		return
	}
	var buf [32]byte
	if !c.send(AppendReply(buf[:0], RepSucceeded, bound)) {
		c.loop.Close(cl)
		return
	}
	// The connection is the association's from here.
	c.loop.Cancel(&c.timer)
	c.state = stClosed
	c.in = nil
	st := &c.s.stats[c.loop.ID()]
	st.Requests++
	st.Sessions++
	c.loop.SetHandler(c.fd, &a.tcpEnd)
	a.timer.Func = a.expire
	c.loop.Schedule(&a.timer, c.s.cfg.IdleTimeout)
	if a.acct != nil {
		c.s.counted.Add(c.s.cfg.Accounting, a, a.acct.Limited())
	}
	a.readTCP()
}

// Home is the association's loop (accounting.Member).
func (a *association) Home() *reactor.Loop { return a.loop }

// SyncAcct adds what the association relayed since the last call and ends
// it over quota (accounting.Member).
func (a *association) SyncAcct(now time.Time) {
	if a.closed {
		return
	}
	if a.up != a.addedUp || a.down != a.addedDn {
		a.acct.Add(0, a.up-a.addedUp, a.down-a.addedDn, now)
		a.addedUp, a.addedDn = a.up, a.down
	}
	if err := a.acct.Check(now); err != nil {
		a.s.warn.Log(slog.LevelWarn, "quota exceeded: udp association closed", "client", a.client.String(),
			"user", a.acct.Key(), "err", err)
		a.end()
	}
}

// readTCP discards what the client sends on its TCP connection (nothing,
// by the RFC) and ends the association at its FIN or error.
func (a *association) readTCP() {
	var scratch [512]byte
	for !a.closed {
		n, err := sys.Read(a.tcp, scratch[:])
		if sys.IsAgain(err) {
			return
		}
		if err != nil || n == 0 {
			a.end()
			return
		}
	}
}

func (a *association) expire() {
	now := a.loop.Now()
	if idle := a.s.cfg.IdleTimeout; now-a.last < idle {
		a.loop.ScheduleAt(&a.timer, a.last+idle)
		return
	}
	a.s.log.Debug("udp association idle", "client", a.client.String())
	a.end()
}

// fromClient relays the client's datagrams.
func (a *association) fromClient() {
	buf := a.s.udpBuf(a.loop)
	for !a.closed {
		n, sa, err := sys.RecvFrom(a.cl, buf)
		if err != nil {
			return // EAGAIN, or an ICMP error for an earlier datagram
		}
		src := sockaddrAddrPort(sa)
		if src.Addr() != a.client || (a.clientPort != 0 && src.Port() != a.clientPort) {
			a.s.warn.Log(slog.LevelDebug, "udp datagram from a stranger dropped", "client", a.client.String(), "from", src.String())
			continue
		}
		a.clientPort = src.Port()
		h, hn, err := ParseUDPHeader(buf[:n])
		if err != nil {
			a.s.warn.Log(slog.LevelDebug, "bad udp header dropped", "client", a.client.String(), "err", err)
			continue
		}
		if h.Frag != 0 {
			a.s.warn.Log(slog.LevelDebug, "udp fragment dropped", "client", a.client.String(), "frag", int(h.Frag))
			continue
		}
		a.last = a.loop.Now()
		a.toTarget(h.Addr, buf[hn:n])
	}
}

// toTarget sends payload to dst after the rules; a name is resolved in
// the pool first (the payload copied for it).
func (a *association) toTarget(dst Addr, payload []byte) {
	if dst.Port == 0 {
		return
	}
	if dst.Host == "" {
		ip := dst.IP.Unmap()
		a.send(ip.String(), ip, dst.Port, payload)
		return
	}
	host, ip := acl.CanonicalHost(dst.Host)
	if ip.IsValid() {
		a.send(host, ip, dst.Port, payload)
		return
	}
	if !endpoint.ValidHost(host) {
		return
	}
	if d, ok := a.s.acl.CheckHost(a.aclRequest(host, netip.Addr{}, dst.Port)); ok && d.Action == acl.Deny {
		a.denied(host, netip.Addr{}, dst.Port, d)
		return
	}
	data := append([]byte(nil), payload...)
	err := a.s.reactor.Pool().Submit(a.loop, func() func() {
		ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
		defer cancel()
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		return func() {
			if a.closed || err != nil || len(ips) == 0 {
				return
			}
			for _, ip := range ips {
				if d := a.s.acl.Check(a.aclRequest(host, ip.Unmap(), dst.Port)); d.Action == acl.Deny {
					a.denied(host, ip, dst.Port, d)
					return
				}
			}
			a.send(host, ips[0].Unmap(), dst.Port, data)
		}
	})
	if err != nil {
		a.s.warn.Log(slog.LevelWarn, "blocking pool full: udp datagram dropped", "client", a.client.String())
	}
}

func (a *association) aclRequest(host string, ip netip.Addr, port uint16) acl.Request {
	r := acl.Request{Client: a.client, User: a.user, Method: CmdUDPAssociate.String(), Host: host, Port: int(port),
		Addr: ip, Time: time.Now()}
	if u := a.s.cfg.Users; u != nil && a.user != "" {
		r.Class = u.ClassOf(a.user)
	} else if u := a.s.cfg.AddrUsers; u != nil && a.user != "" {
		r.Class = u.ClassOf(a.user)
	}
	return r
}

func (a *association) denied(host string, ip netip.Addr, port uint16, d acl.Decision) {
	a.s.warn.Log(slog.LevelInfo, "udp datagram denied", "client", a.client.String(), "user", a.user,
		"target", host, "addr", ip.String(), "port", int(port), "rule", d.Rule)
}

// send checks ip against the rules and sends payload there from the
// outward socket of its family.
func (a *association) send(host string, ip netip.Addr, port uint16, payload []byte) {
	if d := a.s.acl.Check(a.aclRequest(host, ip, port)); d.Action == acl.Deny {
		a.denied(host, ip, port, d)
		return
	}
	fd := a.outSocket(ip.Is4())
	if fd < 0 {
		return
	}
	var sa sys.Sockaddr
	if ip.Is4() {
		sa = &sys.SockaddrInet4{Addr: ip.As4(), Port: int(port)}
	} else {
		sa = &sys.SockaddrInet6{Addr: ip.As16(), Port: int(port)}
	}
	if err := sys.SendTo(fd, payload, sa); err != nil {
		a.s.warn.Log(slog.LevelDebug, "udp send failed", "client", a.client.String(), "target", host, "err", err)
		return
	}
	a.up += uint64(len(payload))
	if a.peers == nil || len(a.peers) >= maxPeers {
		a.peers = make(map[netip.AddrPort]struct{})
	}
	a.peers[netip.AddrPortFrom(ip, port)] = struct{}{}
}

// outSocket returns the outward socket of a family, made at first use.
func (a *association) outSocket(v4 bool) int {
	p, fam, end := &a.out6, sys.AFInet6, &a.out6End
	if v4 {
		p, fam, end = &a.out4, sys.AFInet, &a.out4End
	}
	if *p >= 0 {
		return *p
	}
	fd, err := sys.UDPSocket(fam)
	if err != nil {
		a.s.warn.Log(slog.LevelWarn, "udp socket failed", "err", err)
		return -1
	}
	if err := a.loop.Register(fd, sys.EventIn|sys.EventEdge, end); err != nil {
		sys.Close(fd)
		return -1
	}
	*p = fd
	return fd
}

// fromTarget relays replies from destinations the client sent to.
func (a *association) fromTarget(fd int) {
	buf := a.s.udpBuf(a.loop)
	for !a.closed {
		n, sa, err := sys.RecvFrom(fd, buf[udpHeadroom:])
		if err != nil {
			return
		}
		src := sockaddrAddrPort(sa)
		if _, ok := a.peers[src]; !ok || a.clientPort == 0 {
			continue
		}
		var hb [udpHeadroom]byte
		h := AppendUDPHeader(hb[:0], src)
		start := udpHeadroom - len(h)
		copy(buf[start:], h)
		var to sys.Sockaddr
		if a.client.Is4() {
			to = &sys.SockaddrInet4{Addr: a.client.As4(), Port: int(a.clientPort)}
		} else {
			to = &sys.SockaddrInet6{Addr: a.client.As16(), Port: int(a.clientPort)}
		}
		if err := sys.SendTo(a.cl, buf[start:udpHeadroom+n], to); err == nil {
			a.down += uint64(n)
		}
		a.last = a.loop.Now()
	}
}

// end closes the association's sockets and counts it.
func (a *association) end() {
	if a.closed {
		return
	}
	a.closed = true
	a.loop.Cancel(&a.timer)
	for _, fd := range []int{a.cl, a.out4, a.out6} {
		if fd >= 0 {
			a.loop.Close(fd)
		}
	}
	a.loop.Close(a.tcp)
	st := &a.s.stats[a.loop.ID()]
	st.BytesUp += a.up
	st.BytesDown += a.down
	a.s.logAccess(a.client, a.user, a.req, RepSucceeded, a.up, a.down, a.start)
	now := time.Now()
	if a.acct != nil {
		a.s.counted.Remove(a)
		a.acct.Add(1, a.up-a.addedUp, a.down-a.addedDn, now)
		a.acct.Close(now)
	}
	if a.rl != nil {
		a.rl.Release()
	}
	a.s.live.Done()
}
