package httpproxy

import (
	"log/slog"
	"time"

	"github.com/sluice-proxy/sluice/pkg/accounting"
	"github.com/sluice-proxy/sluice/pkg/reactor"
	"github.com/sluice-proxy/sluice/pkg/relay"
)

// Accounting hooks. A connection resolves its identity's record once, at
// its first request (and again only if a later request comes from another
// user); each request adds its counts once, when it is logged; a CONNECT
// tunnel takes the record over and adds its bytes when the accounting
// syncs and when it ends. Nothing here runs per read or write.

// account attaches the connection to the identity of the current request
// and checks its quota. Over quota, the client gets 403 and false is
// returned.
func (c *conn) account() bool {
	a := c.s.cfg.Accounting
	if a == nil {
		return true
	}
	ex := c.ex
	if !c.sameIdentity(ex.user) {
		now := ex.start
		if c.acct != nil {
			c.acct.Close(now)
		}
		c.acct = a.Record(accounting.Key(ex.user, c.client))
		c.acct.Open(now)
	}
	limited, err := c.acct.CheckQuota(ex.start)
	if err != nil {
		target := ex.t.url()
		if ex.tunnel {
			target = ex.t.authority()
		}
		c.s.warn.Log(slog.LevelWarn, "quota exceeded", "client", c.client.String(), "user", c.acct.Key(),
			"method", ex.req.Method, "target", target, "err", err)
		c.fail(403, err.Error())
		return false
	}
	ex.counted = true
	c.watch(limited)
	return true
}

// watch puts the connection in the service's counted set while its
// identity has a quota (so a long download is cut at the quota), and
// takes it out otherwise. Between requests only a quota on connected time
// keeps it there (finishExchange).
func (c *conn) watch(limited bool) {
	switch {
	case limited && !c.watched:
		c.s.counted.Add(c.s.cfg.Accounting, c, true)
	case !limited && c.watched:
		c.s.counted.Remove(c)
	}
	c.watched = limited
}

// Home is the connection's loop (accounting.Member).
func (c *conn) Home() *reactor.Loop { return c.loop }

// SyncAcct adds what the exchange in flight moved so far and, when the
// identity is over its quota, ends the connection: a 403 if the response
// has not started, else the response is cut short.
func (c *conn) SyncAcct(now time.Time) {
	if c.acct == nil || c.state == stClosed {
		return
	}
	ex := c.ex
	if ex != nil && ex.counted {
		if up, dn := ex.bytesUp-ex.addedUp, ex.bytesDn-ex.addedDn; up != 0 || dn != 0 {
			c.acct.Add(0, up, dn, now)
			ex.addedUp, ex.addedDn = ex.bytesUp, ex.bytesDn
		}
	}
	err := c.acct.Check(now)
	if err == nil {
		return
	}
	switch c.state {
	case stHead, stExchange, stCache:
	default:
		return // resolving, dialling or waiting: the next sync, or the next request's check
	}
	c.s.warn.Log(slog.LevelWarn, "quota exceeded: connection closed", "client", c.client.String(),
		"user", c.acct.Key(), "err", err)
	if ex == nil {
		c.closeGracefully() // between requests
		return
	}
	c.abortUp()
	if !ex.headOut {
		ex.resp = nil
		c.fail(403, err.Error())
		return
	}
	c.logAccess()
	c.close(true)
}

// sameIdentity reports whether c.acct counts for user. An empty user (a
// proxy without auth) is the same identity for the whole connection: the
// client's address, or the user that owns it.
func (c *conn) sameIdentity(user string) bool {
	if c.acct == nil {
		return false
	}
	return user == "" || c.acct.Key() == user
}

// accountRequest adds a finished request (of any outcome) to its record,
// less what syncs added while it ran.
func (c *conn) accountRequest(r *record) {
	if ex := c.ex; c.acct != nil && ex != nil && ex.counted {
		c.acct.Add(1, r.bytesUp-ex.addedUp, r.bytesDn-ex.addedDn, time.Now())
	}
}

// closeAccount ends the connection's connected time.
func (c *conn) closeAccount() {
	c.watch(false)
	if c.acct != nil {
		c.acct.Close(time.Now())
		c.acct = nil
	}
}

// tunnelAcct is a tunnel's part in accounting: bytes are added when it
// ends, and while it lives whenever the accounting syncs (each flush and
// `sluice accounting show`), so a long tunnel is neither invisible to its
// quota nor lost by a crash.
type tunnelAcct struct {
	rec              *accounting.Record // nil without accounting
	relay            *relay.Relay
	addedUp, addedDn uint64 // bytes already added
	ended            bool
}

// track makes a started tunnel's bytes visible to syncs.
func (tn *tunnel) track(r *relay.Relay) {
	if tn.acct.rec == nil || tn.acct.ended {
		return // no accounting, or relay.Start ended it at once
	}
	tn.acct.relay = r
	tn.s.counted.Add(tn.s.cfg.Accounting, tn, tn.acct.rec.Limited())
}

// Home is the tunnel's loop (accounting.Member).
func (tn *tunnel) Home() *reactor.Loop { return tn.acct.relay.Loop() }

// SyncAcct adds what the tunnel moved so far and closes it over quota.
func (tn *tunnel) SyncAcct(now time.Time) {
	if tn.acct.ended {
		return
	}
	tn.addSoFar(now)
	if err := tn.acct.rec.Check(now); err != nil {
		tn.s.warn.Log(slog.LevelWarn, "quota exceeded: tunnel closed", "client", tn.rec.client.String(),
			"user", tn.acct.rec.Key(), "target", tn.rec.raw, "err", err)
		tn.acct.relay.Abort()
	}
}

// addSoFar adds what the tunnel moved since the last call. On its loop.
func (tn *tunnel) addSoFar(now time.Time) {
	a := &tn.acct
	up, dn := tn.rec.bytesUp+a.relay.BytesAB(), tn.rec.bytesDn+a.relay.BytesBA()
	if up != a.addedUp || dn != a.addedDn {
		a.rec.Add(0, up-a.addedUp, dn-a.addedDn, now)
		a.addedUp, a.addedDn = up, dn
	}
}

// account adds an ended tunnel (one request, and what it moved since the
// last sync) and ends its connection's connected time.
func (tn *tunnel) account() {
	a := &tn.acct
	if a.rec == nil {
		return
	}
	a.ended = true
	if a.relay != nil {
		tn.s.counted.Remove(tn)
	}
	now := time.Now()
	a.rec.Add(1, tn.rec.bytesUp-a.addedUp, tn.rec.bytesDn-a.addedDn, now)
	a.rec.Close(now)
}
