package test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestHTTPProxyContentFilter checks URL patterns and body words: a word in
// the first bytes of a text body gets a 403 page; a word split across two
// chunks far into a body cuts the response short; binary and compressed
// bodies pass; Accept-Encoding is not forwarded.
func TestHTTPProxyContentFilter(t *testing.T) {
	pad := strings.Repeat("harmless text ", 20000) // 280 KB
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen-Accept-Encoding", r.Header.Get("Accept-Encoding"))
		switch r.URL.Path {
		case "/early":
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, "<p>Welcome to the CASINO</p>")
		case "/late-split":
			// "casino" split across two flushed chunks, after 280 KB.
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprint(w, pad+"cas")
			w.(http.Flusher).Flush()
			fmt.Fprint(w, "ino and more")
		case "/binary":
			w.Header().Set("Content-Type", "image/png")
			fmt.Fprint(w, "casino")
		case "/gzip":
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Content-Encoding", "gzip")
			fmt.Fprint(w, "casino")
		default:
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprint(w, pad)
		}
	}))
	t.Cleanup(o.Close)
	p := startHTTPProxy(t, "--block-word", "casino", "--block-url", "*/ads/*")
	base := o.URL

	r := runCurl(t, p, "-H", "Accept-Encoding: gzip", base+"/clean")
	if r.status != 200 || string(r.body) != pad {
		t.Errorf("clean body: status %d, %d bytes", r.status, len(r.body))
	}
	if r.header("X-Seen-Accept-Encoding") != "" {
		t.Errorf("origin saw Accept-Encoding %q with a body filter on", r.header("X-Seen-Accept-Encoding"))
	}
	if r := runCurl(t, p, base+"/early"); r.status != 403 {
		t.Errorf("word in the first bytes: status %d, want 403", r.status)
	}
	r = runCurl(t, p, base+"/late-split")
	if r.err == nil || strings.Contains(string(r.body), "ino and more") {
		t.Errorf("word split across chunks: curl err %v, %d bytes: the response was not cut", r.err, len(r.body))
	}
	for _, path := range []string{"/binary", "/gzip"} {
		if r := runCurl(t, p, base+path); r.status != 200 {
			t.Errorf("%s: status %d, want 200 (not scanned)", path, r.status)
		}
	}
	if r := runCurl(t, p, base+"/ads/banner.gif"); r.status != 403 {
		t.Errorf("blocked URL: status %d, want 403", r.status)
	}
}
