package relay

import "github.com/sluice-proxy/sluice/pkg/sys"

// Pipe is a pooled pipe lent for splicing one stream outside a Relay,
// such as an HTTP response body whose framing its caller follows. It
// belongs to the pool's loop.
type Pipe struct {
	pool *Pool
	p    pipe
	n    int // bytes in the pipe
}

// LendPipe lends an empty pipe, or returns nil when the budget is spent
// (the caller then copies through a buffer).
func (p *Pool) LendPipe() *Pipe {
	pp, ok := p.getPipe()
	if !ok {
		return nil
	}
	return &Pipe{pool: p, p: pp}
}

// Len returns the bytes the pipe holds.
func (pp *Pipe) Len() int { return pp.n }

// Fill splices at most max bytes (and what fits) from the socket fd into
// the pipe, without blocking. It returns the bytes moved; 0 and nil mean
// end of file, and EAGAIN comes back as it is (sys.IsAgain). An error for
// which sys.IsSpliceUnsupported holds means the socket cannot splice.
func (pp *Pipe) Fill(fd, max int) (int, error) {
	want := min(max, pp.pool.pipeSize-pp.n)
	if want <= 0 {
		return 0, nil
	}
	n, err := sys.Splice(fd, pp.p.w, want)
	if n > 0 {
		pp.n += n
		pp.pool.counts.SplicedChunks++
	}
	return n, err
}

// Drain splices what the pipe holds into the socket fd, without blocking,
// and returns the bytes moved.
func (pp *Pipe) Drain(fd int) (int, error) {
	if pp.n == 0 {
		return 0, nil
	}
	n, err := sys.Splice(pp.p.r, fd, pp.n)
	if n > 0 {
		pp.n -= n
		pp.pool.counts.SplicedBytes += uint64(n)
	}
	return n, err
}

// Release gives the pipe back: an empty one to the pool, one that still
// holds bytes (of a stream that ended early) is closed, so they never
// reach another connection. The Pipe must not be used again.
func (pp *Pipe) Release() {
	if pp.n > 0 {
		pp.pool.destroyPipe(pp.p)
	} else {
		pp.pool.putPipe(pp.p)
	}
	pp.n = 0
}
