package endpoint

import (
	"errors"
	"fmt"
	"time"

	"github.com/sluice-proxy/sluice/pkg/reactor"
	"github.com/sluice-proxy/sluice/pkg/sys"
)

// ErrConnectTimeout is returned through DialFunc when a connect takes longer
// than its timeout.
var ErrConnectTimeout = errors.New("connect timeout")

// ConnEvents is the edge-triggered event set a connected fd is registered
// with; whoever takes the fd over from Dial relies on it.
const ConnEvents = sys.EventIn | sys.EventOut | sys.EventRdHup | sys.EventEdge

// DialFunc receives the outcome of Dial on the dialing loop: a connected
// fd, already registered on the loop with ConnEvents, or an error. On
// success the callee owns fd and must give it a handler (Loop.SetHandler)
// before returning; its first event may already have been consumed, so it
// must treat the fd as readable and writable until told otherwise.
type DialFunc func(fd int, err error)

// Dial starts a non-blocking connect to sa on loop l. done is called exactly
// once, on l; possibly before Dial returns when the outcome is immediate.
// A zero timeout means none.
func Dial(l *reactor.Loop, sa sys.Sockaddr, timeout time.Duration, done DialFunc) {
	fam := family(sa)
	fd, err := sys.Socket(fam)
	if err != nil {
		done(-1, fmt.Errorf("connect %s: %w", FormatSockaddr(sa), err))
		return
	}
	switch fam {
	case sys.AFInet, sys.AFInet6:
		sys.SetNoDelay(fd)
	case sys.AFVsock:
		// The kernel would give up after its own 2 s default; let the
		// timer below decide (best effort: an error leaves the default).
		if timeout > 0 {
			_ = sys.SetVsockConnectTimeout(fd, timeout)
		}
	}
	err = sys.Connect(fd, sa)
	if err != nil && !sys.IsInProgress(err) {
		sys.Close(fd)
		if sys.IsAgain(err) { // a unix listener's backlog is full
			err = errors.New("listener backlog is full")
		}
		done(-1, fmt.Errorf("connect %s: %w", FormatSockaddr(sa), err))
		return
	}
	d := &dialer{loop: l, fd: fd, sa: sa, done: done}
	if rerr := l.Register(fd, ConnEvents, d); rerr != nil {
		sys.Close(fd)
		done(-1, fmt.Errorf("connect %s: %w", FormatSockaddr(sa), rerr))
		return
	}
	if err == nil { // connected at once, as unix sockets do
		done(fd, nil)
		return
	}
	if timeout > 0 {
		d.timer.Func = d.expire
		l.Schedule(&d.timer, timeout)
	}
}

type dialer struct {
	loop  *reactor.Loop
	fd    int
	sa    sys.Sockaddr
	done  DialFunc
	timer reactor.Timer
}

// HandleEvent completes the connect on writability or error.
func (d *dialer) HandleEvent(ev uint32) {
	if ev&(sys.EventOut|sys.EventErr|sys.EventHup) == 0 {
		return
	}
	d.loop.Cancel(&d.timer)
	if err := sys.SocketError(d.fd); err != nil {
		d.fail(err)
		return
	}
	if ev&(sys.EventErr|sys.EventHup) != 0 && ev&sys.EventOut == 0 {
		d.fail(errors.New("connection closed during connect"))
		return
	}
	d.done(d.fd, nil)
}

func (d *dialer) expire() { d.fail(ErrConnectTimeout) }

func (d *dialer) fail(err error) {
	d.loop.Close(d.fd)
	d.done(-1, fmt.Errorf("connect %s: %w", FormatSockaddr(d.sa), err))
}
