package httpproxy

import (
	"errors"

	"github.com/sluice-proxy/sluice/pkg/httpmsg"
	"github.com/sluice-proxy/sluice/pkg/relay"
	"github.com/sluice-proxy/sluice/pkg/sys"
)

// spliceMin is the smallest rest of a body that is spliced: below it a
// read and a write through the buffer cost less than setting up two
// splices.
const spliceMin = 64 << 10

// bodySplice is one direction of an exchange whose body bypasses user
// space: body bytes go from one socket to the other through a pooled pipe
// (zero copy). That is the rest of a Content-Length body, the data of a
// chunk of at least spliceMin bytes (the chunk framing around it is read
// and checked through the buffer, so the pipe is given back between
// chunks), or a body that ends when the origin closes.
type bodySplice struct {
	pipe *relay.Pipe
	off  bool // a socket refused splice, or no pipe could be had: copy
}

// spliceEnds are the sockets of one direction and their readiness.
type spliceEnds struct {
	src, dst           int
	srcReady, dstReady *bool
}

// start reports whether the next bytes of body b are spliced, lending the
// pipe: at least spliceMin bytes that pass unchanged are to come (see
// bodySplice), the caller holds no byte of the body and nothing needs to
// see them (checked by the caller).
func (bs *bodySplice) start(pool *relay.Pool, b *body) bool {
	if bs.pipe != nil {
		return true
	}
	if bs.off || b.done || b.scan != nil || b.spliceable() < spliceMin {
		return false
	}
	if bs.pipe = pool.LendPipe(); bs.pipe == nil {
		bs.off = true
		return false
	}
	return true
}

// spliceable returns how many of the body's next bytes pass unchanged:
// the rest of a Content-Length body, the rest of the current chunk's data
// (dechunking only drops the framing around it), or for a body that ends
// at close as much as a splice takes.
func (b *body) spliceable() int64 {
	switch b.framing {
	case httpmsg.Length:
		return b.left
	case httpmsg.Chunked:
		return int64(min(b.dec.DataLeft(), 1<<62))
	case httpmsg.UntilClose:
		return 1 << 30
	}
	return 0
}

// passed counts n spliced bytes of the body.
func (b *body) passed(n int) {
	switch b.framing {
	case httpmsg.Length:
		b.left -= int64(n)
	case httpmsg.Chunked:
		b.dec.SkipData(uint64(n))
	}
}

// move splices until the spliceable part of the body has passed (then
// the pipe is given back: a Content-Length body is done, a chunked one
// goes on through the buffer), the origin closes a body that ends at
// close (done), or a socket would block; it reports progress. Errors of the source and the destination
// come apart so the caller can tell who failed. A socket that cannot
// splice turns the direction back to copying (bs.off, no pipe, no error).
func (bs *bodySplice) move(e spliceEnds, b *body, count *uint64) (progress bool, srcErr, dstErr error) {
	for {
		if bs.pipe.Len() > 0 {
			if !*e.dstReady {
				return progress, nil, nil
			}
			n, err := bs.pipe.Drain(e.dst)
			if sys.IsAgain(err) {
				*e.dstReady = false
				return progress, nil, nil
			}
			if err != nil {
				return progress, nil, err
			}
			*count += uint64(n)
			progress = true
			continue
		}
		left := b.spliceable()
		if left == 0 {
			bs.release()
			b.done = b.framing == httpmsg.Length
			return true, nil, nil
		}
		if !*e.srcReady {
			return progress, nil, nil
		}
		n, err := bs.pipe.Fill(e.src, int(min(left, 1<<30)))
		switch {
		case sys.IsAgain(err):
			*e.srcReady = false
			return progress, nil, nil
		case err != nil && sys.IsSpliceUnsupported(err):
			bs.release()
			bs.off = true
			return progress, nil, nil
		case err != nil:
			return progress, err, nil
		case n == 0 && b.framing == httpmsg.UntilClose:
			bs.release()
			b.done = true
			return true, nil, nil
		case n == 0:
			return progress, errors.New("closed in the middle of the body"), nil
		}
		b.passed(n)
		progress = true
	}
}

// release gives the pipe back, if any (closing it when it still holds
// bytes of an abandoned body).
func (bs *bodySplice) release() {
	if bs.pipe != nil {
		bs.pipe.Release()
		bs.pipe = nil
	}
}

// spliceDown runs the response body's splice when it applies (nothing
// buffered from the origin, no content filter, cache copy or rate limit:
// a limited exchange reads what its bucket grants through the buffer);
// handled false means the body is copied.
func (c *conn) spliceDown() (handled, progress bool, err error) {
	ex := c.ex
	if ex.spDown.pipe == nil && (ex.resp == nil || ex.cache.storing() || ex.rate != nil || ex.or1 != ex.or0 || ex.ow1 != ex.ow0) {
		return false, false, nil
	}
	if !ex.spDown.start(c.s.pools[c.loop.ID()], &ex.respBody) {
		return false, false, nil
	}
	if ex.out != nil { // not needed while the body is spliced
		c.bufs().put(ex.out)
		ex.out = nil
		ex.ow0, ex.ow1, ex.or0, ex.or1 = 0, 0, 0, 0
	}
	progress, srcErr, dstErr := ex.spDown.move(spliceEnds{src: ex.up, dst: c.fd, srcReady: &ex.upR, dstReady: &c.cWritable}, &ex.respBody, &ex.bytesDn)
	switch {
	case srcErr != nil:
		return true, progress, upstreamError{srcErr}
	case dstErr != nil:
		return true, progress, dstErr
	}
	ex.respDone = ex.respBody.done
	return ex.spDown.pipe != nil || ex.respDone, progress, nil
}

// spliceUp is spliceDown for the request body (an upload): client to
// origin, when nothing of it is buffered.
func (c *conn) spliceUp() (handled, progress bool, err error) {
	ex := c.ex
	if ex.spUp.pipe == nil && (ex.rate != nil || c.r1 != c.r0 || c.w1 != c.w0) {
		return false, false, nil
	}
	if !ex.spUp.start(c.s.pools[c.loop.ID()], &ex.reqBody) {
		return false, false, nil
	}
	progress, srcErr, dstErr := ex.spUp.move(spliceEnds{src: c.fd, dst: ex.up, srcReady: &c.cReadable, dstReady: &ex.upW}, &ex.reqBody, &ex.bytesUp)
	switch {
	case srcErr != nil:
		c.cEOF = true
		return true, progress, errors.New("client closed during the request body")
	case dstErr != nil:
		return true, progress, upstreamError{dstErr}
	}
	ex.reqDone = ex.reqBody.done
	return ex.spUp.pipe != nil || ex.reqDone, progress, nil
}
