package tunnel

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/sluice-proxy/sluice/pkg/reactor"
	"github.com/sluice-proxy/sluice/pkg/sys"
)

// frameHandler is told what a frameConn receives. Both run on the
// connection's loop.
type frameHandler interface {
	// frame handles one frame; an error closes the connection. The payload
	// is only valid during the call. The handler may detach or close c.
	frame(c *frameConn, t byte, p []byte) error
	// closed is called once when c closes, with the reason (nil when the
	// peer closed cleanly, or when the owner closed it without one).
	closed(c *frameConn, err error)
}

// errDetached stops a frameConn's read loop after its fd was handed on.
var errDetached = errors.New("detached")

// frameConn is a tunnel connection in its framed phase, on one loop: it
// reads frames and hands them to its handler, and queues what it sends
// until the socket takes it. A control connection stays framed for its
// life; a data connection is framed until Start, then detached and handed
// to a relay. In exact mode it never reads past the end of a frame, so the
// bytes after the last frame stay in the socket for whoever takes it over.
//
// Buffers exist only while bytes are in them: an idle frameConn is this
// struct and its fd.
type frameConn struct {
	loop  *reactor.Loop
	fd    int
	h     frameHandler
	exact bool
	in    []byte // received bytes not yet handled
	out   []byte // bytes the socket has not taken yet
	timer reactor.Timer
	dead  bool // closed or detached
	// closing is set by closeAfter: close once everything queued is sent.
	closing bool
	cur     int // length of the frame being handled
}

// maxFrame is the longest frame on the wire.
const maxFrame = headerLen + MaxPayload

// newFrameConn takes over fd, a connected socket registered on l with
// endpoint.ConnEvents, and reads it as if it were readable.
func newFrameConn(l *reactor.Loop, fd int, h frameHandler, exact bool) *frameConn {
	c := &frameConn{loop: l, fd: fd, h: h, exact: exact}
	l.SetHandler(fd, c)
	return c
}

// start reads what may already be there (edges may have passed).
func (c *frameConn) start() { c.HandleEvent(sys.EventIn | sys.EventOut) }

// HandleEvent implements reactor.Handler.
func (c *frameConn) HandleEvent(ev uint32) {
	if c.dead {
		return
	}
	if ev&sys.EventOut != 0 && len(c.out) > 0 {
		if err := c.flush(); err != nil {
			c.fail(err)
			return
		}
	}
	if c.dead || c.closing {
		return
	}
	if err := c.readFrames(); err != nil {
		if err == errDetached {
			return
		}
		c.fail(err)
	}
}

// readFrames reads until the socket has nothing more (or, in exact mode,
// up to a frame boundary and on), handing each whole frame to h.
func (c *frameConn) readFrames() error {
	for !c.dead && !c.closing {
		if c.in == nil {
			c.in = make([]byte, 0, maxFrame)
		}
		want := cap(c.in) - len(c.in)
		if c.exact {
			need, err := frameLen(c.in)
			if err != nil {
				return err
			}
			if need == 0 {
				need = headerLen
			}
			want = need - len(c.in)
		}
		n, err := sys.Read(c.fd, c.in[len(c.in):len(c.in)+want])
		if err != nil {
			if sys.IsAgain(err) {
				if len(c.in) == 0 {
					c.in = nil
				}
				return nil
			}
			return fmt.Errorf("read: %w", err)
		}
		if n == 0 {
			if len(c.in) > 0 {
				return fmt.Errorf("connection closed in the middle of a frame: %w", io.ErrUnexpectedEOF)
			}
			return io.EOF
		}
		c.in = c.in[:len(c.in)+n]
		if err := c.dispatch(); err != nil {
			return err
		}
	}
	if c.dead {
		return errDetached
	}
	return nil
}

// dispatch hands every whole frame in c.in to the handler.
func (c *frameConn) dispatch() error {
	for !c.dead && !c.closing {
		n, err := frameLen(c.in)
		if err != nil {
			return err
		}
		if n == 0 || len(c.in) < n {
			return nil
		}
		c.cur = n
		err = c.h.frame(c, c.in[0], c.in[headerLen:n])
		c.cur = 0
		if err != nil {
			return err
		}
		if c.dead {
			return errDetached
		}
		rest := copy(c.in, c.in[n:])
		c.in = c.in[:rest]
	}
	return nil
}

// send queues b (whole frames) and writes what the socket takes now.
func (c *frameConn) send(b []byte) {
	if c.dead {
		return
	}
	if len(c.out) > 0 {
		c.out = append(c.out, b...)
		return
	}
	n, err := sys.Write(c.fd, b)
	if err != nil && !sys.IsAgain(err) {
		c.loop.Post(func() { c.fail(fmt.Errorf("write: %w", err)) })
		return
	}
	if n < len(b) {
		c.out = append(c.out, b[max(n, 0):]...)
	}
}

func (c *frameConn) flush() error {
	for len(c.out) > 0 {
		n, err := sys.Write(c.fd, c.out)
		if err != nil {
			if sys.IsAgain(err) {
				return nil
			}
			return fmt.Errorf("write: %w", err)
		}
		c.out = c.out[n:]
	}
	c.out = nil
	if c.closing {
		c.close(nil)
	}
	return nil
}

// pending reports the bytes queued and not yet taken by the socket.
func (c *frameConn) pending() int { return len(c.out) }

// closeAfter sends b and closes the connection once it is written (or at
// once if the socket takes it now): an Error frame before hanging up.
func (c *frameConn) closeAfter(b []byte) {
	c.send(b)
	if c.dead {
		return
	}
	if len(c.out) == 0 {
		c.close(nil)
		return
	}
	c.closing = true
	// A peer that never reads must not keep the connection: bounded.
	c.timer.Func = func() { c.close(errors.New("peer did not read the last frame")) }
	c.loop.Schedule(&c.timer, 5*time.Second)
}

// deadline arms the connection's timer: d from now it fails with err.
// Zero cancels it.
func (c *frameConn) deadline(d time.Duration, err error) {
	if d == 0 {
		c.loop.Cancel(&c.timer)
		return
	}
	c.timer.Func = func() { c.fail(err) }
	c.loop.Schedule(&c.timer, d)
}

// fail closes the connection for err (EOF meaning a clean close).
func (c *frameConn) fail(err error) {
	if err == io.EOF {
		err = nil
	}
	c.close(err)
}

// close closes the fd (with RST when err is set) and tells the handler.
func (c *frameConn) close(err error) {
	if c.dead {
		return
	}
	c.dead = true
	c.loop.Cancel(&c.timer)
	if err != nil {
		c.loop.CloseReset(c.fd)
	} else {
		c.loop.Close(c.fd)
	}
	c.in, c.out = nil, nil
	c.h.closed(c, err)
}

// detach ends the framed phase: the fd stays open and registered, and
// belongs to the caller. Nothing may be queued.
func (c *frameConn) detach() (int, error) {
	if c.dead {
		return -1, errors.New("connection closed")
	}
	if len(c.out) > 0 {
		return -1, errors.New("socket did not take a whole frame")
	}
	if len(c.in) > c.cur {
		return -1, protoErr("%d bytes after the last frame", len(c.in)-c.cur)
	}
	c.dead = true
	c.loop.Cancel(&c.timer)
	c.in = nil
	return c.fd, nil
}
