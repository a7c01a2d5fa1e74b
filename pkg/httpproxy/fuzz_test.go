package httpproxy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-proxy/sluice/pkg/filter"
	"github.com/sluice-proxy/sluice/pkg/httpcache"
)

// FuzzProxyConn sends arbitrary client bytes ("ORIGIN" in them becomes
// the test origin's host:port) to a proxy with a cache and a body filter,
// half-closes, and reads what comes back: the proxy must neither panic
// nor stop serving (a plain GET on a new connection still works), and
// every connection must end within the timeouts.
func FuzzProxyConn(f *testing.F) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		switch {
		case strings.HasPrefix(r.URL.Path, "/c"):
			w.Header().Set("Cache-Control", "max-age=60, stale-if-error=60")
			w.Header().Set("ETag", `"e"`)
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write(bytes.Repeat([]byte("cached "), 50))
		case strings.HasPrefix(r.URL.Path, "/chunk"):
			w.(http.Flusher).Flush()
			_, _ = w.Write(bytes.Repeat([]byte("z"), 70000))
		case strings.HasPrefix(r.URL.Path, "/bad"):
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<p>forbiddenword</p>"))
		default:
			_, _ = w.Write([]byte("ok"))
		}
	}))
	f.Cleanup(origin.Close)
	host := origin.Listener.Addr().String()
	addr := fuzzProxy(f)

	for _, seed := range []string{
		"GET http://ORIGIN/ HTTP/1.1\r\nHost: ORIGIN\r\n\r\n",
		"GET http://ORIGIN/c HTTP/1.1\r\nHost: ORIGIN\r\n\r\nGET http://ORIGIN/c HTTP/1.1\r\nHost: ORIGIN\r\nRange: bytes=3-9\r\n\r\n",
		"GET http://ORIGIN/c HTTP/1.1\r\nHost: ORIGIN\r\nRange: bytes=-5\r\nIf-Range: \"e\"\r\n\r\n",
		"GET http://ORIGIN/chunk HTTP/1.0\r\n\r\n",
		"GET http://ORIGIN/bad HTTP/1.1\r\nHost: ORIGIN\r\n\r\n",
		"POST http://ORIGIN/up HTTP/1.1\r\nHost: ORIGIN\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"POST http://ORIGIN/up HTTP/1.1\r\nHost: ORIGIN\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"POST http://ORIGIN/up HTTP/1.1\r\nHost: ORIGIN\r\nContent-Length: 10\r\n\r\nshort",
		"PUT http://ORIGIN/c HTTP/1.1\r\nHost: ORIGIN\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
		"CONNECT ORIGIN HTTP/1.1\r\nHost: ORIGIN\r\n\r\n",
		"OPTIONS http://ORIGIN/ HTTP/1.1\r\nHost: ORIGIN\r\nMax-Forwards: 0\r\n\r\n",
		"GET /relative HTTP/1.1\r\nHost: ORIGIN\r\n\r\n",
		"GET http://ORIGIN/ HTTP/1.1\r\nHost: other\r\n\r\n",
		"GET http://ORIGIN/ HTTP/1.1\r\n X: folded\r\n\r\n",
		"\r\n\r\nGET http://ORIGIN/ HTTP/1.1\r\nHost: ORIGIN\r\nConnection: close\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		in = bytes.ReplaceAll(in, []byte("ORIGIN"), []byte(host))
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(in); err == nil {
			_ = c.(*net.TCPConn).CloseWrite()
		}
		// The proxy ends every connection within its timeouts (1 s for
		// a head, a read from the origin or an idle keep-alive).
		if _, err := io.Copy(io.Discard, c); err != nil && !isReset(err) {
			t.Fatalf("reading the answer to %q: %v", clip(in), err)
		}
		if status := plainGET(t, addr, host); status != 200 {
			t.Fatalf("after %q a plain GET got %d", clip(in), status)
		}
	})
}

// fuzzProxy starts the proxy the fuzzers feed: a 1 MiB cache, a body
// filter blocking "forbiddenword", and 1 s timeouts so that every
// connection ends soon. It returns the proxy's address.
func fuzzProxy(f *testing.F) string {
	f.Helper()
	cache, err := httpcache.New(httpcache.Config{MaxBytes: 1 << 20})
	if err != nil {
		f.Fatal(err)
	}
	words, err := filter.NewWords([]string{"forbiddenword"})
	if err != nil {
		f.Fatal(err)
	}
	p := startProxy(f, Config{Cache: cache, BodyWords: words, HeaderTimeout: time.Second, ReadTimeout: time.Second,
		IdleTimeout: time.Second})
	return p.s.Addr()
}

// plainGET sends one GET for the origin's / through the proxy and returns
// the status.
func plainGET(t *testing.T, addr, host string) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET http://%s/ HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host, host)
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("plain GET: %v", err)
	}
	var status int
	fmt.Sscanf(string(b), "HTTP/1.1 %d", &status)
	return status
}

func isReset(err error) bool { return strings.Contains(err.Error(), "connection reset") }

func clip(b []byte) []byte {
	if len(b) > 200 {
		return b[:200]
	}
	return b
}

// FuzzOriginResponse has an origin answer with arbitrary bytes, for a GET
// that may be cached and a request the content filter reads: the proxy
// must neither panic nor hang, the client gets an answer or a closed
// connection, and a plain GET to a sane origin still works afterwards.
func FuzzOriginResponse(f *testing.F) {
	var answer atomic.Pointer[[]byte]
	// One answer per connection, then close: a body without framing ends
	// there.
	raw := serveConns(f, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4096)
		if n, _ := c.Read(buf); n == 0 { // the request head (the requests here have no body)
			return
		}
		if b := answer.Load(); b != nil {
			_, _ = c.Write(*b)
		}
	})
	sane := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) }))
	f.Cleanup(sane.Close)
	addr := fuzzProxy(f)
	for _, seed := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nCache-Control: max-age=60\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 304 Not Modified\r\nETag: \"e\"\r\n\r\n",
		"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<p>forbiddenword</p>",
		"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-1/10\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
		"garbage\r\n\r\n",
	} {
		f.Add([]byte(seed), false)
		f.Add([]byte(seed), true)
	}
	var n atomic.Int64 // a new URL each time: a stored answer would keep the origin out
	f.Fuzz(func(t *testing.T, resp []byte, head bool) {
		answer.Store(&resp)
		method := "GET"
		if head {
			method = "HEAD"
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "%s http://%s/c%d HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", method, raw, n.Add(1), raw)
		if _, err := io.Copy(io.Discard, c); err != nil && !isReset(err) {
			t.Fatalf("answer to %q: %v", clip(resp), err)
		}
		if status := plainGET(t, addr, sane.Listener.Addr().String()); status != 200 {
			t.Fatalf("after %q a plain GET got %d", clip(resp), status)
		}
	})
}
