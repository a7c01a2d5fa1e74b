package httpcache

import (
	"strings"
	"testing"
	"time"

	"github.com/sluice-proxy/sluice/pkg/httpmsg"
)

// hdr builds a header from "Name: value" lines.
func hdr(lines ...string) httpmsg.Header {
	var h httpmsg.Header
	for _, l := range lines {
		n, v, _ := strings.Cut(l, ": ")
		h = append(h, httpmsg.Field{Name: n, Value: v})
	}
	return h
}

var t0 = time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)

func date(t time.Time) string { return t.Format("Mon, 02 Jan 2006 15:04:05 GMT") }

func TestAnalyzeAndDecide(t *testing.T) {
	now := date(t0)
	tests := []struct {
		name     string
		url      string // if empty, http://example.com/x
		method   string
		req      []string // request fields when stored
		status   int
		resp     []string
		stored   bool
		lifetime time.Duration
		later    time.Duration // when the next request comes
		next     []string      // its fields
		want     Action
	}{
		{name: "max-age fresh", status: 200, resp: []string{"Date: " + now, "Cache-Control: max-age=60"}, stored: true, lifetime: time.Minute, later: 30 * time.Second, want: Serve},
		{name: "max-age stale no validator", status: 200, resp: []string{"Date: " + now, "Cache-Control: max-age=60"}, stored: true, lifetime: time.Minute, later: 61 * time.Second, want: Miss},
		{name: "max-age stale with etag", status: 200, resp: []string{"Cache-Control: max-age=60", `ETag: "a"`}, stored: true, lifetime: time.Minute, later: 61 * time.Second, want: Revalidate},
		{name: "s-maxage wins for a shared cache", status: 200, resp: []string{"Cache-Control: max-age=0, s-maxage=120"}, stored: true, lifetime: 2 * time.Minute, later: time.Minute, want: Serve},
		{name: "no-store", status: 200, resp: []string{"Cache-Control: no-store, max-age=60"}},
		{name: "request no-store", status: 200, req: []string{"Cache-Control: no-store"}, resp: []string{"Cache-Control: max-age=60"}},
		{name: "private", status: 200, resp: []string{"Cache-Control: private, max-age=60"}},
		{name: "no-cache stored but revalidated", status: 200, resp: []string{"Cache-Control: no-cache", `ETag: "a"`}, stored: true, want: Revalidate},
		{name: "must-revalidate stale", status: 200, resp: []string{"Cache-Control: max-age=10, must-revalidate", "Last-Modified: " + date(t0.Add(-time.Hour))}, stored: true, lifetime: 10 * time.Second, later: 20 * time.Second, next: []string{"Cache-Control: max-stale=60"}, want: Revalidate},
		{name: "max-stale without must-revalidate", status: 200, resp: []string{"Cache-Control: max-age=10", `ETag: "a"`}, stored: true, lifetime: 10 * time.Second, later: 20 * time.Second, next: []string{"Cache-Control: max-stale=60"}, want: Serve},
		{name: "proxy-revalidate is must-revalidate", status: 200, resp: []string{"Cache-Control: max-age=10, proxy-revalidate", `ETag: "a"`}, stored: true, lifetime: 10 * time.Second, later: 20 * time.Second, next: []string{"Cache-Control: max-stale"}, want: Revalidate},
		{name: "s-maxage implies proxy-revalidate", status: 200, resp: []string{"Cache-Control: s-maxage=10", `ETag: "a"`}, stored: true, lifetime: 10 * time.Second, later: 20 * time.Second, next: []string{"Cache-Control: max-stale=60"}, want: Revalidate},
		{name: "expires", status: 200, resp: []string{"Date: " + now, "Expires: " + date(t0.Add(time.Hour))}, stored: true, lifetime: time.Hour, later: time.Minute, want: Serve},
		{name: "expires invalid", status: 200, resp: []string{"Date: " + now, "Expires: 0", `ETag: "x"`}, stored: true, lifetime: 0, want: Revalidate},
		{name: "expires past no validator", status: 200, resp: []string{"Date: " + now, "Expires: " + date(t0.Add(-time.Hour))}},
		{name: "heuristic 10 percent", status: 200, resp: []string{"Date: " + now, "Last-Modified: " + date(t0.Add(-100*time.Hour))}, stored: true, lifetime: 10 * time.Hour, later: 9 * time.Hour, want: Serve},
		{name: "heuristic not for a query", url: "http://example.com/x?id=1", status: 200, resp: []string{"Date: " + now, "Last-Modified: " + date(t0.Add(-100*time.Hour))}},
		{name: "query with max-age", url: "http://example.com/x?id=1", status: 200, resp: []string{"Cache-Control: max-age=60"}, stored: true, lifetime: time.Minute, want: Serve},
		{name: "heuristic capped at a day", status: 200, resp: []string{"Date: " + now, "Last-Modified: " + date(t0.Add(-1000*time.Hour))}, stored: true, lifetime: MaxHeuristic, later: 25 * time.Hour, want: Revalidate},
		{name: "heuristic 404", status: 404, resp: []string{"Date: " + now, "Last-Modified: " + date(t0.Add(-10*time.Hour))}, stored: true, lifetime: time.Hour, later: time.Minute, want: Serve},
		{name: "410 max-age", status: 410, resp: []string{"Cache-Control: max-age=60"}, stored: true, lifetime: time.Minute, want: Serve},
		{name: "301 max-age", status: 301, resp: []string{"Cache-Control: max-age=60", "Location: /x"}, stored: true, lifetime: time.Minute, want: Serve},
		{name: "203 max-age", status: 203, resp: []string{"Cache-Control: max-age=60"}, stored: true, lifetime: time.Minute, want: Serve},
		{name: "302 not stored", status: 302, resp: []string{"Cache-Control: max-age=60"}},
		{name: "500 not stored", status: 500, resp: []string{"Cache-Control: max-age=60"}},
		{name: "no freshness information", status: 200, resp: []string{`ETag: "a"`}},
		{name: "POST not stored", method: "POST", status: 200, resp: []string{"Cache-Control: max-age=60"}},
		{name: "authorization not stored", status: 200, req: []string{"Authorization: Basic eDp5"}, resp: []string{"Cache-Control: max-age=60"}},
		{name: "authorization with public", status: 200, req: []string{"Authorization: Basic eDp5"}, resp: []string{"Cache-Control: public, max-age=60"}, stored: true, lifetime: time.Minute, next: []string{"Authorization: Basic eDp5"}, want: Serve},
		{name: "authorization request on a plain entry", status: 200, resp: []string{"Cache-Control: max-age=60"}, stored: true, lifetime: time.Minute, next: []string{"Authorization: Basic eDp5"}, want: Miss},
		{name: "vary star", status: 200, resp: []string{"Cache-Control: max-age=60", "Vary: *"}},
		{name: "set-cookie", status: 200, resp: []string{"Cache-Control: max-age=60", "Set-Cookie: a=b"}},
		{name: "client no-cache", status: 200, resp: []string{"Cache-Control: max-age=60", `ETag: "a"`}, stored: true, lifetime: time.Minute, next: []string{"Cache-Control: no-cache"}, want: Revalidate},
		{name: "client pragma no-cache", status: 200, resp: []string{"Cache-Control: max-age=60", `ETag: "a"`}, stored: true, lifetime: time.Minute, next: []string{"Pragma: no-cache"}, want: Revalidate},
		{name: "client max-age=0", status: 200, resp: []string{"Cache-Control: max-age=60", "Last-Modified: " + date(t0.Add(-time.Hour))}, stored: true, lifetime: time.Minute, later: time.Second, next: []string{"Cache-Control: max-age=0"}, want: Revalidate},
		{name: "client min-fresh", status: 200, resp: []string{"Cache-Control: max-age=60", `ETag: "a"`}, stored: true, lifetime: time.Minute, later: 50 * time.Second, next: []string{"Cache-Control: min-fresh=20"}, want: Revalidate},
		{name: "client no-store", status: 200, resp: []string{"Cache-Control: max-age=60"}, stored: true, lifetime: time.Minute, next: []string{"Cache-Control: no-store"}, want: Miss},
		{name: "age field counts", status: 200, resp: []string{"Date: " + now, "Cache-Control: max-age=60", "Age: 50"}, stored: true, lifetime: time.Minute, later: 15 * time.Second, want: Miss},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tt.method
			if m == "" {
				m = "GET"
			}
			url := tt.url
			if url == "" {
				url = "http://example.com/x"
			}
			req := Request{Method: m, URL: url, Header: hdr(tt.req...)}
			e, why := Analyze(req, tt.status, "Reason", hdr(tt.resp...), t0, t0)
			if (e != nil) != tt.stored {
				t.Fatalf("stored = %v (%s), want %v", e != nil, why, tt.stored)
			}
			if e == nil {
				return
			}
			if e.Lifetime() != tt.lifetime {
				t.Errorf("lifetime %v, want %v", e.Lifetime(), tt.lifetime)
			}
			if got := e.Decide(hdr(tt.next...), t0.Add(tt.later)); got != tt.want {
				t.Errorf("decide after %v with %q: %v, want %v", tt.later, tt.next, got, tt.want)
			}
		})
	}
}

func TestAge(t *testing.T) {
	// RFC 9111 section 4.2.3: Age 10 from upstream, 2 s of delay, 5 s
	// resident: 17 s.
	h := hdr("Date: "+date(t0), "Cache-Control: max-age=60", "Age: 10")
	e, _ := Analyze(Request{Method: "GET", URL: "u"}, 200, "OK", h, t0, t0.Add(2*time.Second))
	if got := e.Age(t0.Add(7 * time.Second)); got != 17*time.Second {
		t.Errorf("age %v, want 17s", got)
	}
	// A Date in the future of the response time adds nothing.
	h = hdr("Date: "+date(t0.Add(time.Hour)), "Cache-Control: max-age=60")
	e, _ = Analyze(Request{Method: "GET", URL: "u"}, 200, "OK", h, t0, t0)
	if got := e.Age(t0.Add(3 * time.Second)); got != 3*time.Second {
		t.Errorf("age with a future Date %v, want 3s", got)
	}
}

func TestVary(t *testing.T) {
	h := hdr("Cache-Control: max-age=60", "Vary: Accept-Language, accept-encoding")
	req := Request{Method: "GET", URL: "u", Header: hdr("Accept-Language: en", "Accept-Encoding: gzip,  br")}
	e, why := Analyze(req, 200, "OK", h, t0, t0)
	if e == nil {
		t.Fatal(why)
	}
	tests := []struct {
		req  []string
		want bool
	}{
		{[]string{"Accept-Language: en", "Accept-Encoding: gzip, br"}, true},
		{[]string{"accept-language: en", "Accept-Encoding: gzip", "Accept-Encoding: br"}, true},
		{[]string{"Accept-Language: de", "Accept-Encoding: gzip, br"}, false},
		{[]string{"Accept-Encoding: gzip, br"}, false},
	}
	for _, tt := range tests {
		if got := e.Matches(hdr(tt.req...)); got != tt.want {
			t.Errorf("Matches(%q) = %v, want %v", tt.req, got, tt.want)
		}
	}
}

func TestNotModified(t *testing.T) {
	lm := date(t0.Add(-time.Hour))
	e, _ := Analyze(Request{Method: "GET", URL: "u"}, 200, "OK", hdr("Cache-Control: max-age=60", `ETag: W/"v1"`, "Last-Modified: "+lm), t0, t0)
	tests := []struct {
		req  []string
		want bool
	}{
		{[]string{`If-None-Match: "v1"`}, true},
		{[]string{`If-None-Match: "v0", W/"v1"`}, true},
		{[]string{`If-None-Match: *`}, true},
		{[]string{`If-None-Match: "v2"`, "If-Modified-Since: " + date(t0)}, false}, // INM wins
		{[]string{"If-Modified-Since: " + lm}, true},
		{[]string{"If-Modified-Since: " + date(t0.Add(-2*time.Hour))}, false},
		{[]string{"If-Modified-Since: yesterday"}, false},
		{nil, false},
	}
	for _, tt := range tests {
		if got := e.NotModified(hdr(tt.req...)); got != tt.want {
			t.Errorf("NotModified(%q) = %v, want %v", tt.req, got, tt.want)
		}
	}
}

func TestUpdated(t *testing.T) {
	e, _ := Analyze(Request{Method: "GET", URL: "u"}, 200, "OK",
		hdr("Cache-Control: max-age=0", `ETag: "v1"`, "Content-Type: text/plain", "X-Old: 1", "Content-Length: 5"), t0, t0)
	e.Body, e.BodyLen = []byte("hello"), 5
	n := e.Updated(hdr("Cache-Control: max-age=60", `ETag: "v1"`, "Content-Type: image/png", "Connection: close"), t0.Add(time.Minute), t0.Add(time.Minute))
	if n.Lifetime() != time.Minute {
		t.Errorf("lifetime after 304: %v", n.Lifetime())
	}
	if n.Decide(nil, t0.Add(90*time.Second)) != Serve {
		t.Errorf("not fresh 30 s after the 304")
	}
	if !strings.Contains(n.Fields, "X-Old: 1") || !strings.Contains(n.Fields, "Content-Type: text/plain") || strings.Contains(n.Fields, "image/png") {
		t.Errorf("fields after 304: %q", n.Fields)
	}
	if strings.Contains(n.Fields, "Connection") || strings.Contains(n.Fields, "Content-Length") {
		t.Errorf("hop-by-hop or framing fields stored: %q", n.Fields)
	}
	if string(n.Body) != "hello" {
		t.Errorf("body lost in the update")
	}
}

func TestStaleOnError(t *testing.T) {
	req := Request{Method: "GET", URL: "u"}
	entry := func(cc string) *Entry {
		e, _ := Analyze(req, 200, "OK", hdr("Cache-Control: "+cc, `ETag: "x"`), t0, t0)
		if e == nil {
			t.Fatalf("%q not stored", cc)
		}
		return e
	}
	later := t0.Add(160 * time.Second) // 100 s stale after max-age=60
	tests := []struct {
		cc   string
		req  []string
		want bool
	}{
		{"max-age=60, stale-if-error=300", nil, true},
		{"max-age=60, stale-if-error=50", nil, false}, // too stale
		{"max-age=60", nil, false},
		{"max-age=60", []string{"Cache-Control: stale-if-error=100"}, true},
		{"max-age=60", []string{"Cache-Control: stale-if-error=99"}, false},
		{"max-age=60, stale-if-error=300, must-revalidate", nil, false},
		{"max-age=60, stale-if-error=300, proxy-revalidate", nil, false},
		{"max-age=60, s-maxage=60, stale-if-error=300", nil, false},
		{"max-age=60, stale-if-error=300", []string{"Cache-Control: no-store"}, false},
		{"max-age=60, stale-if-error=300", []string{"Authorization: Basic eDp5"}, false},
	}
	for _, tt := range tests {
		if got := entry(tt.cc).StaleOnError(hdr(tt.req...), later); got != tt.want {
			t.Errorf("%q, request %q: StaleOnError = %v, want %v", tt.cc, tt.req, got, tt.want)
		}
	}
}
