package httpproxy

import (
	"context"
	"log/slog"
	"sync"
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
		user := ex.user
		if user == "" && c.s.cfg.AccountUsers != nil {
			// A proxy without auth: the client's address may belong to a
			// user (once per connection: the address never changes).
			user, _ = c.s.cfg.AccountUsers.UserFor(c.client)
		}
		c.acct = a.Record(accounting.Key(user, c.client))
		c.acct.Open(now)
	}
	if err := c.acct.Check(ex.start); err != nil {
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
	return true
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
	tn.s.tunnels.add(tn)
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
		tn.s.tunnels.remove(tn)
	}
	now := time.Now()
	a.rec.Add(1, tn.rec.bytesUp-a.addedUp, tn.rec.bytesDn-a.addedDn, now)
	a.rec.Close(now)
}

// liveTunnels are a service's running tunnels that count for an
// identity. While there is one, the set is a source of the accounting.
type liveTunnels struct {
	mu  sync.Mutex
	acc *accounting.Accounting
	set map[*tunnel]struct{}
}

func (lt *liveTunnels) add(tn *tunnel) {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	if lt.set == nil {
		lt.set = make(map[*tunnel]struct{})
	}
	lt.set[tn] = struct{}{}
	if len(lt.set) == 1 {
		lt.acc = tn.s.cfg.Accounting
		lt.acc.AddSource(lt)
	}
}

func (lt *liveTunnels) remove(tn *tunnel) {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	delete(lt.set, tn)
	if len(lt.set) == 0 {
		lt.acc.RemoveSource(lt)
	}
}

// Sync adds the bytes every live tunnel moved so far, on the tunnel's
// loop, and closes the tunnels whose identity is now over its quota (a
// long tunnel cannot outlive the quota by more than a flush interval);
// it returns when every loop has, or when ctx is done.
func (lt *liveTunnels) Sync(ctx context.Context) {
	lt.mu.Lock()
	byLoop := make(map[*reactor.Loop][]*tunnel)
	for tn := range lt.set {
		l := tn.acct.relay.Loop()
		byLoop[l] = append(byLoop[l], tn)
	}
	lt.mu.Unlock()
	done := make(chan struct{}, len(byLoop))
	for l, tns := range byLoop {
		l.Post(func() {
			now := time.Now()
			for _, tn := range tns {
				if tn.acct.ended {
					continue
				}
				tn.addSoFar(now)
				if err := tn.acct.rec.Check(now); err != nil {
					tn.s.warn.Log(slog.LevelWarn, "quota exceeded: tunnel closed", "client", tn.rec.client.String(),
						"user", tn.acct.rec.Key(), "target", tn.rec.raw, "err", err)
					tn.acct.relay.Abort()
				}
			}
			done <- struct{}{}
		})
	}
	for range byLoop {
		select {
		case <-done:
		case <-ctx.Done():
			return
		}
	}
}
