package httpcache

import (
	"bytes"
	"testing"

	"github.com/sluice-proxy/sluice/pkg/httpmsg"
	"time"
)

// FuzzParseDirectives checks that any Cache-Control value parses without
// panicking into a consistent set of directives.
func FuzzParseDirectives(f *testing.F) {
	for _, s := range []string{"max-age=60", `no-cache="Set-Cookie", max-age=0`, "s-maxage=99999999999999999999", "max-age=1, stale-if-error=86400"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d := ParseDirectives(v)
		for _, n := range []int64{d.MaxAge, d.SMaxAge, d.MaxStale, d.MinFresh, d.StaleIfError} {
			if n < -1 || n > MaxDelta {
				t.Fatalf("%q: delta %d out of range", v, n)
			}
		}
	})
}

// FuzzAnalyze feeds arbitrary freshness fields to Analyze and Decide: no
// panic, no negative lifetime, and a stored entry that Decide serves is
// fresh or allowed stale by the request.
func FuzzAnalyze(f *testing.F) {
	f.Add("max-age=60", "Sun, 22 Nov 2026 08:00:00 GMT", "", "", "0", "", "max-stale=5")
	f.Add("no-cache", "", "Thu, 01 Jan 1970 00:00:00 GMT", "Sun, 01 Nov 2026 00:00:00 GMT", "", "Accept, *", "")
	f.Add("s-maxage=1, public", "garbage", "-1", "Sun, 01 Nov 2026 00:00:00 GMT", "99999999999999999999", "", "no-cache")
	f.Fuzz(func(t *testing.T, cc, date, expires, lastMod, age, vary, reqCC string) {
		var h []string
		for _, kv := range [][2]string{{"Cache-Control", cc}, {"Date", date}, {"Expires", expires}, {"Last-Modified", lastMod}, {"Age", age}, {"Vary", vary}, {"ETag", `"e"`}} {
			if kv[1] != "" {
				h = append(h, kv[0]+": "+kv[1])
			}
		}
		e, _ := Analyze(Request{Method: "GET", URL: "u"}, 200, "OK", hdr(h...), t0, t0)
		if e == nil {
			return
		}
		if e.Lifetime() < 0 {
			t.Fatalf("negative lifetime %v", e.Lifetime())
		}
		req := hdr("Cache-Control: " + reqCC)
		if e.Decide(req, t0.Add(time.Second)) == Serve {
			rcc := ParseDirectives(reqCC)
			if e.Age(t0.Add(time.Second)) >= e.Lifetime() && rcc.MaxStale < 0 {
				t.Fatalf("stale entry served without max-stale")
			}
		}
	})
}

// FuzzDecodeHead checks that any bytes in a cache file are either a
// consistent entry or rejected, never a panic.
func FuzzDecodeHead(f *testing.F) {
	f.Add([]byte(diskMagic + "\x00\x00\x00\x02{}"))
	f.Add([]byte("SLCACHE1\x00\x00\x00\x10{\"BodyLen\":3}xyz"))
	f.Add([]byte("SLCACHE1\x00\x00\x00\x2a{\"VaryNames\":[\"a\"],\"VaryValues\":[\"b\"]}"))
	f.Add([]byte("not a cache file"))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, off, err := decodeHead(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		if off+e.BodyLen != int64(len(b)) || len(e.VaryNames) != len(e.VaryValues) {
			t.Fatalf("inconsistent entry: %d+%d bytes from a %d-byte file", off, e.BodyLen, len(b))
		}
		e.derive() // what indexing does next
	})
}

// FuzzMatches checks that Matches agrees with comparing VaryValues, the
// form entries are stored with.
func FuzzMatches(f *testing.F) {
	f.Add("gzip, br", "gzip,br", "en")
	f.Add(" , gzip", "", "de, en")
	f.Add("a,b", "a", "")
	f.Fuzz(func(t *testing.T, stored, v1, v2 string) {
		names := []string{"accept-encoding"}
		e := &Entry{VaryNames: names, VaryValues: VaryValues(names, hdr("Accept-Encoding: "+stored))}
		var h httpmsg.Header
		if v1 != "" {
			h = append(h, httpmsg.Field{Name: "Accept-Encoding", Value: v1})
		}
		if v2 != "" {
			h = append(h, httpmsg.Field{Name: "accept-encoding", Value: v2})
		}
		want := VaryValues(names, h)[0] == e.VaryValues[0]
		if got := e.Matches(h); got != want {
			t.Fatalf("stored %q, request %q: Matches %v, VaryValues agree %v", stored, h, got, want)
		}
	})
}
