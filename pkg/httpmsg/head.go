package httpmsg

import (
	"bytes"
	"strconv"
)

// Request is a parsed request head.
type Request struct {
	Method  string
	Target  string // request-target as sent: absolute-form, authority-form, origin-form or "*"
	Version Version
	Header  Header
	// Framing and ContentLength say where the body ends.
	Framing       Framing
	ContentLength int64
	// Close is true when the client does not keep the connection open
	// after this exchange (HTTP/1.0 without keep-alive, or Connection: close).
	Close bool
	// Expect100 is true for "Expect: 100-continue".
	Expect100 bool
}

// Response is a parsed response head.
type Response struct {
	Version Version
	Status  int
	Reason  string
	Header  Header
	// Framing and ContentLength say where the body ends (given the method
	// of the request it answers).
	Framing       Framing
	ContentLength int64
	// Close is true when the server closes the connection after it.
	Close bool
}

// maxEmptyLines is how many empty lines before a request line are skipped
// (RFC 9112 section 2.2 allows ignoring at least one).
const maxEmptyLines = 4

// ParseRequest parses the request head at the start of b. It returns the
// request and the length of the head (through the empty line), or
// ErrIncomplete, or an *Error.
func ParseRequest(b []byte, lim Limits) (*Request, int, error) {
	lim = lim.withDefaults()
	pos := 0
	for range maxEmptyLines {
		if bytes.HasPrefix(b[pos:], crlf) {
			pos += 2
		}
	}
	line, next, err := nextLine(b, pos, lim)
	if err != nil {
		if e, ok := err.(*Error); ok && e.Status == 431 {
			e.Status, e.Reason = 414, "request line too long"
		}
		return nil, 0, err
	}
	req := &Request{}
	mEnd, tStart, tEnd, err := parseRequestLine(line, req)
	if err != nil {
		return nil, 0, err
	}
	var spanBuf [24]span
	spans, end, err := parseFields(b, next, lim, spanBuf[:0])
	if err != nil {
		return nil, 0, err
	}
	// One string holds the whole head; the method, target and fields
	// are slices of it.
	head := string(b[:end])
	req.Method, req.Target = head[pos:pos+mEnd], head[pos+tStart:pos+tEnd]
	req.Header = buildHeader(head, spans)
	if err := req.check(); err != nil {
		return nil, 0, err
	}
	return req, end, nil
}

// ParseResponse parses the response head at the start of b, answering a
// request with method. It returns the response and the length of the head.
func ParseResponse(b []byte, lim Limits, method string) (*Response, int, error) {
	lim = lim.withDefaults()
	line, next, err := nextLine(b, 0, lim)
	if err != nil {
		return nil, 0, err
	}
	resp := &Response{}
	if err := parseStatusLine(line, resp); err != nil {
		return nil, 0, err
	}
	var spanBuf [24]span
	spans, end, err := parseFields(b, next, lim, spanBuf[:0])
	if err != nil {
		return nil, 0, err
	}
	head := string(b[:end])
	if len(line) > 13 {
		resp.Reason = head[13:len(line)]
	}
	resp.Header = buildHeader(head, spans)
	if err := resp.check(method); err != nil {
		return nil, 0, err
	}
	return resp, end, nil
}

var crlf = []byte("\r\n")

// nextLine returns the line starting at pos without its CRLF, and the
// position after it. A line longer than lim.MaxLine, or a head past
// lim.MaxHead, is a 431 (the caller turns it into 414 for a request line).
func nextLine(b []byte, pos int, lim Limits) ([]byte, int, error) {
	i := bytes.IndexByte(b[pos:], '\n')
	if i < 0 {
		switch {
		case len(b)-pos > lim.MaxLine:
			return nil, 0, &Error{Status: 431, Reason: "header line too long"}
		case len(b) > lim.MaxHead:
			return nil, 0, &Error{Status: 431, Reason: "header too large"}
		}
		return nil, 0, ErrIncomplete
	}
	if i+1 > lim.MaxLine+2 {
		return nil, 0, &Error{Status: 431, Reason: "header line too long"}
	}
	if pos+i+1 > lim.MaxHead {
		return nil, 0, &Error{Status: 431, Reason: "header too large"}
	}
	if i == 0 || b[pos+i-1] != '\r' {
		return nil, 0, bad("line ends in a bare LF")
	}
	line := b[pos : pos+i-1]
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, 0, bad("bare CR in a line")
	}
	return line, pos + i + 1, nil
}

// parseRequestLine checks a request line and sets req.Version; it returns
// where the method ends and the target starts and ends, within line.
func parseRequestLine(line []byte, req *Request) (mEnd, tStart, tEnd int, err error) {
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return 0, 0, 0, bad("malformed request line")
	}
	if !isToken(line[:sp1]) {
		return 0, 0, 0, bad("invalid method")
	}
	rest := line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 {
		return 0, 0, 0, bad("malformed request line")
	}
	target, proto := rest[:sp2], rest[sp2+1:]
	for _, c := range target {
		if c <= ' ' || c >= 0x7f {
			return 0, 0, 0, bad("invalid character in request target")
		}
	}
	v, ok := parseVersion(proto)
	if !ok {
		if bytes.HasPrefix(proto, []byte("HTTP/")) && len(proto) == 8 && proto[6] == '.' {
			return 0, 0, 0, &Error{Status: 505, Reason: "HTTP version not supported"}
		}
		return 0, 0, 0, bad("malformed HTTP version")
	}
	req.Version = v
	return sp1, sp1 + 1, sp1 + 1 + sp2, nil
}

func parseVersion(p []byte) (Version, bool) {
	switch string(p) {
	case "HTTP/1.1":
		return 1, true
	case "HTTP/1.0":
		return 0, true
	}
	return 0, false
}

func parseStatusLine(line []byte, resp *Response) error {
	if len(line) < 12 || line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return bad("malformed status line")
	}
	v, ok := parseVersion(line[:8])
	if !ok {
		return bad("malformed HTTP version in status line")
	}
	code := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return bad("malformed status code")
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 {
		return bad("malformed status code")
	}
	if len(line) > 13 {
		for _, c := range line[13:] {
			if !isFieldChar(c) {
				return bad("invalid character in reason phrase")
			}
		}
	}
	resp.Version, resp.Status = v, code
	return nil
}

// span locates one field's name and value in the head.
type span struct{ ns, ne, vs, ve int }

// parseFields parses field lines from pos through the empty line,
// appending where each name and value are to spans, and returns the
// position after the head.
func parseFields(b []byte, pos int, lim Limits, spans []span) ([]span, int, error) {
	for {
		line, next, err := nextLine(b, pos, lim)
		if err != nil {
			return nil, 0, err
		}
		if len(line) == 0 {
			return spans, next, nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			return nil, 0, bad("obsolete line folding")
		}
		if len(spans) == lim.MaxFields {
			return nil, 0, &Error{Status: 431, Reason: "too many header fields"}
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return nil, 0, bad("header field without a colon")
		}
		name := line[:colon]
		if !isToken(name) {
			return nil, 0, bad("invalid header field name %q", clip(name))
		}
		vs, ve := colon+1, len(line)
		for vs < ve && (line[vs] == ' ' || line[vs] == '\t') {
			vs++
		}
		for ve > vs && (line[ve-1] == ' ' || line[ve-1] == '\t') {
			ve--
		}
		for _, c := range line[vs:ve] {
			if !isFieldChar(c) {
				return nil, 0, bad("invalid character in field %s", name)
			}
		}
		spans = append(spans, span{ns: pos, ne: pos + colon, vs: pos + vs, ve: pos + ve})
		pos = next
	}
}

// buildHeader makes the fields of spans, as slices of head.
func buildHeader(head string, spans []span) Header {
	if len(spans) == 0 {
		return nil
	}
	h := make(Header, len(spans))
	for i, sp := range spans {
		h[i] = Field{Name: head[sp.ns:sp.ne], Value: head[sp.vs:sp.ve]}
	}
	return h
}

func clip(b []byte) []byte {
	if len(b) > 40 {
		return b[:40]
	}
	return b
}

// check derives framing and connection semantics from the fields and
// rejects ambiguous ones.
func (req *Request) check() error {
	hosts := 0
	for _, f := range req.Header {
		if equalFold(f.Name, "Host") {
			hosts++
		}
	}
	if hosts > 1 {
		return bad("more than one Host field")
	}
	if hosts == 0 && req.Version == 1 {
		return bad("HTTP/1.1 request without Host")
	}
	framing, n, err := bodyFraming(req.Header)
	if err != nil {
		return err
	}
	if framing == Chunked && req.Version == 0 {
		return bad("Transfer-Encoding in an HTTP/1.0 request")
	}
	if framing == UntilClose {
		return &Error{Status: 501, Reason: "transfer coding not implemented"}
	}
	req.Framing, req.ContentLength = framing, n
	req.Close = closes(req.Version, req.Header)
	if v, ok := req.Header.Get("Expect"); ok && equalFold(v, "100-continue") {
		req.Expect100 = true
	}
	return nil
}

func (resp *Response) check(method string) error {
	framing, n, err := bodyFraming(resp.Header)
	if err != nil {
		return err
	}
	resp.Close = closes(resp.Version, resp.Header)
	switch {
	case resp.Status < 200 || resp.Status == 204 || resp.Status == 304 || method == "HEAD":
		framing, n = NoBody, 0
	case method == "CONNECT" && resp.Status < 300:
		framing, n = NoBody, 0
	case framing == NoBody:
		framing = UntilClose
	}
	if framing == UntilClose {
		resp.Close = true
	}
	resp.Framing, resp.ContentLength = framing, n
	return nil
}

// bodyFraming reads Content-Length and Transfer-Encoding. NoBody means
// neither was sent; UntilClose means a transfer coding other than a final
// chunked.
func bodyFraming(h Header) (Framing, int64, error) {
	sawTE := false
	codings := 0         // transfer codings named
	lastChunked := false // the last one named is chunked
	var length int64 = -1
	for _, f := range h {
		switch {
		case equalFold(f.Name, "Transfer-Encoding"):
			sawTE = true
			for rest := f.Value; rest != ""; {
				var c string
				if c, rest = nextItem(rest); c == "" {
					continue
				}
				if lastChunked {
					return 0, 0, bad("chunked is not the final transfer coding")
				}
				codings++
				lastChunked = equalFold(c, "chunked")
			}
		case equalFold(f.Name, "Content-Length"):
			for rest := f.Value; rest != ""; {
				var v string
				if v, rest = nextItem(rest); v == "" {
					continue
				}
				n, ok := parseLength(v)
				if !ok {
					return 0, 0, bad("invalid Content-Length %q", v)
				}
				if length >= 0 && n != length {
					return 0, 0, bad("conflicting Content-Length values")
				}
				length = n
			}
			if length < 0 {
				return 0, 0, bad("empty Content-Length")
			}
		}
	}
	if sawTE {
		if codings == 0 {
			// An empty Transfer-Encoding must not quietly mean "no body":
			// a server that disagrees would read the next request as one.
			return 0, 0, bad("empty Transfer-Encoding")
		}
		if length >= 0 {
			return 0, 0, bad("both Content-Length and Transfer-Encoding")
		}
		if codings == 1 && lastChunked {
			return Chunked, 0, nil
		}
		return UntilClose, 0, nil
	}
	if length >= 0 {
		return Length, length, nil
	}
	return NoBody, 0, nil
}

func parseLength(v string) (int64, bool) {
	if v == "" || len(v) > 18 {
		return 0, false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil
}

// closes reports whether a message of version v with header h ends its
// connection.
func closes(v Version, h Header) bool {
	keep, close := false, false
	for _, f := range h {
		if !equalFold(f.Name, "Connection") {
			continue
		}
		for rest := f.Value; rest != ""; {
			var t string
			t, rest = nextItem(rest)
			switch {
			case equalFold(t, "close"):
				close = true
			case equalFold(t, "keep-alive"):
				keep = true
			}
		}
	}
	if close {
		return true
	}
	return v == 0 && !keep
}

// ConnectionTokens returns the lower-cased tokens of every Connection
// field: the names of further hop-by-hop fields.
func (h Header) ConnectionTokens() []string {
	var out []string
	for _, f := range h {
		if equalFold(f.Name, "Connection") {
			for rest := f.Value; rest != ""; {
				var t string
				if t, rest = nextItem(rest); t != "" {
					out = append(out, lower(t))
				}
			}
		}
	}
	return out
}

// nextItem returns the first element of a comma-separated field value,
// without the whitespace around it (empty for an empty element), and the
// rest after its comma. Callers loop while rest is not empty, skipping
// empty elements: no slice is made, so parsing a head allocates nothing
// for its lists.
func nextItem(v string) (item, rest string) {
	i := 0
	for i < len(v) && v[i] != ',' {
		i++
	}
	item = v[:i]
	if i < len(v) {
		rest = v[i+1:]
	}
	for len(item) > 0 && (item[0] == ' ' || item[0] == '\t') {
		item = item[1:]
	}
	for len(item) > 0 && (item[len(item)-1] == ' ' || item[len(item)-1] == '\t') {
		item = item[:len(item)-1]
	}
	return item, rest
}

// isToken reports whether b is a non-empty RFC 9110 token.
func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c >= 0x80 || !tchar[c] {
			return false
		}
	}
	return true
}

var tchar = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// isFieldChar reports whether c may appear in a field value: VCHAR, SP,
// HTAB or obs-text; never a control character.
func isFieldChar(c byte) bool {
	return c == '\t' || (c >= ' ' && c != 0x7f)
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// EqualFold reports whether a and b are equal ignoring ASCII case, as
// field names compare.
func EqualFold(a, b string) bool { return equalFold(a, b) }
