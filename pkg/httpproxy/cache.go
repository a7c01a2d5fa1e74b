package httpproxy

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-proxy/sluice/pkg/filter"
	"github.com/sluice-proxy/sluice/pkg/httpcache"
	"github.com/sluice-proxy/sluice/pkg/httpmsg"
	"github.com/sluice-proxy/sluice/pkg/sys"
)

// The cache's part of the proxy (Config.Cache; policy and stores are in
// package httpcache). A request meets the cache once its policy has
// passed (credentials, URL filter, ACL on every resolved address), so a
// denied URL is never answered from the cache:
//
//   - a fresh stored response is a hit: the exchange goes to state stCache
//     and the stored head and body are written from memory in one writev,
//     or the body is sent from its disk file with sendfile (the file is
//     opened in the pool);
//   - a stale one (or one the client asks to revalidate) goes to the
//     origin with its validators; a 304 updates the stored head and the
//     stored body is served, anything else replaces it;
//   - a miss that others are already fetching waits (stJoined) for that
//     fetch and is served from it, or fetches itself when it turns out
//     uncacheable or after the read timeout (collapsed forwarding);
//   - the body of a storable response is copied aside as it passes in
//     moveDown and stored when the exchange completes; the disk copy is
//     written in the pool.
//
// Responses the content filter reads (Config.BodyWords, text types) are
// never stored; a stored text response met while the filter is on is
// scanned (memory) or fetched again (disk) so that a blocked body is
// never served from the cache.

// cacheState is an exchange's dealings with the cache.
type cacheState struct {
	req     httpcache.Request
	reqTime time.Time
	entry   *httpcache.Entry // hit being served, or the entry being revalidated
	reval   bool             // the request carries entry's validators
	leader  bool             // this exchange is the collapsed fetch of req.URL
	unsafe  bool             // an unsafe method: invalidate the URL on success

	// Storing the response: fill is its entry, body the bytes so far.
	fill    *httpcache.Entry
	body    []byte
	chunked bool // body arrives chunk-coded: decode while copying
	dec     httpmsg.ChunkedDecoder

	// Serving a hit: what is left of a memory body, or a disk file.
	rest    []byte
	fd      int
	off     int64
	start   int64 // where the part served starts in the body (a Range hit)
	left    int64
	hit     bool // the answer is a stored response (not sluice's own error)
	opening bool // the disk file is being opened in the pool
	rewrite bool // a 304 updated a disk entry: write its new head once the file is open
}

// CacheStats returns the figures of the service's cache, if it has one.
func (s *Service) CacheStats() (httpcache.Stats, bool) {
	if s.cfg.Cache == nil {
		return httpcache.Stats{}, false
	}
	return s.cfg.Cache.Stats(), true
}

// served reports whether the exchange is answered from the cache, so its
// status (a stored 404, say) is the origin's, not an error of sluice's;
// st may be nil.
func (st *cacheState) served() bool { return st != nil && st.hit }

// storing reports whether the response body is being copied aside for
// the cache (so it must pass through user space); st may be nil.
func (st *cacheState) storing() bool { return st != nil && st.fill != nil }

// unsafeMethod are the methods whose success invalidates stored responses
// of their URL (RFC 9111 section 4.4).
func unsafeMethod(m string) bool {
	switch m {
	case "POST", "PUT", "DELETE", "PATCH":
		return true
	}
	return false
}

// cacheLookup runs once the request may go to the origin. It returns true
// when the cache took the request over (a hit, or waiting for another
// client's fetch).
func (c *conn) cacheLookup() bool {
	cache := c.s.cfg.Cache
	ex := c.ex
	if cache == nil || ex.tunnel {
		return false
	}
	m := ex.req.Method
	if unsafeMethod(m) {
		st := c.newCacheState()
		st.req, st.unsafe = httpcache.Request{Method: m, URL: string(c.appendKey(c.cHeadSpace()))}, true
		ex.cache = st
		return false
	}
	if m != "GET" && m != "HEAD" || ex.req.Framing != httpmsg.NoBody {
		// A GET with a body is passed as it is: answering it from the
		// cache would leave its body to be read as the next request.
		return false
	}
	_, ranged := ex.req.Header.Get("Range")
	ranged = ranged && m == "GET"
	now := time.Now()
	st := c.newCacheState()
	st.req, st.reqTime = httpcache.Request{Method: m, Header: ex.req.Header}, now
	ex.cache = st
	// The key is built in the borrowed buffer the response head goes
	// in later: a hit needs no string of it.
	key := c.appendKey(c.cHeadSpace())
	e := cache.LookupKey(key, ex.req.Header)
	if e != nil && !c.unfiltered(e) {
		e = nil // fetched again (and filtered), never served or revalidated
	}
	if e != nil && e.Decide(ex.req.Header, now) == httpcache.Serve && c.serveEntry(e, now) {
		return true
	}
	if ranged {
		// A part of something not stored (or stale): the origin answers,
		// and a 206 is not stored.
		c.cacheDone()
		return false
	}
	// Not a hit: the key again (serveEntry may have used the buffer), as
	// a string for storing, collapsing and logs.
	st.req.URL = string(c.appendKey(c.cHeadSpace()))
	if httpcache.ParseCacheControl(ex.req.Header).OnlyIfCached {
		// RFC 9111 section 5.2.1.7: nothing usable is stored.
		c.fail(504, "not in the cache (only-if-cached)")
		return true
	}
	if e != nil && e.Decide(ex.req.Header, now) == httpcache.Revalidate && m == "GET" && !httpcache.Conditional(ex.req.Header) {
		st.entry, st.reval = e, true
		return false
	}
	// A download held to its user's rate_down neither leads nor joins:
	// clients waiting on it would get that user's rate.
	if m == "GET" && collapsible(ex.req.Header) && (ex.rate == nil || ex.rate.down == nil) {
		ex := c.ex
		if !cache.Join(st.req.URL, func() {
			c.loop.Post(func() {
				if c.ex == ex && c.state == stJoined {
					c.cacheWoken()
				}
			})
		}) {
			c.state = stJoined
			c.last = c.loop.Now()
			c.loop.Schedule(&c.timer, c.s.cfg.ReadTimeout)
			return true
		}
		st.leader = true
	}
	return false
}

// appendKey appends the cache key of the current request to b: its URL as
// target.url spells it. On a redirected (transparent) connection the
// origin is the connection's destination, not what Host names, so the
// destination is part of the key: a client cannot store an answer from
// one address under another site's name.
func (c *conn) appendKey(b []byte) []byte {
	t := &c.ex.t
	b = append(b, "http://"...)
	if strings.IndexByte(t.host, ':') >= 0 {
		b = append(b, '[')
		b = append(b, t.host...)
		b = append(b, ']')
	} else {
		b = append(b, t.host...)
	}
	if t.port != 80 {
		b = append(b, ':')
		b = strconv.AppendInt(b, int64(t.port), 10)
	}
	b = append(b, t.path...)
	if c.orig.IsValid() && strings.HasPrefix(c.ex.req.Target, "/") {
		b = append(b, " @"...)
		b = c.orig.AppendTo(b)
	}
	return b
}

// collapsible reports whether a miss may wait for another client's fetch
// of the same URL: a plain GET, without credentials, conditionals or
// directives of its own.
func collapsible(h httpmsg.Header) bool {
	for _, name := range [...]string{"Authorization", "Cache-Control", "Pragma"} {
		if _, ok := h.Get(name); ok {
			return false
		}
	}
	return !httpcache.Conditional(h)
}

// cacheWoken continues a request that waited for another fetch (or gave
// up waiting): served from the cache if that fetch stored the response,
// else sent to the origin itself.
func (c *conn) cacheWoken() {
	ex := c.ex
	st := ex.cache
	c.loop.Cancel(&c.timer)
	c.state = stPolicy
	now := time.Now()
	if e := c.s.cfg.Cache.Lookup(st.req); e != nil && e.Decide(ex.req.Header, now) == httpcache.Serve {
		if c.serveEntry(e, now) {
			return
		}
	}
	c.cacheFetch()
}

// cacheFetch sends the request to the origin after all.
func (c *conn) cacheFetch() {
	c.state = stDial
	c.last = c.loop.Now()
	c.dialNext()
}

// serveEntry answers the request from e, or returns false when e cannot
// be used (a disk entry while the content filter is on, the pool full).
func (c *conn) serveEntry(e *httpcache.Entry, now time.Time) bool {
	ex := c.ex
	st := ex.cache
	if !c.unfiltered(e) {
		return false
	}
	if words := c.s.cfg.BodyWords; words != nil && filter.Scannable(e.ContentType, e.ContentEncode) {
		if w, found := words.NewScanner().Scan(e.Body); found {
			c.s.warn.Log(slog.LevelInfo, "response blocked", "client", c.client.String(), "target", ex.t.url(), "word", w)
			c.fail(403, "blocked by the content filter")
			return true
		}
	}
	notModified := e.NotModified(ex.req.Header)
	part, outcome := httpcache.ByteRange{Length: e.BodyLen}, httpcache.WholeBody
	if !notModified && ex.req.Method == "GET" {
		part, outcome = e.RangeFor(ex.req.Header)
	}
	if outcome == httpcache.Unsatisfiable {
		c.s.stats[c.loop.ID()].CacheHits++
		st.hit = true
		b := append([]byte(nil), "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */"...)
		b = strconv.AppendInt(b, e.BodyLen, 10)
		c.respond(416, append(b, "\r\nContent-Length: 0\r\nVia: "+viaValue+"\r\nConnection: close\r\n\r\n"...))
		return true
	}
	st.entry = e
	st.start = part.Start
	ex.keepClient = !ex.req.Close && ex.req.Version == 1 && !c.cEOF
	ex.cHead = c.hitHead(c.cHeadSpace(), e, now, notModified, part, outcome == httpcache.PartOfBody)
	ex.headOut = true
	ex.status = e.Status
	st.left = 0
	switch {
	case notModified:
		ex.status = 304
	case ex.req.Method == "GET":
		if outcome == httpcache.PartOfBody {
			ex.status = 206
		}
		st.left = part.Length
		if e.Body != nil {
			st.rest = e.Body[part.Start : part.Start+part.Length]
		}
	}
	c.state = stCache
	c.last = c.loop.Now()
	c.loop.Schedule(&c.timer, c.s.cfg.ReadTimeout)
	if st.left > 0 && e.Body == nil {
		st.opening = true
		cache := c.s.cfg.Cache
		rewrite := st.rewrite
		st.rewrite = false
		err := c.s.reactor.Pool().Submit(c.loop, func() func() {
			fd, err := cache.OpenBody(e)
			if rewrite {
				// After the open: this hit reads the file it checked.
				if werr := cache.RewriteDisk(e); werr != nil {
					c.s.warn.Log(slog.LevelWarn, "cache write failed", "err", werr)
				}
			}
			if err == nil {
				// This hit still goes by sendfile; later ones from memory.
				if perr := cache.Promote(e, fd); perr != nil {
					c.s.warn.Log(slog.LevelWarn, "cache file unreadable", "err", perr)
				}
			}
			return func() { c.opened(ex, fd, err) }
		})
		if err != nil {
			if rewrite {
				cache.CancelWrite()
			}
			c.state = stPolicy
			c.loop.Cancel(&c.timer)
			ex.cHead, ex.headOut, ex.status, st.entry = nil, false, 0, nil
			return false
		}
		st.hit = true // counted once the file is open
		return true
	}
	c.s.stats[c.loop.ID()].CacheHits++
	st.hit = true
	c.runHit()
	return true
}

// unfiltered reports whether e can be served under the content filter:
// with body words on, a stored text response is scanned before it goes
// out, which needs its body in memory; a disk copy is fetched again.
func (c *conn) unfiltered(e *httpcache.Entry) bool {
	return e.Body != nil || c.s.cfg.BodyWords == nil || !filter.Scannable(e.ContentType, e.ContentEncode)
}

// opened continues a disk hit once its file is open (or failed to open:
// then the request goes to the origin).
func (c *conn) opened(ex *exchange, fd int, err error) {
	if c.ex != ex || c.state != stCache {
		if fd >= 0 {
			sys.Close(fd)
		}
		return
	}
	st := ex.cache
	st.opening = false
	if err != nil {
		c.s.warn.Log(slog.LevelWarn, "cache file unusable", "target", ex.t.url(), "err", err)
		ex.cHead, ex.headOut, ex.status, st.entry, st.hit = nil, false, 0, nil, false
		if st.req.URL == "" { // a hit until now: the key was never a string
			st.req.URL = string(c.appendKey(c.cHeadSpace()))
		}
		c.cacheFetch()
		return
	}
	st.fd, st.off = fd, st.entry.BodyOff+st.start
	c.s.stats[c.loop.ID()].CacheHits++
	c.runHit()
}

// hitHead appends the head of a response served from e to b: a 304, the
// whole response, or (partial) a 206 with part of its body.
func (c *conn) hitHead(b []byte, e *httpcache.Entry, now time.Time, notModified bool, part httpcache.ByteRange, partial bool) []byte {
	b = append(b, "HTTP/1.1 "...)
	if notModified {
		b = append(b, "304 Not Modified\r\n"...)
		for _, f := range e.Header {
			if keptIn304(f.Name) {
				b = appendField(b, f.Name, f.Value)
			}
		}
	} else {
		if partial {
			b = append(b, "206 Partial Content\r\n"...)
		} else {
			b = strconv.AppendInt(b, int64(e.Status), 10)
			b = append(b, ' ')
			b = append(b, e.Reason...)
			b = append(b, "\r\n"...)
		}
		b = append(b, e.Fields...)
		if partial {
			b = append(b, "Content-Range: bytes "...)
			b = strconv.AppendInt(b, part.Start, 10)
			b = append(b, '-')
			b = strconv.AppendInt(b, part.Start+part.Length-1, 10)
			b = append(b, '/')
			b = strconv.AppendInt(b, e.BodyLen, 10)
			b = append(b, "\r\n"...)
		}
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, part.Length, 10)
		b = append(b, "\r\n"...)
	}
	b = append(b, "Age: "...)
	b = strconv.AppendInt(b, int64(max(0, e.Age(now)/time.Second)), 10)
	b = append(b, "\r\nVia: "+viaValue+"\r\n"...)
	if !c.ex.keepClient {
		b = append(b, "Connection: close\r\n"...)
	}
	return append(b, "\r\n"...)
}

// keptIn304 are the fields a 304 carries (RFC 9110 section 15.4.5).
func keptIn304(name string) bool {
	for _, n := range [...]string{"Cache-Control", "Content-Location", "Date", "ETag", "Expires", "Vary", "Last-Modified"} {
		if httpmsg.EqualFold(name, n) {
			return true
		}
	}
	return false
}

// runHit writes a hit's head and body as the client takes them.
func (c *conn) runHit() {
	ex := c.ex
	st := ex.cache
	if st.opening {
		return
	}
	for len(ex.cHead) > 0 || st.left > 0 {
		if !c.cWritable {
			return
		}
		var n int
		var err error
		grant := st.left // body bytes that may go now (rate.go)
		if ex.rate != nil && !c.grantHit(&grant) {
			return // the rate timer pumps again
		}
		switch {
		case st.fd < 0:
			n, err = sys.Writev(c.fd, ex.cHead, st.rest[:grant])
		case len(ex.cHead) > 0:
			n, err = sys.Write(c.fd, ex.cHead)
		default:
			n, err = sys.Sendfile(c.fd, st.fd, &st.off, int(min(grant, 1<<20)))
			if err == nil && n == 0 {
				c.s.warn.Log(slog.LevelWarn, "cache file shorter than its index says", "target", ex.t.url())
				c.logAccess()
				c.close(true)
				return
			}
		}
		if ex.rate != nil {
			used(ex.rate.down, max(n-len(ex.cHead), 0), int(grant), err)
		}
		if sys.IsAgain(err) {
			c.cWritable = false
			return
		}
		if err != nil {
			c.logAccess()
			c.close(true)
			return
		}
		c.last = c.loop.Now()
		h := min(n, len(ex.cHead))
		ex.cHead = ex.cHead[h:]
		n -= h
		if st.fd < 0 {
			st.rest = st.rest[n:]
		}
		st.left -= int64(n)
		ex.bytesDn += uint64(n)
	}
	ex.respDone, ex.reqDone = true, true
	c.finishExchange()
}

// cacheRequestFields appends the validators of a revalidation to the
// request head sent to the origin.
func (c *conn) cacheRequestFields(b []byte) []byte {
	if st := c.ex.cache; st != nil && st.reval {
		return st.entry.Validators(b)
	}
	return b
}

// cacheResponse sees a final response head before it is rewritten for the
// client. It returns true when the cache took the exchange over (a 304
// that revalidated the stored response, which is served instead).
func (c *conn) cacheResponse(resp *httpmsg.Response) bool {
	ex := c.ex
	st := ex.cache
	if st == nil {
		return false
	}
	cache := c.s.cfg.Cache
	if st.unsafe {
		if resp.Status < 400 {
			c.cacheInvalidate()
		}
		return false
	}
	now := time.Now()
	if st.reval && resp.Status == 304 {
		c.s.stats[c.loop.ID()].CacheRevalidated++
		e := st.entry.Updated(resp.Header, st.reqTime, now)
		if e.Body != nil {
			cache.Put(e)
		}
		// The 304 has no body: the origin connection is done.
		if !resp.Close && ex.or1 == ex.or0 {
			c.s.origins[c.loop.ID()].put(ex.key, ex.up)
			ex.up = -1
		}
		c.abortUp()
		st.reval = false
		st.rewrite = e.Body == nil && cache.ReserveWrite()
		c.state = stCache
		c.loop.Post(func() {
			if c.ex == ex && c.state == stCache {
				if !c.serveEntry(e, time.Now()) {
					c.fail(503, "server busy")
				}
			}
		})
		return true
	}
	switch resp.Status {
	case 500, 502, 503, 504:
		if c.staleOnError(fmt.Sprintf("status %d", resp.Status)) {
			return true
		}
	}
	revalidated := st.reval
	st.reval = false
	c.s.stats[c.loop.ID()].CacheMisses++
	var e *httpcache.Entry
	ct, _ := resp.Header.Get("Content-Type")
	ce, _ := resp.Header.Get("Content-Encoding")
	if c.s.cfg.BodyWords == nil || !filter.Scannable(ct, ce) {
		e, _ = httpcache.Analyze(st.req, resp.Status, resp.Reason, resp.Header, st.reqTime, now)
	}
	if e == nil || resp.Framing == httpmsg.Length && resp.ContentLength > cache.MaxObject() {
		if revalidated && resp.Status < 500 {
			// A new answer that is not stored: the old one must not be
			// served again either.
			c.cacheInvalidate()
		}
		c.cacheRelease()
		return false
	}
	st.fill = e
	st.chunked = resp.Framing == httpmsg.Chunked
	if resp.Framing == httpmsg.Length {
		st.body = make([]byte, 0, resp.ContentLength)
	}
	return false
}

// staleOnError answers a revalidation whose origin failed (no
// connection, no answer in time, a broken answer or a 5xx) with the stale
// stored response when stale-if-error allows it (RFC 5861), and reports
// whether it did. The answer is posted to the loop, since the failure may
// be seen deep inside the exchange's pump.
func (c *conn) staleOnError(why string) bool {
	ex := c.ex
	st := ex.cache
	if st == nil || !st.reval || ex.headOut || !st.entry.StaleOnError(ex.req.Header, time.Now()) {
		return false
	}
	e := st.entry
	c.s.warn.Log(slog.LevelInfo, "origin failed: stale answer served", "target", ex.t.url(), "why", why)
	c.abortUp()
	st.reval = false
	c.state = stCache
	c.last = c.loop.Now() // the read timeout starts again for the answer
	c.loop.Post(func() {
		if c.ex == ex && c.state == stCache {
			if !c.serveEntry(e, time.Now()) {
				c.fail(503, "server busy")
			}
		}
	})
	return true
}

// cacheInvalidate drops every stored variant of the request's URL; disk
// files are removed in the pool.
func (c *conn) cacheInvalidate() {
	if files := c.s.cfg.Cache.Invalidate(c.ex.cache.req.URL); len(files) > 0 {
		_ = c.s.reactor.Pool().Submit(c.loop, func() func() { httpcache.RemoveFiles(files); return nil })
	}
}

// cacheTee copies response body bytes aside for storing; p is what goes
// to the client (chunk-coded unless the client gets it decoded).
func (c *conn) cacheTee(p []byte) {
	ex := c.ex
	st := ex.cache
	if st.fill == nil {
		return
	}
	if st.chunked && !ex.respBody.dechunk {
		for len(p) > 0 && !st.dec.Done() {
			n, off, dn, err := st.dec.Decode(p)
			if err != nil {
				st.fill, st.body = nil, nil
				c.cacheRelease()
				return
			}
			st.body = append(st.body, p[off:off+dn]...)
			p = p[n:]
		}
	} else {
		st.body = append(st.body, p...)
	}
	if int64(len(st.body)) > c.s.cfg.Cache.MaxObject() {
		st.fill, st.body = nil, nil
		c.cacheRelease()
	}
}

// cacheFinish stores a completely received response and wakes the
// requests that waited for it.
func (c *conn) cacheFinish() {
	ex := c.ex
	st := ex.cache
	if st == nil || st.fill == nil {
		return
	}
	e := st.fill
	st.fill = nil
	if ex.respDone {
		e.Body = st.body
		if e.Body == nil {
			e.Body = []byte{} // empty, but a memory entry (Body nil means on disk)
		}
		e.BodyLen = int64(len(st.body))
		cache := c.s.cfg.Cache
		cache.Put(e)
		if cache.ReserveWrite() {
			err := c.s.reactor.Pool().Submit(c.loop, func() func() {
				if err := cache.WriteDisk(e); err != nil {
					c.s.warn.Log(slog.LevelWarn, "cache write failed", "err", err)
				}
				return nil
			})
			if err != nil {
				cache.CancelWrite()
			}
		}
	}
	st.body = nil
	c.cacheRelease()
}

// cacheRelease ends this exchange's collapsed fetch, if it leads one: the
// waiting requests look again (and fetch themselves if nothing was
// stored).
func (c *conn) cacheRelease() {
	if st := c.ex.cache; st != nil && st.leader {
		st.leader = false
		c.s.cfg.Cache.Release(st.req.URL)
	}
}

// newCacheState returns a cleared cacheState, recycled on this loop when
// one is free (a hit allocates none).
func (c *conn) newCacheState() *cacheState {
	p := c.bufs()
	if n := len(p.states); n > 0 {
		st := p.states[n-1]
		p.states[n-1] = nil
		p.states = p.states[:n-1]
		return st
	}
	return &cacheState{fd: -1}
}

// cacheDone ends the cache part of an exchange that is over (finished,
// failed or closed) and recycles it. Nothing may use ex.cache afterwards;
// funcs posted for the exchange check c.ex and c.state before they do.
func (c *conn) cacheDone() {
	ex := c.ex
	if ex == nil || ex.cache == nil {
		return
	}
	c.cacheAbandon()
	st := ex.cache
	ex.cache = nil
	*st = cacheState{fd: -1}
	if p := c.bufs(); len(p.states) < maxFreeBufs {
		p.states = append(p.states, st)
	}
}

// cacheAbandon gives back what the cache part of an exchange holds: the
// collapsed fetch it leads and a disk file it was sending.
func (c *conn) cacheAbandon() {
	ex := c.ex
	if ex == nil || ex.cache == nil {
		return
	}
	st := ex.cache
	st.fill, st.body = nil, nil
	c.cacheRelease()
	if st.rewrite {
		st.rewrite = false
		c.s.cfg.Cache.CancelWrite()
	}
	if st.fd >= 0 {
		sys.Close(st.fd)
		st.fd = -1
	}
}
