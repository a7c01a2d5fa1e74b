package httpcache

import (
	"strings"
	"time"

	"github.com/sluice-proxy/sluice/pkg/httpmsg"
)

// storableStatus are the final statuses this cache stores (issue #8): the
// common heuristically cacheable ones a forward proxy meets.
func storableStatus(s int) bool {
	switch s {
	case 200, 203, 301, 404, 410:
		return true
	}
	return false
}

// heuristicStatus are the statuses that may get heuristic freshness (RFC
// 9110 section 15.1: "heuristically cacheable").
func heuristicStatus(s int) bool {
	switch s {
	case 200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501:
		return true
	}
	return false
}

// MaxHeuristic caps heuristic freshness (10% of the time since
// Last-Modified): past a day RFC 9111 section 4.2.2 asks for a warning, so
// the cache simply stops there.
const MaxHeuristic = 24 * time.Hour

// notStored are the fields never kept with a stored response: the
// hop-by-hop ones (RFC 9111 section 3.1), the framing (the cache sends its
// own Content-Length) and Age (computed on every hit).
var notStored = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "TE", "Trailer", "Upgrade",
	"Proxy-Authenticate", "Proxy-Authentication-Info", "Proxy-Authorization",
	"Transfer-Encoding", "Content-Length", "Age",
}

// notUpdated are fields a 304 does not replace in the stored head (RFC
// 9111 section 3.2), besides notStored.
var notUpdated = []string{"Content-Encoding", "Content-Type", "Content-Range", "ETag"}

func among(name string, list []string) bool {
	for _, n := range list {
		if httpmsg.EqualFold(name, n) {
			return true
		}
	}
	return false
}

// Entry is one stored response (one variant of a URL). Everything but the
// store's bookkeeping is immutable once the entry is in a Cache, so a loop
// may keep using an entry (and its Body) after the cache dropped it.
type Entry struct {
	URL    string
	Status int
	Reason string
	// Fields are the stored header fields, each "Name: value\r\n".
	Fields string
	// RequestTime and ResponseTime are when the request that fetched (or
	// last revalidated) the response was sent and its answer came.
	RequestTime, ResponseTime time.Time
	// VaryNames are the lower-cased field names the response varies on;
	// VaryValues the request's values for them ("\x00" for absent).
	VaryNames, VaryValues []string
	// AgeValue is the Age field the response came with, in seconds.
	AgeValue int64
	// Body is the whole body of a memory entry; nil for a disk entry.
	Body []byte
	// BodyLen is the body's length.
	BodyLen int64
	// File and BodyOff locate a disk entry's body.
	File    string
	BodyOff int64

	// Derived from Fields by derive.
	Header                     httpmsg.Header
	ETag, LastModified         string
	ContentType, ContentEncode string
	cc                         Directives
	date                       time.Time
	lifetime                   time.Duration
	authOK                     bool

	// Store bookkeeping, under Cache.mu.
	prev, next *Entry
	list       *lru
	size       int64
}

// Request is what the cache looks at in a client request.
type Request struct {
	Method string
	URL    string // absolute, as the key
	Header httpmsg.Header
}

// Analyze decides whether resp (status, reason and header) to req may be
// stored by a shared cache, and returns its entry (without a body) or the
// reason it may not be stored.
func Analyze(req Request, status int, reason string, h httpmsg.Header, reqTime, respTime time.Time) (*Entry, string) {
	if req.Method != "GET" {
		return nil, "method " + req.Method
	}
	if !storableStatus(status) {
		return nil, "status not stored"
	}
	rcc := ParseCacheControl(req.Header)
	if rcc.NoStore {
		return nil, "request no-store"
	}
	cc := ParseCacheControl(h)
	switch {
	case cc.NoStore:
		return nil, "no-store"
	case cc.Private:
		return nil, "private"
	}
	if _, ok := req.Header.Get("Authorization"); ok && !cc.Public && !cc.MustRevalidate && cc.SMaxAge < 0 {
		return nil, "request with Authorization"
	}
	if _, ok := h.Get("Set-Cookie"); ok {
		return nil, "Set-Cookie"
	}
	if _, ok := h.Get("Content-Range"); ok {
		return nil, "Content-Range"
	}
	var names []string
	for _, v := range h.Values("Vary") {
		for _, n := range strings.Split(v, ",") {
			n = strings.ToLower(strings.TrimSpace(n))
			switch n {
			case "":
			case "*":
				return nil, "Vary: *"
			default:
				names = append(names, n)
			}
		}
	}
	e := &Entry{URL: req.URL, Status: status, Reason: reason, RequestTime: reqTime, ResponseTime: respTime}
	e.Fields = storedFields(h)
	if v, ok := h.Get("Age"); ok {
		e.AgeValue = parseDelta(v)
	}
	e.VaryNames = names
	e.VaryValues = VaryValues(names, req.Header)
	e.derive()
	_, hasExpires := h.Get("Expires")
	explicit := cc.MaxAge >= 0 || cc.SMaxAge >= 0 || hasExpires || cc.Public
	if !explicit && !e.heuristic() && !cc.NoCache {
		return nil, "no freshness information"
	}
	if e.lifetime <= 0 && e.ETag == "" && e.LastModified == "" {
		return nil, "stale at once and no validator"
	}
	return e, ""
}

// storedFields serialises the fields of h that are stored.
func storedFields(h httpmsg.Header) string {
	extra := h.ConnectionTokens()
	var b strings.Builder
	for _, f := range h {
		if among(f.Name, notStored) || among(f.Name, extra) {
			continue
		}
		b.WriteString(f.Name)
		b.WriteString(": ")
		b.WriteString(f.Value)
		b.WriteString("\r\n")
	}
	return b.String()
}

// parseFields splits stored Fields back into a header (substrings of s).
func parseFields(s string) httpmsg.Header {
	var h httpmsg.Header
	for len(s) > 0 {
		line, rest, _ := strings.Cut(s, "\r\n")
		s = rest
		name, value, ok := strings.Cut(line, ": ")
		if ok {
			h = append(h, httpmsg.Field{Name: name, Value: value})
		}
	}
	return h
}

// derive computes what freshness and validation need from Fields.
func (e *Entry) derive() {
	h := parseFields(e.Fields)
	e.Header = h
	e.cc = ParseCacheControl(h)
	if e.cc.SMaxAge >= 0 {
		// s-maxage carries proxy-revalidate for a shared cache (RFC 9111
		// section 5.2.2.10).
		e.cc.MustRevalidate = true
	}
	e.ETag, _ = h.Get("ETag")
	e.LastModified, _ = h.Get("Last-Modified")
	e.ContentType, _ = h.Get("Content-Type")
	e.ContentEncode, _ = h.Get("Content-Encoding")
	e.authOK = e.cc.Public || e.cc.MustRevalidate || e.cc.SMaxAge >= 0
	e.date = e.ResponseTime
	if v, ok := h.Get("Date"); ok {
		if t, err := parseHTTPDate(v); err == nil {
			e.date = t
		}
	}
	e.lifetime = e.freshnessLifetime(h)
}

// freshnessLifetime follows RFC 9111 section 4.2.1 for a shared cache.
func (e *Entry) freshnessLifetime(h httpmsg.Header) time.Duration {
	switch {
	case e.cc.SMaxAge >= 0:
		return time.Duration(e.cc.SMaxAge) * time.Second
	case e.cc.MaxAge >= 0:
		return time.Duration(e.cc.MaxAge) * time.Second
	}
	if v, ok := h.Get("Expires"); ok {
		t, err := parseHTTPDate(v)
		if err != nil {
			return 0 // an invalid Expires means already expired
		}
		return max(0, t.Sub(e.date))
	}
	if e.heuristic() {
		if lm, err := parseHTTPDate(e.LastModified); err == nil && lm.Before(e.date) {
			return min(e.date.Sub(lm)/10, MaxHeuristic)
		}
	}
	return 0
}

// heuristic reports whether the entry may get heuristic freshness: a
// Last-Modified, a heuristically cacheable status, and no query in the
// URL (a query often names a computed answer; squid's default
// refresh_pattern makes the same exception).
func (e *Entry) heuristic() bool {
	return e.LastModified != "" && heuristicStatus(e.Status) && !strings.Contains(e.URL, "?")
}

// Lifetime returns the entry's freshness lifetime.
func (e *Entry) Lifetime() time.Duration { return e.lifetime }

// Age returns the entry's current age at now (RFC 9111 section 4.2.3).
func (e *Entry) Age(now time.Time) time.Duration {
	apparent := max(0, e.ResponseTime.Sub(e.date))
	delay := e.ResponseTime.Sub(e.RequestTime)
	corrected := time.Duration(e.AgeValue)*time.Second + delay
	initial := max(apparent, corrected)
	return initial + now.Sub(e.ResponseTime)
}

// Action is what to do with a stored entry for a request.
type Action int

// Actions.
const (
	Miss       Action = iota // not usable: fetch as if nothing were stored
	Serve                    // serve it without contacting the origin
	Revalidate               // ask the origin with the entry's validators
)

// String returns the action's name for logs and test messages.
func (a Action) String() string {
	switch a {
	case Serve:
		return "serve"
	case Revalidate:
		return "revalidate"
	}
	return "miss"
}

// Decide says whether e may answer a request with header h at now (RFC
// 9111 section 4: freshness, the request's own directives, no-cache and
// must-revalidate).
func (e *Entry) Decide(h httpmsg.Header, now time.Time) Action {
	rcc := ParseCacheControl(h)
	if rcc.NoStore {
		return Miss
	}
	if _, ok := h.Get("Authorization"); ok && !e.authOK {
		return Miss
	}
	revalidate := Revalidate
	if e.ETag == "" && e.LastModified == "" {
		revalidate = Miss
	}
	_, hasCC := h.Get("Cache-Control")
	if e.cc.NoCache || rcc.NoCache || !hasCC && pragmaNoCache(h) {
		return revalidate
	}
	age := e.Age(now)
	if rcc.MaxAge >= 0 && age > time.Duration(rcc.MaxAge)*time.Second {
		return revalidate
	}
	if rcc.MinFresh >= 0 && e.lifetime-age < time.Duration(rcc.MinFresh)*time.Second {
		return revalidate
	}
	if e.lifetime > age {
		return Serve
	}
	if !e.cc.MustRevalidate && rcc.MaxStale >= 0 && age-e.lifetime <= time.Duration(rcc.MaxStale)*time.Second {
		return Serve
	}
	return revalidate
}

// StaleOnError reports whether e, stale, may answer a request with header
// h at now because the origin failed (no connection, no answer in time, a
// broken answer or a 500, 502, 503 or 504): the response's or the
// request's stale-if-error (RFC 5861) covers how stale it is, and neither
// the response (must-revalidate, proxy-revalidate, no-cache, s-maxage,
// which for a shared cache means proxy-revalidate) nor the request
// (no-store) forbids a stale answer.
func (e *Entry) StaleOnError(h httpmsg.Header, now time.Time) bool {
	if e.cc.MustRevalidate || e.cc.NoCache || e.cc.SMaxAge >= 0 {
		return false
	}
	rcc := ParseCacheControl(h)
	if rcc.NoStore {
		return false
	}
	if _, ok := h.Get("Authorization"); ok && !e.authOK {
		return false
	}
	window := max(e.cc.StaleIfError, rcc.StaleIfError)
	return window >= 0 && e.Age(now)-e.lifetime <= time.Duration(window)*time.Second
}

func pragmaNoCache(h httpmsg.Header) bool {
	for _, v := range h.Values("Pragma") {
		if strings.Contains(strings.ToLower(v), "no-cache") {
			return true
		}
	}
	return false
}

// VaryValues returns the request's values of the fields names, each the
// comma-joined values of every field of that name with whitespace around
// commas removed, or "\x00" when the request has none.
func VaryValues(names []string, h httpmsg.Header) []string {
	if len(names) == 0 {
		return nil
	}
	out := make([]string, len(names))
	for i, n := range names {
		vals := h.Values(n)
		if len(vals) == 0 {
			out[i] = "\x00"
			continue
		}
		var parts []string
		for _, v := range vals {
			for _, p := range strings.Split(v, ",") {
				if p = strings.TrimSpace(p); p != "" {
					parts = append(parts, p)
				}
			}
		}
		out[i] = strings.Join(parts, ",")
	}
	return out
}

// Matches reports whether e is the variant for a request with header h
// (RFC 9111 section 4.1).
func (e *Entry) Matches(h httpmsg.Header) bool {
	for i, name := range e.VaryNames {
		if !matchValue(h, name, e.VaryValues[i]) {
			return false
		}
	}
	return true
}

// matchValue reports whether VaryValues would give want for field name
// of h, without building it (a lookup allocates nothing).
func matchValue(h httpmsg.Header, name, want string) bool {
	pos, found, first := 0, false, true
	for _, f := range h {
		if !httpmsg.EqualFold(f.Name, name) {
			continue
		}
		found = true
		for v := f.Value; len(v) > 0; {
			var part string
			part, v, _ = strings.Cut(v, ",")
			if part = strings.TrimSpace(part); part == "" {
				continue
			}
			if !first {
				if pos >= len(want) || want[pos] != ',' {
					return false
				}
				pos++
			}
			if !strings.HasPrefix(want[pos:], part) {
				return false
			}
			pos += len(part)
			first = false
		}
	}
	if !found {
		return want == "\x00"
	}
	return pos == len(want)
}

// Conditional reports whether a request has a precondition field; such a
// request is answered from the cache only when the entry is fresh.
func Conditional(h httpmsg.Header) bool {
	for _, f := range h {
		if len(f.Name) > 3 && httpmsg.EqualFold(f.Name[:3], "if-") {
			return true
		}
	}
	return false
}

// NotModified reports whether a client's conditional GET is answered 304
// by e: If-None-Match by weak comparison, else If-Modified-Since against
// Last-Modified (RFC 9110 section 13.2.2).
func (e *Entry) NotModified(h httpmsg.Header) bool {
	if inm := h.Values("If-None-Match"); len(inm) > 0 {
		if e.ETag == "" {
			return false
		}
		for _, v := range inm {
			for _, tag := range strings.Split(v, ",") {
				tag = strings.TrimSpace(tag)
				if tag == "*" || weakEqual(tag, e.ETag) {
					return true
				}
			}
		}
		return false
	}
	ims, ok := h.Get("If-Modified-Since")
	if !ok || e.LastModified == "" {
		return false
	}
	since, err := parseHTTPDate(ims)
	if err != nil {
		return false
	}
	lm, err := parseHTTPDate(e.LastModified)
	return err == nil && !lm.After(since)
}

func weakEqual(a, b string) bool {
	return strings.TrimPrefix(a, "W/") == strings.TrimPrefix(b, "W/")
}

// Validators appends the conditional fields that revalidate e to b.
func (e *Entry) Validators(b []byte) []byte {
	if e.ETag != "" {
		b = append(b, "If-None-Match: "...)
		b = append(b, e.ETag...)
		b = append(b, "\r\n"...)
	}
	if e.LastModified != "" {
		b = append(b, "If-Modified-Since: "...)
		b = append(b, e.LastModified...)
		b = append(b, "\r\n"...)
	}
	return b
}

// Updated returns a copy of e freshened by a 304 with header h: its fields
// replace the stored ones of the same name (RFC 9111 section 3.2) and the
// entry's clock restarts at the revalidation's times.
func (e *Entry) Updated(h httpmsg.Header, reqTime, respTime time.Time) *Entry {
	n := &Entry{URL: e.URL, Status: e.Status, Reason: e.Reason, RequestTime: reqTime, ResponseTime: respTime,
		VaryNames: e.VaryNames, VaryValues: e.VaryValues, Body: e.Body, BodyLen: e.BodyLen, File: e.File, BodyOff: e.BodyOff}
	extra := h.ConnectionTokens()
	repl := func(name string) bool {
		if among(name, notStored) || among(name, notUpdated) || among(name, extra) {
			return false
		}
		_, ok := h.Get(name)
		return ok
	}
	var b strings.Builder
	for _, f := range e.Header {
		if !repl(f.Name) {
			b.WriteString(f.Name + ": " + f.Value + "\r\n")
		}
	}
	for _, f := range h {
		if repl(f.Name) {
			b.WriteString(f.Name + ": " + f.Value + "\r\n")
		}
	}
	n.Fields = b.String()
	if v, ok := h.Get("Age"); ok {
		n.AgeValue = parseDelta(v)
	}
	n.derive()
	return n
}

// httpDateLayouts are the three HTTP-date forms a recipient must accept
// (RFC 9110 section 5.6.7).
var httpDateLayouts = []string{
	"Mon, 02 Jan 2006 15:04:05 GMT",
	"Monday, 02-Jan-06 15:04:05 GMT",
	"Mon Jan _2 15:04:05 2006",
}

// parseHTTPDate parses an HTTP-date (without importing net/http, which
// would add megabytes to a router binary).
func parseHTTPDate(v string) (time.Time, error) {
	var err error
	for _, l := range httpDateLayouts {
		var t time.Time
		if t, err = time.Parse(l, v); err == nil {
			return t, nil
		}
	}
	return time.Time{}, err
}
