package httpproxy

import (
	"log/slog"
	"strings"
	"time"

	"github.com/sluice-proxy/sluice/pkg/accounting"
)

// Accounting hooks. A connection resolves its identity's record once, at
// its first request (and again only if a later request comes from another
// user); each request adds its counts once, when it is logged; a CONNECT
// tunnel takes the record over and adds its bytes when it ends. Nothing
// here runs per read or write.

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
	if err := c.acct.Check(ex.start); err != nil {
		target := ex.t.url()
		if ex.tunnel {
			target = ex.t.authority()
		}
		c.s.warn.Log(slog.LevelWarn, "quota exceeded", "client", c.client.String(), "user", ex.user,
			"method", ex.req.Method, "target", target, "err", err)
		c.fail(403, err.Error())
		return false
	}
	ex.counted = true
	return true
}

// sameIdentity reports whether c.acct counts for user (or for the client
// address when user is empty: a connection's address never changes).
func (c *conn) sameIdentity(user string) bool {
	if c.acct == nil {
		return false
	}
	k := c.acct.Key()
	if user == "" {
		return strings.HasPrefix(k, accounting.AddrPrefix)
	}
	return k == user
}

// accountRequest adds a finished request (of any outcome) to its record.
func (c *conn) accountRequest(r *record) {
	if c.acct != nil && c.ex != nil && c.ex.counted {
		c.acct.Add(1, r.bytesUp, r.bytesDn, time.Now())
	}
}

// closeAccount ends the connection's connected time.
func (c *conn) closeAccount() {
	if c.acct != nil {
		c.acct.Close(time.Now())
		c.acct = nil
	}
}

// account adds an ended tunnel (counted as one request) and ends its
// connection's connected time.
func (tn *tunnel) account() {
	if tn.acct == nil {
		return
	}
	now := time.Now()
	tn.acct.Add(1, tn.rec.bytesUp, tn.rec.bytesDn, now)
	tn.acct.Close(now)
}
