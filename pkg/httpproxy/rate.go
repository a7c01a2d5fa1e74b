package httpproxy

import (
	"log/slog"

	"github.com/sluice-proxy/sluice/pkg/ratelimit"
	"github.com/sluice-proxy/sluice/pkg/relay"
)

// Rate limit hooks (Config.Rates). A connection takes a slot of its user's
// connection limit at its first request (and again only when a later
// request comes from another user) and holds it until it closes, or until
// its CONNECT tunnel ends. An exchange of a limited user reads the request
// body from the client under the user's up bucket and the response from
// the origin under the down bucket (and sends a cache hit's body under
// it): when a bucket has no grant the exchange stops that way and a loop
// timer pumps it again. A tunnel's relay gets the same buckets.
// Unlimited exchanges pay one nil check per read.

// exRate is the rate state of one exchange of a limited user.
type exRate struct {
	up, down *ratelimit.Flow // nil: that direction is not limited
}

// rateAdmit attaches the connection to the limits of the current request's
// user. Over the user's connection limit, the client gets 429 (the user
// may retry once one of their connections closes; the proxy itself is not
// overloaded, so not 503) and false is returned.
func (c *conn) rateAdmit() bool {
	ex := c.ex
	u := c.s.cfg.Rates.User(ex.user)
	if u != c.rl {
		c.rateRelease()
		if u != nil && !u.Acquire() {
			c.s.warn.Log(slog.LevelWarn, "connection limit reached", "client", c.client.String(), "user", ex.user,
				"max_conns", u.MaxConns())
			c.fail(429, "too many connections for this user")
			return false
		}
		c.rl = u
	}
	if u == nil {
		return true
	}
	up, down := u.Up(), u.Down()
	if up == nil && down == nil {
		return true
	}
	// A limited body is copied, never spliced (splice.go checks ex.rate):
	// the copy path reads what the bucket grants.
	ex.rate = &exRate{}
	if up != nil {
		ex.rate.up = ratelimit.NewFlow(up, c.pump)
	}
	if down != nil {
		ex.rate.down = ratelimit.NewFlow(down, c.pump)
	}
	return true
}

// grant limits p, the room a read in direction f may fill, to the bytes
// the bucket grants now. It reports false when there are none: the
// exchange must stop reading that way until the flow's timer pumps it.
func (c *conn) grant(f *ratelimit.Flow, p *[]byte) bool {
	if f == nil || len(*p) == 0 {
		return true
	}
	n := f.Grant(c.loop, len(*p))
	*p = (*p)[:n]
	return n > 0
}

// grantHit limits *left, the body bytes of a cache hit still to send, to
// what the user's down bucket grants now (a hit is a download too). It
// reports false when the exchange must wait for the flow's timer; the
// response head, if any is left, goes without waiting.
func (c *conn) grantHit(left *int64) bool {
	f := c.ex.rate.down
	if f == nil || *left == 0 {
		return true
	}
	*left = int64(f.Grant(c.loop, int(min(*left, 1<<30))))
	return *left > 0 || len(c.ex.cHead) > 0
}

// used records a read of n bytes into room bytes under f; err is the
// read's error.
func used(f *ratelimit.Flow, n, room int, err error) {
	if f != nil {
		f.Used(n, err != nil || n < room)
	}
}

// rateStop stops the exchange's flows when its origin connection goes,
// giving back unread grants. The flows stay: an exchange that goes on (a
// request sent again on a fresh connection, a hit served after a 304)
// keeps its limits.
func (c *conn) rateStop() {
	if ex := c.ex; ex != nil && ex.rate != nil {
		for _, f := range []*ratelimit.Flow{ex.rate.up, ex.rate.down} {
			if f != nil {
				f.Stop(c.loop)
			}
		}
	}
}

// rateRelease gives back the connection's slot of its user's limit.
func (c *conn) rateRelease() {
	if c.rl != nil {
		c.rl.Release()
		c.rl = nil
	}
}

// tunnelLimits returns the relay options of the current CONNECT tunnel's
// buckets and hands the connection's slot to the tunnel.
func (c *conn) tunnelLimits(o relay.Options, tn *tunnel) relay.Options {
	c.rateStop()
	if c.rl != nil {
		o.LimitAB, o.LimitBA = c.rl.Up(), c.rl.Down()
		tn.rl, c.rl = c.rl, nil
	}
	return o
}
