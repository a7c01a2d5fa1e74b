package httpproxy

import (
	"net/netip"
	"time"

	"github.com/sluice-proxy/sluice/pkg/reactor"
	"github.com/sluice-proxy/sluice/pkg/sys"
)

// Bounds of a loop's pool of idle origin connections.
const (
	maxIdlePerOrigin = 32
	maxIdlePerLoop   = 256
	originIdle       = 30 * time.Second
)

// originPool keeps one loop's idle keep-alive connections to origins, by
// the address they were dialed at, so the next request to the same origin
// skips the connect. It is owned by its loop; nothing is shared.
type originPool struct {
	loop  *reactor.Loop
	idle  map[netip.AddrPort][]*idleOrigin
	total int
	// free keeps idleOrigin records for reuse: a keep-alive exchange
	// pools its origin connection and the next takes it, so a record per
	// request would be garbage at the request rate.
	free []*idleOrigin
}

// idleOrigin is a pooled origin connection: its handler closes it when the
// origin closes or sends anything, and its timer when it idled too long.
type idleOrigin struct {
	p     *originPool
	key   netip.AddrPort
	fd    int
	timer reactor.Timer
}

// put pools fd, or closes it when the pool is full.
func (p *originPool) put(key netip.AddrPort, fd int) {
	if p.total >= maxIdlePerLoop || len(p.idle[key]) >= maxIdlePerOrigin {
		p.loop.Close(fd)
		return
	}
	if p.idle == nil {
		p.idle = make(map[netip.AddrPort][]*idleOrigin)
	}
	var o *idleOrigin
	if n := len(p.free); n > 0 {
		o = p.free[n-1]
		p.free = p.free[:n-1]
		drop := o.timer.Func // already bound to o: a new method value would allocate
		*o = idleOrigin{p: p, key: key, fd: fd}
		o.timer.Func = drop
	} else {
		o = &idleOrigin{p: p, key: key, fd: fd}
		o.timer.Func = o.drop
	}
	p.loop.SetHandler(fd, o)
	p.loop.Schedule(&o.timer, originIdle)
	p.idle[key] = append(p.idle[key], o)
	p.total++
}

// take returns the newest idle connection to key, or -1. It does not probe
// the socket (a read per request): a connection the origin closed has been
// dropped by its handler unless the event is still on its way, and then the
// request fails before any answer and is sent again on a fresh connection
// (conn.exchangeFailed).
func (p *originPool) take(key netip.AddrPort) int {
	list := p.idle[key]
	if len(list) == 0 {
		return -1
	}
	o := list[len(list)-1]
	p.remove(o)
	fd := o.fd
	p.recycle(o)
	return fd
}

// recycle keeps o, which no handler or timer refers to any more, for the
// next put.
func (p *originPool) recycle(o *idleOrigin) {
	if len(p.free) < maxIdlePerLoop {
		*o = idleOrigin{}
		p.free = append(p.free, o)
	}
}

func (p *originPool) remove(o *idleOrigin) {
	list := p.idle[o.key]
	for i, x := range list {
		if x == o {
			list[i] = list[len(list)-1]
			list[len(list)-1] = nil
			list = list[:len(list)-1]
			break
		}
	}
	if len(list) == 0 {
		delete(p.idle, o.key)
	} else {
		p.idle[o.key] = list
	}
	p.total--
	p.loop.Cancel(&o.timer)
}

// HandleEvent drops the connection on anything the origin does while idle.
func (o *idleOrigin) HandleEvent(ev uint32) {
	if ev&(sys.EventIn|sys.EventRdHup|sys.EventHup|sys.EventErr) != 0 {
		o.drop()
	}
}

func (o *idleOrigin) drop() {
	p := o.p
	p.remove(o)
	p.loop.Close(o.fd) // clears the fd's handler: nothing refers to o now
	p.recycle(o)
}
