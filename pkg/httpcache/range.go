package httpcache

import (
	"strings"
	"time"

	"github.com/sluice-proxy/sluice/pkg/httpmsg"
)

// ByteRange is a part of a stored body: Length bytes from Start.
type ByteRange struct {
	Start, Length int64
}

// RangeOutcome is what a Range request gets from a stored response.
type RangeOutcome int

// Range outcomes.
const (
	// WholeBody: the Range field is ignored (absent, not in bytes,
	// several ranges, malformed, or an If-Range that does not match) and
	// the whole response is served, as RFC 9110 section 14.2 allows.
	WholeBody RangeOutcome = iota
	// PartOfBody: a 206 with the ByteRange.
	PartOfBody
	// Unsatisfiable: a 416; the range starts past the body's end.
	Unsatisfiable
)

// maxRangeDigits bounds a range number so that it cannot overflow int64.
const maxRangeDigits = 18

// ParseRange reads a Range field value against a body of size bytes (RFC
// 9110 section 14.1.2): a single "bytes=first-last", "bytes=first-" or
// "bytes=-suffix". Several ranges are served as the whole body: a
// multipart answer is not worth its code on a router.
func ParseRange(v string, size int64) (ByteRange, RangeOutcome) {
	unit, spec, ok := strings.Cut(strings.TrimSpace(v), "=")
	if !ok || !strings.EqualFold(strings.TrimSpace(unit), "bytes") {
		return ByteRange{}, WholeBody
	}
	spec = strings.TrimSpace(spec)
	if strings.IndexByte(spec, ',') >= 0 {
		return ByteRange{}, WholeBody
	}
	first, last, ok := strings.Cut(spec, "-")
	if !ok {
		return ByteRange{}, WholeBody
	}
	if first == "" { // a suffix: the last N bytes
		n, ok := rangeNumber(last)
		switch {
		case !ok:
			return ByteRange{}, WholeBody
		case n == 0 || size == 0:
			return ByteRange{}, Unsatisfiable
		}
		n = min(n, size)
		return ByteRange{Start: size - n, Length: n}, PartOfBody
	}
	start, ok := rangeNumber(first)
	if !ok {
		return ByteRange{}, WholeBody
	}
	end := size - 1
	if last != "" {
		e, ok := rangeNumber(last)
		if !ok || e < start {
			return ByteRange{}, WholeBody
		}
		end = min(e, size-1)
	}
	if start >= size {
		return ByteRange{}, Unsatisfiable
	}
	return ByteRange{Start: start, Length: end - start + 1}, PartOfBody
}

// rangeNumber parses the digits of a range bound.
func rangeNumber(s string) (int64, bool) {
	if s == "" || len(s) > maxRangeDigits {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// RangeFor decides how a GET with header h is answered from e: the part
// its Range field asks for, when e is a complete 200 and If-Range (if
// any) names e by a strong ETag or by its exact Last-Modified date (RFC
// 9110 section 13.1.5); else the whole body (returned as the range of it
// all), or past the end 416. A client conditional answered 304
// (NotModified) comes before this.
func (e *Entry) RangeFor(h httpmsg.Header) (ByteRange, RangeOutcome) {
	whole := ByteRange{Length: e.BodyLen}
	v, ok := h.Get("Range")
	if !ok || e.Status != 200 {
		return whole, WholeBody
	}
	if ir, ok := h.Get("If-Range"); ok && !e.ifRange(strings.TrimSpace(ir)) {
		return whole, WholeBody
	}
	r, out := ParseRange(v, e.BodyLen)
	if out == WholeBody {
		return whole, out
	}
	return r, out
}

// ifRange reports whether an If-Range value names e.
func (e *Entry) ifRange(v string) bool {
	if strings.HasPrefix(v, `"`) || strings.HasPrefix(v, "W/") {
		// Strong comparison: neither may be weak.
		return !strings.HasPrefix(v, "W/") && e.ETag != "" && !strings.HasPrefix(e.ETag, "W/") && v == e.ETag
	}
	if e.LastModified == "" {
		return false
	}
	when, err := parseHTTPDate(v)
	if err != nil {
		return false
	}
	lm, err := parseHTTPDate(e.LastModified)
	// A date is a strong validator only when Last-Modified is at least a
	// second before the response's Date (RFC 9110 section 8.8.2.2).
	return err == nil && when.Equal(lm) && !e.date.IsZero() && !lm.After(e.date.Add(-time.Second))
}
