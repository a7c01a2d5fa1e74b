package httpproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/sluice-proxy/sluice/pkg/accounting"
	"github.com/sluice-proxy/sluice/pkg/acl"
	"github.com/sluice-proxy/sluice/pkg/auth"
	"github.com/sluice-proxy/sluice/pkg/endpoint"
	"github.com/sluice-proxy/sluice/pkg/filter"
	"github.com/sluice-proxy/sluice/pkg/httpmsg"
	"github.com/sluice-proxy/sluice/pkg/ratelimit"
	"github.com/sluice-proxy/sluice/pkg/reactor"
	"github.com/sluice-proxy/sluice/pkg/relay"
	"github.com/sluice-proxy/sluice/pkg/sys"
)

// state is where a client connection is.
type state uint8

const (
	stHead     state = iota // reading a request head (or idle between requests)
	stPolicy                // authenticating, resolving, checking the ACL
	stDial                  // connecting to the origin
	stExchange              // request and response in flight
	stTunnel                // CONNECT: flushing "200" and early bytes before the relay
	stLinger                // an error was sent: discarding input until EOF or timeout
	stCache                 // answering from the cache (cache.go)
	stJoined                // waiting for another client's fetch of the same URL
	stClosed
)

// conn is one client connection. All of it is touched only on its loop.
type conn struct {
	s      *Service
	loop   *reactor.Loop
	fd     int
	client netip.Addr
	orig   netip.AddrPort // original destination of a redirected connection
	state  state
	timer  reactor.Timer
	last   time.Duration // loop clock at the last activity of an exchange

	cReadable, cWritable bool
	cEOF                 bool
	// cHangup: the client's FIN or an error was reported, so a short read
	// does not prove the socket drained (the short-read rule).
	cHangup bool

	// in holds client bytes: in[r0:r1] not yet used; in[w0:w1] claimed
	// body bytes waiting to be written upstream. nil while idle.
	in             []byte
	w0, w1, r0, r1 int
	headStart      time.Duration // loop clock at the first byte of this head

	ex   *exchange
	acct *accounting.Record // the identity this connection counts for (account.go)
	// watched: the connection is in the service's counted set (account.go)
	watched bool
	rl      *ratelimit.User // the user whose connection limit this one counts in (rate.go)
}

// exchange is one request in flight.
type exchange struct {
	req     *httpmsg.Request
	t       target
	user    string
	start   time.Time
	up      int // origin fd, -1 before connected
	upEnd   upHandler
	addrs   []netip.Addr
	next    int
	key     netip.AddrPort // origin address of up
	reused  bool           // up came from the origin pool
	head    []byte         // the whole request head, to send again on a fresh connection
	extra   bool           // the origin sent bytes past its response
	headOut bool           // the final response head is committed to the client
	status  int
	tunnel  bool
	bytesUp uint64
	bytesDn uint64
	// addedUp and addedDn are what syncs added to the accounting while
	// the exchange ran (account.go).
	addedUp, addedDn uint64

	upR, upW bool
	upHangup bool   // like conn.cHangup, for the origin socket
	upHead   []byte // request head not yet written upstream
	reqBody  body

	// out holds origin bytes: out[r0:r1] unparsed or unclaimed; out[w0:w1]
	// ready for the client. nil until the origin answers.
	out                []byte
	ow0, ow1, or0, or1 int
	cHead              []byte // response head not yet written to the client
	headBuf, cHeadBuf  []byte // borrowed buffers head and cHead are built in
	resp               *httpmsg.Response
	respBody           body
	respDone, reqDone  bool
	keepClient         bool
	spUp, spDown       bodySplice  // bodies spliced each way (splice.go)
	rate               *exRate     // rate limits (rate.go); nil: none
	cache              *cacheState // the cache's part; nil when the request bypasses it
	counted            bool        // the request counts for conn.acct (account.go)
}

type upHandler struct{ c *conn }

// HandleEvent records the origin socket's readiness.
func (h *upHandler) HandleEvent(ev uint32) {
	ex := h.c.ex
	if ex == nil {
		return
	}
	if ev&(sys.EventIn|sys.EventRdHup|sys.EventHup|sys.EventErr) != 0 {
		ex.upR = true
	}
	if ev&(sys.EventRdHup|sys.EventHup|sys.EventErr) != 0 {
		ex.upHangup = true
	}
	if ev&(sys.EventOut|sys.EventHup|sys.EventErr) != 0 {
		ex.upW = true
	}
	h.c.pump()
}

// body follows one message body through the proxy.
type body struct {
	framing httpmsg.Framing
	left    int64 // Length: bytes still to come
	dec     httpmsg.ChunkedDecoder
	dechunk bool // pass only chunk data (to an HTTP/1.0 client)
	scan    *filter.Scanner
	done    bool
}

func newBody(f httpmsg.Framing, n int64) body {
	b := body{framing: f, left: n}
	b.done = f == httpmsg.NoBody || f == httpmsg.Length && n == 0
	return b
}

// claim takes the body bytes at the start of p, compacting them to p[:out]
// (only chunk data when dechunking), and returns how many bytes of p it
// used.
func (b *body) claim(p []byte) (out, used int, err error) {
	switch b.framing {
	case httpmsg.Length:
		n := int(min(int64(len(p)), b.left))
		if err := b.check(p[:n]); err != nil {
			return 0, 0, err
		}
		b.left -= int64(n)
		b.done = b.left == 0
		return n, n, nil
	case httpmsg.UntilClose:
		if err := b.check(p); err != nil {
			return 0, 0, err
		}
		return len(p), len(p), nil
	case httpmsg.Chunked:
		for used < len(p) && !b.dec.Done() {
			n, off, dn, err := b.dec.Decode(p[used:])
			if err != nil {
				return 0, 0, err
			}
			if err := b.check(p[used+off : used+off+dn]); err != nil {
				return 0, 0, err
			}
			if b.dechunk {
				out += copy(p[out:], p[used+off:used+off+dn])
			}
			used += n
		}
		if !b.dechunk {
			out = used
		}
		b.done = b.dec.Done()
		return out, used, nil
	}
	return 0, 0, nil
}

// blockedError is a body word found by the content filter.
type blockedError struct{ word string }

func (e blockedError) Error() string { return "response blocked by the content filter: " + e.word }

// check scans body data with the content filter, if any.
func (b *body) check(data []byte) error {
	if b.scan == nil {
		return nil
	}
	if w, found := b.scan.Scan(data); found {
		return blockedError{w}
	}
	return nil
}

func (s *Service) accept(l *reactor.Loop, fd int) {
	st := &s.stats[l.ID()]
	st.Accepted++
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
	c := &conn{s: s, loop: l, fd: fd, cReadable: true, cWritable: true}
	if sa, err := sys.PeerAddr(fd); err == nil {
		c.client = sockaddrIP(sa)
	}
	if s.cfg.Transparent {
		c.orig = s.originalDst(fd)
	}
	c.timer.Func = c.expire
	if err := l.Register(fd, endpoint.ConnEvents, c); err != nil {
		l.Close(fd)
		s.live.Done()
		s.warn.Log(slog.LevelWarn, "accept failed", "err", err)
		return
	}
	c.headStart = l.Now()
	l.Schedule(&c.timer, s.cfg.HeaderTimeout)
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

func sockaddrIP(sa sys.Sockaddr) netip.Addr {
	switch a := sa.(type) {
	case *sys.SockaddrInet4:
		return netip.AddrFrom4(a.Addr)
	case *sys.SockaddrInet6:
		return netip.AddrFrom16(a.Addr).Unmap()
	}
	return netip.Addr{}
}

// HandleEvent records the client socket's readiness.
func (c *conn) HandleEvent(ev uint32) {
	if ev&(sys.EventIn|sys.EventRdHup|sys.EventHup|sys.EventErr) != 0 {
		c.cReadable = true
	}
	if ev&(sys.EventRdHup|sys.EventHup|sys.EventErr) != 0 {
		c.cHangup = true
	}
	if ev&(sys.EventOut|sys.EventHup|sys.EventErr) != 0 {
		c.cWritable = true
	}
	c.pump()
}

// pump moves the connection forward as far as readiness allows.
func (c *conn) pump() {
	switch c.state {
	case stHead:
		c.readHead()
	case stExchange:
		c.runExchange()
	case stTunnel:
		c.runTunnel()
	case stLinger:
		c.linger()
	case stCache:
		c.runHit()
	}
}

func (c *conn) bufs() *bufPool { return &c.s.bufs[c.loop.ID()] }

// readHead reads until a request head is complete, then starts it.
func (c *conn) readHead() {
	for {
		if c.r1 > c.r0 {
			req, n, err := httpmsg.ParseRequest(c.in[c.r0:c.r1], c.s.cfg.Limits)
			if err == nil {
				c.r0 += n
				c.startRequest(req)
				return
			}
			if err != httpmsg.ErrIncomplete {
				c.fail(statusOf(err, 400), err.Error())
				return
			}
		}
		if !c.cReadable {
			return
		}
		if c.in == nil {
			c.in = c.bufs().get()
		}
		if c.r0 > 0 { // keep the partial head at the start of the buffer
			c.r1 = copy(c.in, c.in[c.r0:c.r1])
			c.r0 = 0
		}
		if c.r1 == len(c.in) {
			c.fail(431, "request head too large")
			return
		}
		n, err := sys.Read(c.fd, c.in[c.r1:])
		switch {
		case sys.IsAgain(err):
			c.cReadable = false
			if c.r1 == 0 {
				c.putIn() // idle: hold no buffer
			}
			return
		case err != nil || n == 0:
			c.close(err != nil)
			return
		}
		if c.r1 == 0 && c.headStart == 0 {
			// First byte of a keep-alive request: the header timeout runs
			// from now.
			c.headStart = c.loop.Now()
			c.loop.Schedule(&c.timer, c.s.cfg.HeaderTimeout)
		}
		if c.r1+n < len(c.in) && !c.cHangup {
			// A short read emptied the socket: the next bytes bring a
			// new edge, so skip the read that would only answer EAGAIN.
			c.cReadable = false
		}
		c.r1 += n
	}
}

func (c *conn) putIn() {
	if c.in != nil {
		c.bufs().put(c.in)
		c.in = nil
	}
	c.w0, c.w1, c.r0, c.r1 = 0, 0, 0, 0
}

func statusOf(err error, def int) int {
	var e *httpmsg.Error
	if errors.As(err, &e) {
		return e.Status
	}
	return def
}

// expire is the connection's one timer: header timeout, keep-alive idle
// timeout, origin silence or the end of lingering.
func (c *conn) expire() {
	switch c.state {
	case stHead:
		if c.r1 > c.r0 || c.headStart != 0 && c.in != nil {
			c.s.warn.Log(slog.LevelInfo, "request head timeout", "client", c.client.String())
			c.fail(408, "request head not received in time")
			return
		}
		c.close(false)
	case stJoined:
		c.cacheWoken()
	case stExchange, stDial, stCache:
		deadline := c.last + c.s.cfg.ReadTimeout
		if now := c.loop.Now(); now < deadline {
			c.loop.ScheduleAt(&c.timer, deadline)
			return
		}
		if c.ex != nil && c.ex.resp == nil && len(c.ex.cHead) == 0 && c.ex.status == 0 {
			if c.staleOnError("no answer in time") {
				return
			}
			c.abortUp()
			c.fail(504, "origin did not answer in time")
			return
		}
		c.close(true)
	case stLinger:
		c.close(false)
	}
}

// startRequest checks a parsed request and goes on to policy.
func (c *conn) startRequest(req *httpmsg.Request) {
	ex := &exchange{req: req, up: -1, start: time.Now()}
	ex.upEnd.c = c
	c.ex = ex
	c.state = stPolicy
	c.headStart = 0
	c.loop.Cancel(&c.timer)
	var err error
	switch {
	case req.Method == "CONNECT":
		ex.tunnel = true
		ex.t, err = parseAuthority(req.Target, 0)
	case c.orig.IsValid() && strings.HasPrefix(req.Target, "/"):
		ex.t, err = c.transparentTarget(req)
		if err != nil {
			c.fail(400, err.Error())
			return
		}
		c.authenticate()
		return
	default:
		ex.t, err = parseAbsolute(req.Target)
	}
	if err != nil {
		c.fail(400, err.Error())
		return
	}
	if h, ok := req.Header.Get("Host"); ok && !ex.tunnel {
		// RFC 9112 section 3.2.2: the URI's authority wins; a Host that
		// names another origin is a confused (or hostile) client.
		if ht, herr := parseAuthority(h, 80); herr != nil || ht.host != ex.t.host || ht.port != ex.t.port {
			c.fail(400, "Host does not match the request URI")
			return
		}
	}
	c.authenticate()
}

// transparentTarget is the target of an origin-form request on a
// redirected connection: the host named by Host (for rules, logs and the
// forwarded head), the port and address of the original destination.
func (c *conn) transparentTarget(req *httpmsg.Request) (target, error) {
	h, ok := req.Header.Get("Host")
	if !ok || h == "" {
		return target{}, errors.New("request without Host on a redirected connection")
	}
	t, err := parseAuthority(h, int(c.orig.Port()))
	if err != nil {
		return target{}, err
	}
	t.port = int(c.orig.Port())
	t.path = req.Target
	return t, nil
}

// authenticate finds the user (credentials, or the client's address) and
// continues with resolve; without a valid identity the client gets 407.
func (c *conn) authenticate() {
	users := c.s.cfg.Users
	if users == nil {
		if au := c.s.cfg.AddrUsers; au != nil {
			c.ex.user, _ = au.UserFor(c.client)
		}
		c.resolve()
		return
	}
	ex := c.ex
	if v, ok := ex.req.Header.Get("Proxy-Authorization"); ok {
		name, pass, err := auth.ParseBasic(v)
		if err != nil {
			c.fail(407, "proxy authentication required")
			return
		}
		now := time.Now()
		if users.Cached(name, pass, now) {
			ex.user = name
			c.resolve()
			return
		}
		if users.Blocked(c.client, now) {
			c.s.warn.Log(slog.LevelWarn, "too many failed logins", "client", c.client.String())
			c.fail(407, "proxy authentication required")
			return
		}
		client := c.client
		err = c.s.reactor.Pool().Submit(c.loop, func() func() {
			ok := users.Verify(client, name, pass, time.Now())
			return func() { c.verified(name, ok) }
		})
		if err != nil {
			c.fail(503, "server busy")
		}
		return
	}
	if name, ok := users.UserFor(c.client); ok {
		ex.user = name
		c.resolve()
		return
	}
	c.fail(407, "proxy authentication required")
}

func (c *conn) verified(name string, ok bool) {
	if c.state != stPolicy {
		return
	}
	if !ok {
		c.s.warn.Log(slog.LevelWarn, "failed login", "client", c.client.String(), "user", name)
		c.fail(407, "proxy authentication required")
		return
	}
	c.ex.user = name
	c.resolve()
}

// resolve finds the origin's addresses: numeric hosts in any spelling at
// once, names in the blocking pool.
func (c *conn) resolve() {
	if !c.rateAdmit() || !c.account() { // a 429 is not counted, like a 407
		return
	}
	ex := c.ex
	host, ip := acl.CanonicalHost(ex.t.host)
	ex.t.host = host
	if c.s.cfg.BlockURLs != nil { // without a URL filter, the URL is not built
		if p, blocked := c.s.cfg.BlockURLs.Match(ex.t.url()); blocked {
			c.s.warn.Log(slog.LevelInfo, "request blocked", "client", c.client.String(), "user", ex.user, "target", ex.t.url(), "pattern", p)
			c.fail(403, "blocked by the URL filter")
			return
		}
	}
	if c.orig.IsValid() && !ex.tunnel && strings.HasPrefix(ex.req.Target, "/") {
		// Redirected: the connection's own destination, never a lookup
		// of what Host says.
		ip = c.orig.Addr()
	}
	if d, ok := c.s.cfg.ACL.CheckHost(c.aclRequest(netip.Addr{})); ok && d.Action == acl.Deny && !ip.IsValid() {
		c.deny(d, netip.Addr{})
		return
	}
	if n, ok := maxForwards(ex.req); ok && n == 0 {
		c.respond(200, localAnswer(ex.req))
		return
	}
	if ip.IsValid() {
		c.resolved([]netip.Addr{ip}, nil)
		return
	}
	cache := &c.s.dns[c.loop.ID()]
	if ips, ok := cache.get(host, c.loop.Now()); ok {
		c.resolved(ips, nil)
		return
	}
	err := c.s.reactor.Pool().Submit(c.loop, func() func() {
		ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
		defer cancel()
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		return func() {
			if err == nil {
				cache.put(host, ips, c.loop.Now())
			}
			c.resolved(ips, err)
		}
	})
	if err != nil {
		c.fail(503, "server busy")
	}
}

// resolved checks every address against the ACL (all must pass, so a name
// that resolves partly into a denied range is denied) and dials.
func (c *conn) resolved(ips []netip.Addr, err error) {
	if c.state != stPolicy {
		return
	}
	ex := c.ex
	if err != nil || len(ips) == 0 {
		c.fail(502, fmt.Sprintf("cannot resolve %s", ex.t.host))
		return
	}
	for i, ip := range ips {
		ip = ip.Unmap()
		ips[i] = ip
		d := c.s.cfg.ACL.Check(c.aclRequest(ip))
		if d.Action == acl.Deny {
			c.deny(d, ip)
			return
		}
	}
	ex.addrs = ips
	if c.cacheLookup() {
		return
	}
	c.state = stDial
	c.last = c.loop.Now()
	c.dialNext()
}

// aclRequest is what the ACL looks at for the current request.
func (c *conn) aclRequest(ip netip.Addr) acl.Request {
	ex := c.ex
	r := acl.Request{
		Client: c.client, User: ex.user, Method: ex.req.Method,
		Host: ex.t.host, Port: ex.t.port, Addr: ip, Time: ex.start,
	}
	if c.s.cfg.Users != nil && ex.user != "" {
		r.Class = c.s.cfg.Users.ClassOf(ex.user)
	}
	return r
}

func (c *conn) deny(d acl.Decision, ip netip.Addr) {
	ex := c.ex
	addr := ""
	if ip.IsValid() {
		addr = ip.String()
	}
	c.s.warn.Log(slog.LevelInfo, "request denied", "client", c.client.String(), "user", ex.user,
		"method", ex.req.Method, "target", ex.t.url(), "addr", addr, "rule", d.Rule)
	c.fail(403, "access denied")
}

func (c *conn) dialNext() {
	ex := c.ex
	ip := ex.addrs[ex.next]
	ex.next++
	ex.key = netip.AddrPortFrom(ip, uint16(ex.t.port))
	// Only a request without a body goes on a pooled connection: if the
	// origin closed it meanwhile, such a request can be sent again.
	if !ex.tunnel && ex.req.Framing == httpmsg.NoBody {
		if fd := c.s.origins[c.loop.ID()].take(ex.key); fd >= 0 {
			ex.reused = true
			c.connected(fd, nil)
			return
		}
	}
	c.dial(ip)
}

// dial connects to ip at the target's port.
func (c *conn) dial(ip netip.Addr) {
	ex := c.ex
	var sa sys.Sockaddr
	if ip.Is4() {
		sa = &sys.SockaddrInet4{Port: ex.t.port, Addr: ip.As4()}
	} else {
		sa = &sys.SockaddrInet6{Port: ex.t.port, Addr: ip.As16()}
	}
	endpoint.Dial(c.loop, sa, c.s.cfg.ConnectTimeout, c.connected)
}

func (c *conn) connected(fd int, err error) {
	if c.state != stDial {
		if fd >= 0 {
			c.loop.Close(fd)
		}
		return
	}
	ex := c.ex
	if err != nil {
		if ex.next < len(ex.addrs) {
			c.dialNext()
			return
		}
		if c.staleOnError(err.Error()) {
			return
		}
		if errors.Is(err, endpoint.ErrConnectTimeout) {
			c.fail(504, fmt.Sprintf("connect to %s timed out", ex.t.authority()))
		} else {
			c.fail(502, fmt.Sprintf("cannot connect to %s", ex.t.authority()))
		}
		return
	}
	ex.up, ex.upR, ex.upW = fd, true, true
	if ex.reused {
		// A pooled connection had no event since it was pooled (its idle
		// handler drops it on any), so there is nothing to read before
		// the request: a later event says when the answer comes.
		ex.upR = false
	}
	c.loop.SetHandler(fd, &ex.upEnd)
	if ex.tunnel {
		c.state = stTunnel
		ex.status = 200
		ex.cHead = []byte("HTTP/1.1 200 Connection established\r\n\r\n")
		// Bytes the client sent after the CONNECT head go first.
		c.w0, c.w1 = c.r0, c.r1
		c.r0 = c.r1
		c.runTunnel()
		return
	}
	c.state = stExchange
	if ex.head == nil {
		ex.headBuf = c.bufs().get()
		ex.head = c.requestHead(ex.headBuf[:0])
	}
	ex.upHead = ex.head
	ex.reqBody = newBody(ex.req.Framing, ex.req.ContentLength)
	ex.reqDone = ex.reqBody.done
	c.last = c.loop.Now()
	c.loop.Schedule(&c.timer, c.s.cfg.ReadTimeout)
	c.runExchange()
}

// runTunnel flushes the 200 and early client bytes, then hands both fds
// to a relay.
func (c *conn) runTunnel() {
	ex := c.ex
	if len(ex.cHead) > 0 && c.cWritable {
		n, err := sys.Write(c.fd, ex.cHead)
		if err != nil && !sys.IsAgain(err) {
			c.abortUp()
			c.close(true)
			return
		}
		ex.cHead = ex.cHead[n:]
		if sys.IsAgain(err) {
			c.cWritable = false
		}
	}
	if c.w1 > c.w0 && ex.upW {
		n, err := sys.Write(ex.up, c.in[c.w0:c.w1])
		if err != nil && !sys.IsAgain(err) {
			c.abortUp()
			c.close(true)
			return
		}
		c.w0 += n
		ex.bytesUp += uint64(n)
		if sys.IsAgain(err) {
			ex.upW = false
		}
	}
	if len(ex.cHead) > 0 || c.w1 > c.w0 {
		return
	}
	c.putIn()
	c.loop.Cancel(&c.timer)
	c.state = stClosed // the relay owns both fds from here
	c.s.stats[c.loop.ID()].Tunnels++
	c.watch(false)
	tn := &tunnel{s: c.s, rec: c.record(), acct: tunnelAcct{rec: c.acct, addedUp: ex.addedUp, addedDn: ex.addedDn}} // an idle tunnel keeps only its log record
	c.acct = nil
	tn.track(relay.Start(c.loop, c.s.pools[c.loop.ID()], c.fd, ex.up, c.tunnelLimits(relay.Options{
		IdleTimeout: c.s.cfg.TunnelIdleTimeout,
		Done:        tn.done,
	}, tn)))
}

// tunnel is what a running CONNECT tunnel keeps besides its relay: its
// access record. The client connection's state is dropped.
type tunnel struct {
	s    *Service
	rec  record
	acct tunnelAcct      // its identity's counting (account.go)
	rl   *ratelimit.User // nil without a connection limit slot
}

func (tn *tunnel) done(r *relay.Relay, err error) {
	tn.rec.bytesUp += r.BytesAB()
	tn.rec.bytesDn += r.BytesBA()
	st := &tn.s.stats[r.Loop().ID()]
	st.BytesUp += r.BytesAB()
	st.BytesDown += r.BytesBA()
	tn.s.logRecord(r.Loop(), &tn.rec)
	tn.account()
	if tn.rl != nil {
		tn.rl.Release()
	}
	tn.s.live.Done()
}

// runExchange moves the request up and the response down.
func (c *conn) runExchange() {
	for c.state == stExchange {
		progress, err := c.moveUp()
		if err != nil {
			c.exchangeFailed(err)
			return
		}
		p2, err := c.moveDown()
		if err != nil {
			c.exchangeFailed(err)
			return
		}
		if c.state != stExchange {
			return
		}
		if c.ex.reqDone && c.ex.respDone && len(c.ex.cHead) == 0 && c.ex.ow1 == c.ex.ow0 {
			c.finishExchange()
			return
		}
		if !progress && !p2 {
			return
		}
		c.last = c.loop.Now()
	}
}

// upstreamError marks failures of the origin side: before a response
// head they become a 502.
type upstreamError struct{ err error }

func (e upstreamError) Error() string { return e.err.Error() }

// moveUp writes the request head, then body bytes, to the origin.
func (c *conn) moveUp() (bool, error) {
	ex := c.ex
	progress := false
	for {
		if len(ex.upHead) > 0 {
			if !ex.upW {
				return progress, nil
			}
			n, err := sys.Write(ex.up, ex.upHead)
			if sys.IsAgain(err) {
				ex.upW = false
				return progress, nil
			}
			if err != nil {
				return progress, upstreamError{err}
			}
			ex.upHead = ex.upHead[n:]
			progress = true
			continue
		}
		if c.w1 > c.w0 {
			if !ex.upW {
				return progress, nil
			}
			n, err := sys.Write(ex.up, c.in[c.w0:c.w1])
			if sys.IsAgain(err) {
				ex.upW = false
				return progress, nil
			}
			if err != nil {
				return progress, upstreamError{err}
			}
			c.w0 += n
			ex.bytesUp += uint64(n)
			progress = true
			continue
		}
		if ex.reqDone {
			return progress, nil
		}
		if c.r1 > c.r0 {
			out, used, err := ex.reqBody.claim(c.in[c.r0:c.r1])
			if err != nil {
				return progress, err
			}
			c.w0, c.w1 = c.r0, c.r0+out
			c.r0 += used
			ex.reqDone = ex.reqBody.done
			progress = true
			continue
		}
		if handled, p, err := c.spliceUp(); handled || err != nil {
			return progress || p, err
		} else if p {
			progress = true
			continue // splice refused: copy
		}
		if !c.cReadable {
			return progress, nil
		}
		if c.in == nil {
			c.in = c.bufs().get()
		}
		c.w0, c.w1, c.r0, c.r1 = 0, 0, 0, 0
		room := c.in
		if ex.rate != nil && !c.grant(ex.rate.up, &room) {
			return progress, nil // the rate timer pumps again
		}
		n, err := sys.Read(c.fd, room)
		if ex.rate != nil {
			used(ex.rate.up, n, len(room), err)
		}
		if sys.IsAgain(err) {
			c.cReadable = false
			return progress, nil
		}
		if err != nil || n == 0 {
			c.cEOF = true
			return progress, errors.New("client closed during the request body")
		}
		if n < len(room) && !c.cHangup {
			c.cReadable = false // short read: drained
		}
		c.r1 = n
		progress = true
	}
}

// moveDown reads the origin's response head, sends the rewritten head and
// streams the body to the client.
func (c *conn) moveDown() (bool, error) {
	ex := c.ex
	progress := false
	for {
		// The head goes out with the body bytes that came with it in one
		// sendmsg: while some wait unclaimed, claim them first.
		if len(ex.cHead) > 0 && (ex.resp == nil || ex.respDone || ex.ow1 > ex.ow0 || ex.or1 == ex.or0) {
			if !c.cWritable {
				return progress, nil
			}
			n, err := sys.Writev(c.fd, ex.cHead, ex.out[ex.ow0:ex.ow1])
			if sys.IsAgain(err) {
				c.cWritable = false
				return progress, nil
			}
			if err != nil {
				return progress, err
			}
			h := min(n, len(ex.cHead))
			ex.cHead = ex.cHead[h:]
			ex.ow0 += n - h
			ex.bytesDn += uint64(n - h)
			progress = true
			continue
		}
		if ex.ow1 > ex.ow0 {
			if !c.cWritable {
				return progress, nil
			}
			n, err := sys.Write(c.fd, ex.out[ex.ow0:ex.ow1])
			if sys.IsAgain(err) {
				c.cWritable = false
				return progress, nil
			}
			if err != nil {
				return progress, err
			}
			ex.ow0 += n
			ex.bytesDn += uint64(n)
			progress = true
			continue
		}
		if ex.respDone {
			return progress, nil
		}
		if ex.or1 > ex.or0 {
			if ex.resp == nil {
				resp, n, err := httpmsg.ParseResponse(ex.out[ex.or0:ex.or1], c.s.cfg.Limits, ex.req.Method)
				if err == httpmsg.ErrIncomplete {
					if ex.or0 == 0 && ex.or1 == len(ex.out) {
						return progress, upstreamError{errors.New("response head too large")}
					}
					if ex.or0 > 0 {
						ex.or1 = copy(ex.out, ex.out[ex.or0:ex.or1])
						ex.or0 = 0
					}
				} else {
					if err != nil {
						return progress, upstreamError{err}
					}
					ex.or0 += n
					c.startResponse(resp)
					if c.state != stExchange {
						return true, nil // failed, or blocked before the head was sent
					}
					progress = true
					continue
				}
			} else {
				out, used, err := ex.respBody.claim(ex.out[ex.or0:ex.or1])
				var blocked blockedError
				if errors.As(err, &blocked) {
					return progress, err
				}
				if err != nil {
					return progress, upstreamError{err}
				}
				ex.ow0, ex.ow1 = ex.or0, ex.or0+out
				if ex.cache != nil {
					c.cacheTee(ex.out[ex.ow0:ex.ow1])
				}
				ex.or0 += used
				if ex.respBody.done {
					ex.respDone = true
					// Bytes past the response: the connection is not
					// pooled and they are dropped with it.
					ex.extra = ex.or1 > ex.or0
					ex.or0 = ex.or1
				}
				progress = true
				continue
			}
		}
		if handled, p, err := c.spliceDown(); handled || err != nil {
			return progress || p, err
		} else if p {
			progress = true
			continue // splice refused: copy
		}
		if !ex.upR {
			return progress, nil
		}
		if ex.out == nil {
			ex.out = c.bufs().get()
		}
		if ex.or1 == ex.or0 {
			ex.ow0, ex.ow1, ex.or0, ex.or1 = 0, 0, 0, 0
		}
		room := ex.out[ex.or1:]
		if ex.rate != nil && !c.grant(ex.rate.down, &room) {
			return progress, nil // the rate timer pumps again
		}
		n, err := sys.Read(ex.up, room)
		if ex.rate != nil {
			used(ex.rate.down, n, len(room), err)
		}
		if sys.IsAgain(err) {
			ex.upR = false
			return progress, nil
		}
		if err != nil {
			return progress, upstreamError{err}
		}
		if n == 0 {
			switch {
			case ex.resp == nil:
				return progress, upstreamError{errors.New("origin closed without a response")}
			case ex.respBody.framing == httpmsg.UntilClose:
				ex.respBody.done, ex.respDone = true, true
				return true, nil
			}
			return progress, upstreamError{errors.New("origin closed in the middle of the body")}
		}
		if n < len(room) && !ex.upHangup {
			ex.upR = false // short read: drained
		}
		ex.or1 += n
		progress = true
	}
}

// startResponse takes a parsed response head: an interim 1xx is passed on
// (to HTTP/1.1 clients) and the next head awaited; a final one is
// rewritten for the client.
func (c *conn) startResponse(resp *httpmsg.Response) {
	ex := c.ex
	if resp.Status < 200 {
		if resp.Status == 101 {
			// Upgrade is never forwarded, so a 101 is a broken origin.
			ex.cHead = nil
			ex.respBody = body{framing: httpmsg.NoBody}
			ex.resp = nil
			c.exchangeFailed(upstreamError{errors.New("unexpected 101 Switching Protocols")})
			return
		}
		if ex.req.Version == 1 {
			ex.cHead = interimHead(c.cHeadSpace(), resp)
		}
		return
	}
	if c.cacheResponse(resp) {
		return
	}
	ex.resp = resp
	ex.status = resp.Status
	ex.respBody = newBody(resp.Framing, resp.ContentLength)
	dechunk := resp.Framing == httpmsg.Chunked && ex.req.Version == 0
	ex.respBody.dechunk = dechunk
	ex.respDone = ex.respBody.done
	ex.keepClient = !ex.req.Close && ex.req.Version == 1 && resp.Framing != httpmsg.UntilClose && !c.cEOF
	if !ex.reqDone {
		// The origin answered before the request body ended: the client
		// connection cannot be reused safely.
		ex.keepClient = false
	}
	ex.cHead = c.responseHead(c.cHeadSpace(), resp, dechunk)
	if words := c.s.cfg.BodyWords; words != nil && ex.respBody.framing != httpmsg.NoBody {
		ct, _ := resp.Header.Get("Content-Type")
		ce, _ := resp.Header.Get("Content-Encoding")
		if filter.Scannable(ct, ce) {
			ex.respBody.scan = words.NewScanner()
			// The body bytes that came with the head are scanned before
			// the head goes out: a word among them gets a 403 page.
			if ex.or1 > ex.or0 {
				out, used, err := ex.respBody.claim(ex.out[ex.or0:ex.or1])
				if err != nil {
					c.exchangeFailed(err)
					return
				}
				ex.ow0, ex.ow1 = ex.or0, ex.or0+out
				ex.or0 += used
				if ex.respBody.done {
					ex.respDone = true
					ex.extra = ex.or1 > ex.or0
					ex.or0 = ex.or1
				}
			}
		}
	}
	ex.headOut = true
}

// exchangeFailed ends an exchange on an error: the client gets a response
// if none was started, else the connection is reset.
func (c *conn) exchangeFailed(err error) {
	ex := c.ex
	var ue upstreamError
	var blocked blockedError
	if errors.As(err, &blocked) {
		c.s.warn.Log(slog.LevelInfo, "response blocked", "client", c.client.String(), "target", ex.t.url(), "word", blocked.word)
		c.abortUp()
		if !ex.headOut {
			// Nothing of the final head was sent: answer 403 instead.
			ex.resp = nil
			c.fail(403, "blocked by the content filter")
			return
		}
		ex.status = 403
		c.logAccess()
		c.close(true) // the head is out: cut the body short
		return
	}
	if errors.As(err, &ue) && ex.reused && ex.resp == nil && ex.status == 0 && ex.or1 == 0 &&
		len(ex.cHead) == 0 && ex.req.Framing == httpmsg.NoBody {
		// A pooled connection the origin had closed meanwhile: nothing
		// was answered and there is no body to replay, so send the
		// request again on a fresh connection.
		head, headBuf := ex.head, ex.headBuf
		ex.headBuf = nil // kept for the new connection
		c.abortUp()
		ex.head, ex.headBuf = head, headBuf
		ex.reused = false
		c.state = stDial
		c.dial(ex.key.Addr())
		return
	}
	c.abortUp()
	if ex.resp == nil && ex.status == 0 && !c.cEOF {
		if errors.As(err, &ue) {
			if c.staleOnError(err.Error()) {
				return
			}
			c.s.warn.Log(slog.LevelInfo, "origin failed", "target", ex.t.url(), "err", err)
			c.fail(502, "bad response from origin")
			return
		}
		c.fail(statusOf(err, 400), err.Error())
		return
	}
	c.s.log.Debug("exchange aborted", "target", ex.t.url(), "err", err)
	c.logAccess()
	c.close(true)
}

// cHeadSpace returns what is left of the client head to append to, in a
// borrowed buffer.
func (c *conn) cHeadSpace() []byte {
	ex := c.ex
	if len(ex.cHead) > 0 {
		return ex.cHead
	}
	if ex.cHeadBuf == nil {
		ex.cHeadBuf = c.bufs().get()
	}
	return ex.cHeadBuf[:0]
}

// abortUp closes the origin connection, if any, and gives back what the
// exchange borrowed.
func (c *conn) abortUp() {
	if ex := c.ex; ex != nil {
		ex.spUp.release()
		ex.spDown.release()
	}
	c.rateStop()
	c.cacheAbandon()
	if ex := c.ex; ex != nil && ex.up >= 0 {
		c.loop.Close(ex.up)
		ex.up = -1
	}
	ex := c.ex
	if ex == nil {
		return
	}
	for _, b := range []*[]byte{&ex.out, &ex.headBuf, &ex.cHeadBuf} {
		if *b != nil {
			c.bufs().put(*b)
			*b = nil
		}
	}
	ex.head, ex.upHead, ex.cHead = nil, nil, nil
}

// finishExchange ends a complete exchange and waits for the next request
// or closes.
func (c *conn) finishExchange() {
	c.cacheFinish()
	ex := c.ex
	st := &c.s.stats[c.loop.ID()]
	st.BytesUp += ex.bytesUp
	st.BytesDown += ex.bytesDn
	c.logAccess()
	if ex.up >= 0 && !ex.resp.Close && ex.respBody.framing != httpmsg.UntilClose && !ex.extra {
		c.s.origins[c.loop.ID()].put(ex.key, ex.up)
		ex.up = -1
	}
	c.abortUp()
	keep := ex.keepClient
	c.cacheDone()
	c.ex = nil
	if c.watched && !c.acct.TimeLimited() {
		c.watch(false) // idle, it cannot use up a byte quota: no syncs for it
	}
	if !keep {
		c.closeGracefully()
		return
	}
	c.state = stHead
	c.w0, c.w1 = 0, 0
	if c.r1 == c.r0 {
		c.putIn()
	}
	c.headStart = 0
	if c.r1 > c.r0 {
		c.headStart = c.loop.Now()
		c.loop.Schedule(&c.timer, c.s.cfg.HeaderTimeout)
	} else {
		c.loop.Schedule(&c.timer, c.s.cfg.IdleTimeout)
	}
	c.readHead()
}

// record is one access log line.
type record struct {
	client           netip.Addr
	user, method     string
	raw              string // the request target as sent
	t                target // where it went; spelled out only for the access log
	status           int
	byProxy          bool // the status is sluice's own (an error it answered)
	bytesUp, bytesDn uint64
	start            time.Time
}

// record returns the access record of the current exchange.
func (c *conn) record() record {
	ex := c.ex
	r := record{client: c.client, user: ex.user, method: "-", raw: "-", t: ex.t, status: ex.status,
		byProxy: ex.resp == nil && !ex.cache.served(), bytesUp: ex.bytesUp, bytesDn: ex.bytesDn, start: ex.start}
	if ex.req != nil {
		r.raw, r.method = ex.req.Target, ex.req.Method
	}
	return r
}

// url is the record's URL or CONNECT target for the access log.
func (r *record) url() string {
	if r.t.host != "" {
		return r.t.url()
	}
	return r.raw
}

func (c *conn) logAccess() {
	rec := c.record()
	c.s.logRecord(c.loop, &rec)
	c.accountRequest(&rec)
}

// logRecord counts a request and writes its access line.
func (s *Service) logRecord(l *reactor.Loop, r *record) {
	st := &s.stats[l.ID()]
	st.Requests++
	if r.status >= 400 && r.byProxy {
		st.Errors++
	}
	if s.cfg.AccessLog == nil {
		return
	}
	s.cfg.AccessLog.Info("request", "client", r.client.String(), "user", r.user, "method", r.method,
		"url", r.url(), "status", r.status, "bytes_up", r.bytesUp, "bytes_down", r.bytesDn,
		"duration", time.Since(r.start).Round(time.Microsecond))
}

// fail answers the client with an error status and closes after it.
func (c *conn) fail(status int, reason string) { c.respond(status, errorResponse(status, reason)) }

// respond ends the connection with a complete response sluice made
// itself (with Connection: close), after logging it.
func (c *conn) respond(status int, resp []byte) {
	if c.ex == nil {
		c.ex = &exchange{up: -1, start: time.Now()}
	}
	ex := c.ex
	c.abortUp()
	ex.status = status
	c.logAccess()
	_, _ = sys.Write(c.fd, resp)
	c.closeGracefully()
}

// closeGracefully sends FIN and reads what the client still sends, so it
// sees our last response rather than a reset caused by unread bytes.
func (c *conn) closeGracefully() {
	c.cacheDone()
	c.ex = nil
	c.putIn()
	if err := sys.ShutdownWrite(c.fd); err != nil || c.cEOF {
		c.close(false)
		return
	}
	c.state = stLinger
	c.loop.Schedule(&c.timer, lingerTimeout)
	c.linger()
}

func (c *conn) linger() {
	var scratch [512]byte
	for c.cReadable {
		n, err := sys.Read(c.fd, scratch[:])
		if sys.IsAgain(err) {
			c.cReadable = false
			return
		}
		if err != nil || n == 0 {
			c.close(false)
			return
		}
	}
}

// close ends the connection; reset sends RST instead of FIN.
func (c *conn) close(reset bool) {
	if c.state == stClosed {
		return
	}
	c.state = stClosed
	c.loop.Cancel(&c.timer)
	c.abortUp()
	c.cacheDone()
	c.putIn()
	c.closeAccount()
	c.rateRelease()
	if reset {
		c.loop.CloseReset(c.fd)
	} else {
		c.loop.Close(c.fd)
	}
	c.s.live.Done()
}
