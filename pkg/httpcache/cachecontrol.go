package httpcache

import (
	"strings"

	"github.com/sluice-proxy/sluice/pkg/httpmsg"
)

// Directives are the Cache-Control directives a shared cache acts on (RFC
// 9111 section 5.2). Delta-seconds fields are -1 when absent; a value that
// is not a valid delta-seconds counts as 0 (stale: the safe reading), and
// values past MaxDelta are clamped to it (section 1.2.2).
type Directives struct {
	// MaxAge and SMaxAge are max-age and s-maxage, in seconds.
	MaxAge, SMaxAge int64
	// MaxStale and MinFresh are the request directives, in seconds;
	// max-stale without a value is MaxDelta.
	MaxStale, MinFresh int64
	// NoStore and NoCache are no-store and no-cache (a qualified
	// no-cache="field" counts as unqualified).
	NoStore, NoCache bool
	// Private and Public are the response directives.
	Private, Public bool
	// MustRevalidate is must-revalidate or proxy-revalidate: a shared
	// cache treats them alike.
	MustRevalidate bool
	// OnlyIfCached and NoTransform are only-if-cached (request) and
	// no-transform.
	OnlyIfCached, NoTransform bool
	// StaleIfError is stale-if-error (RFC 5861), in seconds: how long
	// past its freshness a response may still answer when the origin
	// fails.
	StaleIfError int64
}

// MaxDelta is the largest delta-seconds value kept: 2^31, as RFC 9111
// section 1.2.2 recommends.
const MaxDelta = 1 << 31

// ParseCacheControl reads every Cache-Control field of h. Unknown
// directives are ignored; a directive given twice keeps its first value
// (RFC 9111 section 4.2.1 says such a response may be treated as stale,
// which the first value of max-age=0 duplicates already does in practice).
func ParseCacheControl(h httpmsg.Header) Directives {
	d := Directives{MaxAge: -1, SMaxAge: -1, MaxStale: -1, MinFresh: -1, StaleIfError: -1}
	for _, f := range h {
		if httpmsg.EqualFold(f.Name, "Cache-Control") {
			d.parse(f.Value)
		}
	}
	return d
}

// ParseDirectives parses one Cache-Control field value.
func ParseDirectives(v string) Directives {
	d := Directives{MaxAge: -1, SMaxAge: -1, MaxStale: -1, MinFresh: -1, StaleIfError: -1}
	d.parse(v)
	return d
}

func (d *Directives) parse(v string) {
	for len(v) > 0 {
		var item string
		item, v = nextItem(v)
		name, arg, hasArg := strings.Cut(item, "=")
		name = strings.TrimSpace(name)
		arg = unquote(strings.TrimSpace(arg))
		switch strings.ToLower(name) {
		case "max-age":
			setDelta(&d.MaxAge, arg, hasArg)
		case "s-maxage":
			setDelta(&d.SMaxAge, arg, hasArg)
		case "max-stale":
			if !hasArg {
				if d.MaxStale < 0 {
					d.MaxStale = MaxDelta
				}
			} else {
				setDelta(&d.MaxStale, arg, true)
			}
		case "min-fresh":
			setDelta(&d.MinFresh, arg, hasArg)
		case "no-store":
			d.NoStore = true
		case "no-cache":
			// The qualified form (no-cache="Set-Cookie") is treated as
			// unqualified: stricter, and allowed (section 5.2.2.4).
			d.NoCache = true
		case "private":
			d.Private = true
		case "public":
			d.Public = true
		case "must-revalidate", "proxy-revalidate":
			d.MustRevalidate = true
		case "only-if-cached":
			d.OnlyIfCached = true
		case "no-transform":
			d.NoTransform = true
		case "stale-if-error":
			setDelta(&d.StaleIfError, arg, hasArg)
		}
	}
}

// nextItem splits off the first comma-separated item, respecting quoted
// strings (a comma inside quotes does not end the item).
func nextItem(v string) (item, rest string) {
	quoted := false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\' && quoted && i+1 < len(v):
			i++
		case c == '"':
			quoted = !quoted
		case c == ',' && !quoted:
			return v[:i], v[i+1:]
		}
	}
	return v, ""
}

func unquote(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}

// setDelta keeps the first value of a delta-seconds directive.
func setDelta(dst *int64, arg string, hasArg bool) {
	if *dst >= 0 {
		return
	}
	if !hasArg {
		*dst = 0
		return
	}
	*dst = parseDelta(arg)
}

// parseDelta parses delta-seconds: digits only; invalid is 0, too large
// is MaxDelta.
func parseDelta(s string) int64 {
	if s == "" {
		return 0
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int64(c-'0')
		if n >= MaxDelta {
			return MaxDelta
		}
	}
	return n
}
