// Package relay moves bytes between two connected, non-blocking sockets on
// one reactor loop: splice through a pooled pipe while bytes are in flight,
// a pooled buffer when no pipe is available or the socket family cannot
// splice. It propagates backpressure, half-close and resets.
//
// A direction copies through a buffer while it carries small messages and
// splices once reads fill whole buffers (bulk), so interactive traffic is
// answered sooner and bulk traffic never enters user space.
//
// A relay is driven by edge-triggered readiness and never blocks. It reads
// a source only when the previous chunk has been fully written to the
// destination, so a slow reader makes sluice hold at most one pipe or one
// buffer per direction, and an idle relay holds neither.
package relay

import (
	"errors"
	"io"
	"time"

	"github.com/sluice-proxy/sluice/pkg/ratelimit"
	"github.com/sluice-proxy/sluice/pkg/reactor"
	"github.com/sluice-proxy/sluice/pkg/sys"
)

// ErrIdleTimeout is the reason given when a relay closes for inactivity.
var ErrIdleTimeout = errors.New("idle timeout")

// ErrAborted is the reason given when a relay is closed by Abort.
var ErrAborted = errors.New("aborted")

// roundsPerTurn bounds the chunks a direction moves per turn before the
// relay yields to other connections on its loop (and resumes after them).
const roundsPerTurn = 4

// Options tune one relay. The zero value is usable.
type Options struct {
	// IdleTimeout closes the relay when no byte moved in either direction
	// for this long. If zero, never.
	IdleTimeout time.Duration
	// Done, if set, is called once on the loop after both sockets are
	// closed, with nil after a clean end or the reason otherwise.
	Done func(r *Relay, err error)
	// LimitAB and LimitBA, if set, bound the rate of each direction (a to
	// b, b to a): the relay reads, and splices, no more than the bucket
	// grants, and while it waits for a grant it reads nothing that way
	// until a loop timer resumes it. If nil, no limit.
	LimitAB, LimitBA *ratelimit.Bucket
}

// Relay joins two sockets. Its methods run on the loop that owns it.
type Relay struct {
	loop     *reactor.Loop
	pool     *Pool
	opts     Options
	a, b     end
	ab, ba   flow
	last     time.Duration // loop clock at the last activity
	timer    reactor.Timer
	copyOnly bool // splice refused for this pair: buffers only
	queued   bool // deferred to the end of the loop's batch
	closed   bool
}

// end is one socket of a relay and the handler of its events.
type end struct {
	r        *Relay
	fd       int
	readable bool
	// hangup: the peer's FIN or an error was reported, so a short read
	// does not prove the socket drained: read on until 0 or EAGAIN.
	hangup   bool
	writable bool
}

// flow is one direction: bytes read from one end, waiting for the other.
type flow struct {
	pipe   pipe
	inPipe int    // bytes in pipe; a pipe is held only while > 0
	buf    []byte // held only while off < n
	off, n int
	eof    bool // the source sent FIN
	shut   bool // FIN passed on to the destination
	bulk   bool // reads fill whole buffers: splice instead of copying
	tuned  bool // socket buffers set for bulk (Pool.SetSockBuf)
	// spliceEpoch and copyEpoch are the pool intervals in which this
	// direction was last counted as a flow of each kind.
	spliceEpoch, copyEpoch uint32
	bytes                  uint64
	// lim holds the direction's rate limit grant; nil: no limit.
	lim *ratelimit.Flow
}

// smallSplice is the chunk below which a splicing direction goes back to
// copying: for small messages (interactive traffic, request/response) a
// read and a send through a pooled buffer cost less than two splices and
// answer sooner. A direction starts out copying and splices once one read
// fills a whole buffer, like HAProxy's splice-auto.
const smallSplice = 4096

// Start relays between a and b, both connected sockets already registered
// on l with endpoint.ConnEvents (edge-triggered). The relay takes ownership
// of both fds and closes each exactly once.
func Start(l *reactor.Loop, pool *Pool, a, b int, opts Options) *Relay {
	r := &Relay{loop: l, pool: pool, opts: opts}
	r.a = end{r: r, fd: a, readable: true, writable: true}
	r.b = end{r: r, fd: b, readable: true, writable: true}
	l.SetHandler(a, &r.a)
	l.SetHandler(b, &r.b)
	if opts.IdleTimeout > 0 {
		r.timer.Func = r.checkIdle
		l.Schedule(&r.timer, opts.IdleTimeout)
	}
	if opts.LimitAB != nil {
		r.ab.lim = ratelimit.NewFlow(opts.LimitAB, r.pump)
	}
	if opts.LimitBA != nil {
		r.ba.lim = ratelimit.NewFlow(opts.LimitBA, r.pump)
	}
	r.pump()
	return r
}

// Loop returns the loop that owns the relay.
func (r *Relay) Loop() *reactor.Loop { return r.loop }

// BytesAB returns the bytes delivered from a to b so far.
func (r *Relay) BytesAB() uint64 { return r.ab.bytes }

// BytesBA returns the bytes delivered from b to a so far.
func (r *Relay) BytesBA() uint64 { return r.ba.bytes }

// Abort resets both sockets at once.
func (r *Relay) Abort() { r.finish(ErrAborted) }

// HandleEvent records readiness and moves what can be moved.
func (e *end) HandleEvent(ev uint32) {
	if ev&(sys.EventIn|sys.EventRdHup|sys.EventHup|sys.EventErr) != 0 {
		e.readable = true
	}
	if ev&(sys.EventRdHup|sys.EventHup|sys.EventErr) != 0 {
		e.hangup = true
	}
	if ev&(sys.EventOut|sys.EventHup|sys.EventErr) != 0 {
		e.writable = true
	}
	e.r.pump()
}

// Run continues a turn that was cut short to be fair to other relays.
func (r *Relay) Run() {
	r.queued = false
	r.pump()
}

func (r *Relay) pump() {
	if r.closed {
		return
	}
	r.last = r.loop.Now()
	more1, err := r.move(&r.ab, &r.a, &r.b)
	if err != nil {
		r.finish(err)
		return
	}
	more2, err := r.move(&r.ba, &r.b, &r.a)
	if err != nil {
		r.finish(err)
		return
	}
	if r.ab.shut && r.ba.shut {
		r.finish(nil)
		return
	}
	if (more1 || more2) && !r.queued {
		r.queued = true
		r.loop.Defer(r)
	}
}

// move advances one direction as far as readiness allows. It reports
// whether it stopped only to yield, with work left.
func (r *Relay) move(f *flow, src, dst *end) (bool, error) {
	for round := 0; ; round++ {
		for f.pending() {
			if !dst.writable {
				return false, nil
			}
			if err := r.flush(f, dst.fd); err != nil {
				if sys.IsAgain(err) {
					dst.writable = false
					return false, nil
				}
				return false, err
			}
		}
		if f.eof {
			if !f.shut {
				f.shut = true
				// ENOTCONN here means the destination is already gone;
				// its own events will tell.
				_ = sys.ShutdownWrite(dst.fd)
			}
			return false, nil
		}
		if !src.readable {
			return false, nil
		}
		if round == roundsPerTurn {
			return true, nil
		}
		grant := 0 // no limit
		if f.lim != nil {
			if grant = f.lim.Grant(r.loop, r.pool.pipeSize); grant == 0 {
				return false, nil // a timer resumes the relay
			}
		}
		n, drained, err := r.fill(f, src, grant)
		if f.lim != nil {
			f.lim.Used(n, n == 0 || drained || err != nil)
		}
		switch {
		case err == nil && n == 0:
			f.eof = true
		case err == nil && f.bulk && !f.tuned && r.pool.sockBuf > 0:
			// Turned bulk: give its sockets the tuner's buffer size.
			f.tuned = true
			sys.SetRecvBuffer(src.fd, r.pool.sockBuf)
			sys.SetSendBuffer(dst.fd, r.pool.sockBuf)
			if drained {
				src.readable = false
			}
		case drained:
			// A short read from a stream socket emptied its queue: the next
			// bytes bring a new edge, so skip the read that would only
			// answer EAGAIN.
			src.readable = false
		case sys.IsAgain(err):
			src.readable = false
			return false, nil
		case err != nil:
			return false, err
		}
	}
}

func (f *flow) pending() bool { return f.inPipe > 0 || f.off < f.n }

// fill reads one chunk from src into a borrowed pipe when the flow is bulk,
// or else (or when no pipe can be had) into a buffer. It is called only when
// the flow holds nothing, so EAGAIN always means the socket is drained and 0
// always means end of file. drained reports a short read that emptied the
// socket (a splice can stop short for lack of pipe slots, so only reads
// tell). grant, if not 0, is the most it may read.
func (r *Relay) fill(f *flow, src *end, grant int) (n int, drained bool, err error) {
	if f.bulk && !r.copyOnly {
		if p, ok := r.pool.getPipe(); ok {
			want := r.pool.pipeSize
			if grant > 0 && grant < want {
				want = grant
			}
			n, err := sys.Splice(src.fd, p.w, want)
			if n > 0 {
				f.pipe, f.inPipe = p, n
				if n < smallSplice && n < want {
					f.bulk = false
				}
				c := &r.pool.counts
				c.SplicedChunks++
				if f.spliceEpoch != r.pool.epoch {
					f.spliceEpoch = r.pool.epoch
					c.SplicedFlows++
				}
				return n, false, nil
			}
			r.pool.putPipe(p)
			if err == nil || !sys.IsSpliceUnsupported(err) {
				return 0, false, err
			}
			r.copyOnly = true
		}
	}
	buf := r.pool.getBuf()
	rb := buf
	if grant > 0 && grant < len(rb) {
		rb = rb[:grant]
	}
	n, err = sys.Read(src.fd, rb)
	if n > 0 {
		f.buf, f.off, f.n = buf, 0, n
		f.bulk = n == len(rb)
		c := &r.pool.counts
		c.CopiedChunks++
		if f.copyEpoch != r.pool.epoch {
			f.copyEpoch = r.pool.epoch
			c.CopiedFlows++
		}
		return n, n < len(rb) && !src.hangup, nil
	}
	r.pool.putBuf(buf)
	return 0, false, err
}

// flush writes some of the flow's bytes to dst. Bytes in a buffer go before
// bytes in the pipe: the buffer only ever holds bytes taken from the pipe's
// head when the destination refused splice.
func (r *Relay) flush(f *flow, dst int) error {
	if f.off == f.n && f.inPipe > 0 && !r.copyOnly {
		n, err := sys.Splice(f.pipe.r, dst, f.inPipe)
		if n > 0 {
			f.inPipe -= n
			f.bytes += uint64(n)
			r.pool.counts.SplicedBytes += uint64(n)
			if f.inPipe == 0 {
				r.pool.putPipe(f.pipe)
			}
			return nil
		}
		if err == nil {
			return io.ErrNoProgress
		}
		if !sys.IsSpliceUnsupported(err) {
			return err
		}
		r.copyOnly = true
	}
	if f.off == f.n { // copy path with bytes still in the pipe
		if f.buf == nil {
			f.buf = r.pool.getBuf()
		}
		n, err := sys.Read(f.pipe.r, f.buf)
		if n <= 0 {
			if err == nil {
				err = io.ErrNoProgress
			}
			return err
		}
		f.off, f.n = 0, n
		if f.inPipe -= n; f.inPipe == 0 {
			r.pool.putPipe(f.pipe)
		}
	}
	n, err := sys.Write(dst, f.buf[f.off:f.n])
	f.off += n
	f.bytes += uint64(n)
	r.pool.counts.CopiedBytes += uint64(n)
	if f.off == f.n {
		r.pool.putBuf(f.buf)
		f.buf, f.off, f.n = nil, 0, 0
	}
	if n == 0 && err == nil {
		return io.ErrNoProgress
	}
	return err
}

func (r *Relay) checkIdle() {
	deadline := r.last + r.opts.IdleTimeout
	if r.loop.Now() >= deadline {
		r.finish(ErrIdleTimeout)
		return
	}
	r.loop.ScheduleAt(&r.timer, deadline)
}

// finish closes both sockets and returns what the relay borrowed. A clean
// end or an idle timeout closes normally; an error resets both sides, so a
// reset on one is seen on the other.
func (r *Relay) finish(reason error) {
	if r.closed {
		return
	}
	r.closed = true
	r.loop.Cancel(&r.timer)
	for _, f := range []*flow{&r.ab, &r.ba} {
		if f.lim != nil {
			f.lim.Stop(r.loop)
		}
		if f.inPipe > 0 {
			r.pool.destroyPipe(f.pipe) // bytes of a dead connection
			f.inPipe = 0
		}
		if f.buf != nil {
			r.pool.putBuf(f.buf)
			f.buf, f.off, f.n = nil, 0, 0
		}
	}
	if reason == nil || reason == ErrIdleTimeout {
		r.loop.Close(r.a.fd)
		r.loop.Close(r.b.fd)
	} else {
		r.loop.CloseReset(r.a.fd)
		r.loop.CloseReset(r.b.fd)
	}
	if r.opts.Done != nil {
		r.opts.Done(r, reason)
	}
}
