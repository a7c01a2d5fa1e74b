package test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// cacheCase is how the cache test origin answers /c/NAME.
type cacheCase struct {
	status  int
	fields  []string // "Name: value"; {now} and {old} become HTTP dates (now, 10 days ago)
	body    []byte
	chunked bool
	delay   time.Duration
	reval   []string // fields a 304 sets instead of those in fields
}

// cacheOrigin is a local origin that counts, per path, the requests it
// gets and those that were revalidations (If-None-Match or
// If-Modified-Since). A revalidation that matches the case's ETag or
// Last-Modified gets 304; a request with "X-Change: no-store" gets the
// body with Cache-Control: no-store. While failing is set, every request
// gets 503.
type cacheOrigin struct {
	srv     *httptest.Server
	failing atomic.Bool
	old     string // Last-Modified of {old}
	mu      sync.Mutex
	cases   map[string]cacheCase
	hits    map[string]int
	reval   map[string]int
}

func startCacheOrigin(t *testing.T, cases map[string]cacheCase) *cacheOrigin {
	t.Helper()
	o := &cacheOrigin{cases: cases, hits: map[string]int{}, reval: map[string]int{},
		old: time.Now().Add(-240 * time.Hour).UTC().Format(http.TimeFormat)}
	o.srv = httptest.NewServer(http.HandlerFunc(o.serve))
	t.Cleanup(o.srv.Close)
	return o
}

func (o *cacheOrigin) serve(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/c/")
	_, _ = io.Copy(io.Discard, r.Body)
	o.mu.Lock()
	cc, ok := o.cases[name]
	if r.Method == "GET" || r.Method == "HEAD" {
		o.hits[name]++
	} else {
		o.hits[r.Method+" "+name]++
	}
	inm, ims := r.Header.Get("If-None-Match"), r.Header.Get("If-Modified-Since")
	if inm != "" || ims != "" {
		o.reval[name]++
	}
	o.mu.Unlock()
	if o.failing.Load() {
		http.Error(w, "origin down", 503)
		return
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	time.Sleep(cc.delay)
	if r.Header.Get("X-Change") == "no-store" {
		// The resource changed and may no longer be stored.
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Length", strconv.Itoa(len(cc.body)))
		w.WriteHeader(cc.status)
		_, _ = w.Write(cc.body)
		return
	}
	notModified := false
	for _, f := range cc.fields {
		k, v, _ := strings.Cut(f, ": ")
		v = strings.ReplaceAll(v, "{now}", time.Now().UTC().Format(http.TimeFormat))
		v = strings.ReplaceAll(v, "{old}", o.old)
		w.Header().Add(k, v)
		if strings.EqualFold(k, "ETag") && inm == v || strings.EqualFold(k, "Last-Modified") && inm == "" && ims == v {
			notModified = true
		}
	}
	if notModified {
		for _, f := range cc.reval {
			k, v, _ := strings.Cut(f, ": ")
			w.Header().Set(k, v)
		}
		w.WriteHeader(304)
		return
	}
	if !cc.chunked {
		w.Header().Set("Content-Length", strconv.Itoa(len(cc.body)))
	}
	w.WriteHeader(cc.status)
	if cc.chunked {
		w.(http.Flusher).Flush() // chunked even when the body is empty
		for b := cc.body; len(b) > 0; {
			k := min(5000, len(b))
			_, _ = w.Write(b[:k])
			w.(http.Flusher).Flush()
			b = b[k:]
		}
		return
	}
	_, _ = w.Write(cc.body)
}

func (o *cacheOrigin) counts(name string) (hits, reval int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.hits[name], o.reval[name]
}

func (o *cacheOrigin) url(name string) string { return o.srv.URL + "/c/" + name }

// proxyClient is a Go client through the proxy at addr that neither
// follows redirects nor asks for compression.
func proxyClient(addr string) *http.Client {
	pu := &url.URL{Scheme: "http", Host: addr}
	return &http.Client{
		Transport:     &http.Transport{Proxy: http.ProxyURL(pu), DisableCompression: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       20 * time.Second,
	}
}

type cacheReply struct {
	status int
	header http.Header
	body   []byte
}

func fetch(t *testing.T, c *http.Client, method, u string, fields ...string) cacheReply {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fields {
		k, v, _ := strings.Cut(f, ": ")
		req.Header.Add(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, u, err)
	}
	return cacheReply{resp.StatusCode, resp.Header, b}
}

// startCachingDaemon runs `sluice run` with one http_proxy on listen with
// the given extra option lines.
func startCachingDaemon(t *testing.T, cfg *daemonConfig, listen string, lines ...string) *sluiceProc {
	t.Helper()
	cfg.write(t, httpSection("web", listen, lines...))
	p := startSluice(t, "run", "-c", cfg.path)
	p.addr = listen
	return p
}

// TestHTTPCacheTable sends each origin response shape through a caching
// `sluice run` and counts how often the origin is asked: what is stored,
// served, revalidated (with the stored validators, answered 304) or
// passed. Every body is checked byte for byte.
func TestHTTPCacheTable(t *testing.T) {
	body := func(name string, n int) []byte {
		b := pattern(n)
		copy(b, name)
		return b
	}
	type step struct {
		method string
		fields []string
		sleep  time.Duration
	}
	get := step{method: "GET"}
	with := func(f ...string) step { return step{method: "GET", fields: f} }
	tests := []struct {
		name      string
		c         cacheCase
		steps     []step
		hits, rev int
	}{
		{"max-age", cacheCase{status: 200, fields: []string{"Cache-Control: max-age=60"}}, []step{get, get, get}, 1, 0},
		{"s-maxage", cacheCase{status: 200, fields: []string{"Cache-Control: max-age=0, s-maxage=60"}}, []step{get, get}, 1, 0},
		{"no-store", cacheCase{status: 200, fields: []string{"Cache-Control: no-store, max-age=60"}}, []step{get, get, get}, 3, 0},
		{"private", cacheCase{status: 200, fields: []string{"Cache-Control: private, max-age=60"}}, []step{get, get}, 2, 0},
		{"no-cache-etag", cacheCase{status: 200, fields: []string{"Cache-Control: no-cache", `ETag: "v1"`}}, []step{get, get, get}, 3, 2},
		{"must-revalidate-lm", cacheCase{status: 200, fields: []string{"Cache-Control: max-age=0, must-revalidate", "Last-Modified: {old}"}}, []step{get, get}, 2, 1},
		{"proxy-revalidate", cacheCase{status: 200, fields: []string{"Cache-Control: max-age=0, proxy-revalidate", `ETag: "p"`}}, []step{get, with("Cache-Control: max-stale=600")}, 2, 1},
		{"expires", cacheCase{status: 200, fields: []string{"Date: {now}", "Expires: " + time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)}}, []step{get, get}, 1, 0},
		{"expires-past", cacheCase{status: 200, fields: []string{"Date: {now}", "Expires: Thu, 01 Jan 2015 00:00:00 GMT"}}, []step{get, get}, 2, 0},
		{"heuristic", cacheCase{status: 200, fields: []string{"Last-Modified: {old}"}}, []step{get, get}, 1, 0},
		{"heuristic-404", cacheCase{status: 404, fields: []string{"Last-Modified: {old}"}}, []step{get, get}, 1, 0},
		{"410", cacheCase{status: 410, fields: []string{"Cache-Control: max-age=60"}}, []step{get, get}, 1, 0},
		{"301", cacheCase{status: 301, fields: []string{"Cache-Control: max-age=60", "Location: /elsewhere"}}, []step{get, get}, 1, 0},
		{"203", cacheCase{status: 203, fields: []string{"Cache-Control: max-age=60"}}, []step{get, get}, 1, 0},
		{"302-not-stored", cacheCase{status: 302, fields: []string{"Cache-Control: max-age=60", "Location: /x"}}, []step{get, get}, 2, 0},
		{"500-not-stored", cacheCase{status: 500, fields: []string{"Cache-Control: max-age=60"}}, []step{get, get}, 2, 0},
		{"no-freshness", cacheCase{status: 200, fields: []string{`ETag: "n"`}}, []step{get, get}, 2, 0},
		{"set-cookie", cacheCase{status: 200, fields: []string{"Cache-Control: max-age=60", "Set-Cookie: a=b"}}, []step{get, get}, 2, 0},
		{"authorization", cacheCase{status: 200, fields: []string{"Cache-Control: max-age=60"}}, []step{with("Authorization: Basic eDp5"), with("Authorization: Basic eDp5")}, 2, 0},
		{"authorization-public", cacheCase{status: 200, fields: []string{"Cache-Control: public, max-age=60"}}, []step{with("Authorization: Basic eDp5"), get, with("Authorization: Basic eDp5")}, 1, 0},
		{"vary", cacheCase{status: 200, fields: []string{"Cache-Control: max-age=60", "Vary: Accept-Language"}},
			[]step{with("Accept-Language: en"), with("Accept-Language: de"), with("Accept-Language: en"), with("Accept-Language: de"), get}, 3, 0},
		{"vary-star", cacheCase{status: 200, fields: []string{"Cache-Control: max-age=60", "Vary: *"}}, []step{get, get}, 2, 0},
		{"client-no-cache", cacheCase{status: 200, fields: []string{"Cache-Control: max-age=60", `ETag: "c"`}}, []step{get, with("Cache-Control: no-cache"), get}, 2, 1},
		{"client-pragma", cacheCase{status: 200, fields: []string{"Cache-Control: max-age=60", `ETag: "c"`}}, []step{get, with("Pragma: no-cache"), get}, 2, 1},
		{"client-max-age-0", cacheCase{status: 200, fields: []string{"Cache-Control: max-age=60", "Last-Modified: {old}"}}, []step{get, with("Cache-Control: max-age=0"), get}, 2, 1},
		{"client-no-store", cacheCase{status: 200, fields: []string{"Cache-Control: max-age=60"}}, []step{with("Cache-Control: no-store"), get, with("Cache-Control: no-store"), get}, 3, 0},
		{"stale", cacheCase{status: 200, fields: []string{"Cache-Control: max-age=1"}}, []step{get, {method: "GET", sleep: 2100 * time.Millisecond}}, 2, 0},
		{"reval-now-no-store", cacheCase{status: 200, fields: []string{"Cache-Control: max-age=0", `ETag: "n1"`}}, []step{get, with(`X-Change: no-store`), get}, 3, 1},
		{"stale-etag", cacheCase{status: 200, fields: []string{"Cache-Control: max-age=1", `ETag: "s"`}, reval: []string{"Cache-Control: max-age=600"}}, []step{get, {method: "GET", sleep: 2100 * time.Millisecond}, get}, 2, 1},
		{"chunked", cacheCase{status: 200, fields: []string{"Cache-Control: max-age=60"}, chunked: true}, []step{get, get}, 1, 0},
		{"over-max-object", cacheCase{status: 200, fields: []string{"Cache-Control: max-age=60"}}, []step{get, get}, 2, 0},
		{"over-max-object-chunked", cacheCase{status: 200, fields: []string{"Cache-Control: max-age=60"}, chunked: true}, []step{get, get}, 2, 0},
		{"empty-chunked", cacheCase{status: 200, fields: []string{"Cache-Control: max-age=60", `ETag: "e"`}, chunked: true}, []step{get, get, with("Cache-Control: no-cache"), get}, 2, 1},
		{"head-from-get", cacheCase{status: 200, fields: []string{"Cache-Control: max-age=60"}}, []step{get, {method: "HEAD"}}, 1, 0},
	}
	cases := map[string]cacheCase{}
	for _, tt := range tests {
		n := 3000 + len(tt.name)*1000
		switch {
		case strings.HasPrefix(tt.name, "over-max-object"):
			n = 200 << 10
		case strings.HasPrefix(tt.name, "empty"):
			n = 0
		}
		tt.c.body = body(tt.name, n)
		cases[tt.name] = tt.c
	}
	o := startCacheOrigin(t, cases)
	cfg := newDaemonConfig(t)
	p := startCachingDaemon(t, cfg, "127.0.0.1:24100", "option cache_size '8M'", "option cache_max_object '100K'")
	client := proxyClient(p.addr)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := cases[tt.name]
			for i, s := range tt.steps {
				time.Sleep(s.sleep)
				r := fetch(t, client, s.method, o.url(tt.name), s.fields...)
				if r.status != want.status {
					t.Errorf("request %d: status %d, want %d", i, r.status, want.status)
				}
				wantBody := want.body
				if s.method == "HEAD" {
					wantBody = nil
					if cl := r.header.Get("Content-Length"); cl != strconv.Itoa(len(want.body)) {
						t.Errorf("HEAD: Content-Length %q, want %d", cl, len(want.body))
					}
				}
				if sha(r.body) != sha(wantBody) {
					t.Errorf("request %d: body of %d bytes differs from the origin's %d", i, len(r.body), len(wantBody))
				}
			}
			hits, rev := o.counts(tt.name)
			if hits != tt.hits || rev != tt.rev {
				t.Errorf("origin asked %d times (%d revalidations), want %d (%d)", hits, rev, tt.hits, tt.rev)
			}
		})
	}
}

// TestHTTPCacheAgeAndConditional checks the Age of hits, a client's own
// conditional request answered 304 by the cache, and curl as a client.
func TestHTTPCacheAgeAndConditional(t *testing.T) {
	o := startCacheOrigin(t, map[string]cacheCase{
		"aged": {status: 200, fields: []string{"Date: {now}", "Cache-Control: max-age=600", "Age: 10", `ETag: "a1"`, "Last-Modified: {old}"}, body: pattern(50000)},
	})
	cfg := newDaemonConfig(t)
	p := startCachingDaemon(t, cfg, "127.0.0.1:24110", "option cache_size '1M'")
	r := runCurl(t, p, o.url("aged"))
	if r.status != 200 || sha(r.body) != sha(pattern(50000)) || r.header("Age") != "10" {
		t.Fatalf("miss: status %d, %d bytes, Age %q", r.status, len(r.body), r.header("Age"))
	}
	time.Sleep(1100 * time.Millisecond)
	r = runCurl(t, p, o.url("aged"))
	age, _ := strconv.Atoi(r.header("Age"))
	if r.status != 200 || sha(r.body) != sha(pattern(50000)) || age < 11 || age > 30 {
		t.Errorf("hit: status %d, %d bytes, Age %q (want 11 or a little more)", r.status, len(r.body), r.header("Age"))
	}
	if !strings.Contains(r.header("Via"), "sluice") {
		t.Errorf("hit without Via: %q", r.headers)
	}
	r = runCurl(t, p, "-H", `If-None-Match: "a1"`, o.url("aged"))
	if r.status != 304 || len(r.body) != 0 || r.header("ETag") != `"a1"` {
		t.Errorf("If-None-Match matching: status %d, %d bytes, ETag %q", r.status, len(r.body), r.header("ETag"))
	}
	r = runCurl(t, p, "-H", "If-Modified-Since: "+time.Now().UTC().Format(http.TimeFormat), o.url("aged"))
	if r.status != 304 {
		t.Errorf("If-Modified-Since after Last-Modified: status %d", r.status)
	}
	r = runCurl(t, p, "-H", `If-None-Match: "other"`, o.url("aged"))
	if r.status != 200 || sha(r.body) != sha(pattern(50000)) {
		t.Errorf("If-None-Match not matching: status %d, %d bytes", r.status, len(r.body))
	}
	if hits, _ := o.counts("aged"); hits != 1 {
		t.Errorf("origin asked %d times, want 1", hits)
	}
}

// TestHTTPCacheUnsafeInvalidates checks that a POST to a stored URL drops
// it.
func TestHTTPCacheUnsafeInvalidates(t *testing.T) {
	o := startCacheOrigin(t, map[string]cacheCase{"doc": {status: 200, fields: []string{"Cache-Control: max-age=600"}, body: pattern(1000)},
		"gone": {status: 404, fields: []string{"Cache-Control: max-age=600"}, body: []byte("not here")}})
	cfg := newDaemonConfig(t)
	p := startCachingDaemon(t, cfg, "127.0.0.1:24120", "option cache_size '1M'")
	c := proxyClient(p.addr)
	fetch(t, c, "GET", o.url("doc"))
	fetch(t, c, "GET", o.url("doc"))
	if hits, _ := o.counts("doc"); hits != 1 {
		t.Fatalf("before the POST: origin asked %d times, want 1", hits)
	}
	req, _ := http.NewRequest("POST", o.url("doc"), strings.NewReader("form=1"))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	fetch(t, c, "GET", o.url("doc"))
	if hits, _ := o.counts("doc"); hits != 2 {
		t.Errorf("after the POST: origin asked %d times for GET, want 2", hits)
	}
	for range 2 { // a stored 404: the second is a hit, and no error of sluice's
		if r := fetch(t, c, "GET", o.url("gone")); r.status != 404 || string(r.body) != "not here" {
			t.Errorf("stored 404: %d %q", r.status, r.body)
		}
	}
	// sluice stats: 2 hits, 3 misses (the POST is not a cacheable
	// request), 2 entries, no errors.
	st := daemonStats(t, cfg)
	var cache map[string]any
	for _, sv := range st["services"].([]any) {
		if m := sv.(map[string]any); m["type"] == "http_proxy" {
			cache, _ = m["cache"].(map[string]any)
			if m["refused"] != 0.0 {
				t.Errorf("errors counted for answers from the origin or the cache: %v", m)
			}
		}
	}
	if cache == nil || cache["hits"] != 2.0 || cache["misses"] != 3.0 || cache["mem_entries"] != 2.0 || cache["mem_bytes"].(float64) < 1000 {
		t.Errorf("cache stats: %v", cache)
	}
	if res := runSluice(t, "stats", "-c", cfg.path); !strings.Contains(res.stdout, "cache web: 2 hits, 0 revalidated, 3 misses; memory 2 entries") {
		t.Errorf("sluice stats lacks the cache line:\n%s", res.stdout)
	}
}

// TestHTTPCacheLRU fills a 64 KiB cache with 20 KB objects: the least
// recently used goes first.
func TestHTTPCacheLRU(t *testing.T) {
	cases := map[string]cacheCase{}
	for i := range 4 {
		cases[fmt.Sprint("o", i)] = cacheCase{status: 200, fields: []string{"Cache-Control: max-age=600"}, body: pattern(20000)}
	}
	o := startCacheOrigin(t, cases)
	cfg := newDaemonConfig(t)
	p := startCachingDaemon(t, cfg, "127.0.0.1:24130", "option cache_size '64K'")
	c := proxyClient(p.addr)
	for _, n := range []string{"o0", "o1", "o2", "o0", "o3"} { // o1 is the least recently used when o3 comes
		fetch(t, c, "GET", o.url(n))
	}
	for _, n := range []string{"o0", "o2", "o3", "o1"} {
		if r := fetch(t, c, "GET", o.url(n)); sha(r.body) != sha(pattern(20000)) {
			t.Errorf("%s: body differs", n)
		}
	}
	for n, want := range map[string]int{"o0": 1, "o1": 2, "o2": 1, "o3": 1} {
		if hits, _ := o.counts(n); hits != want {
			t.Errorf("%s: origin asked %d times, want %d", n, hits, want)
		}
	}
}

// TestHTTPCacheCollapsed sends 20 clients at once for an object the origin
// takes 500 ms to answer: the origin sees one request.
func TestHTTPCacheCollapsed(t *testing.T) {
	o := startCacheOrigin(t, map[string]cacheCase{
		"slow":     {status: 200, fields: []string{"Cache-Control: max-age=600"}, body: pattern(300000), delay: 500 * time.Millisecond},
		"slow-nos": {status: 200, fields: []string{"Cache-Control: no-store"}, body: pattern(1000), delay: 300 * time.Millisecond},
	})
	cfg := newDaemonConfig(t)
	p := startCachingDaemon(t, cfg, "127.0.0.1:24140", "option cache_size '4M'")
	for name, want := range map[string]int{"slow": 1, "slow-nos": 8} {
		n := 20
		if name == "slow-nos" {
			n = 8
		}
		var wg sync.WaitGroup
		sums := make([]string, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := fetch(t, proxyClient(p.addr), "GET", o.url(name))
				sums[i] = sha(r.body)
			}()
		}
		wg.Wait()
		for i, s := range sums {
			if s != sha(o.cases[name].body) {
				t.Errorf("%s: client %d got a different body", name, i)
			}
		}
		// An uncacheable answer sends every waiter to the origin itself.
		if hits, _ := o.counts(name); hits != want {
			t.Errorf("%s: origin asked %d times by %d clients, want %d", name, hits, n, want)
		}
	}
}

// TestHTTPCacheLimitedMissNotCollapsed: a miss fetched by a user limited
// to 100 KB/s does not make other clients wait on it (they would get that
// user's rate): an unlimited client that asks meanwhile fetches for itself,
// and those after it share that fetch or its stored answer. The limited
// user is a device known by its address on a proxy without auth, which
// gets its class's rate all the same.
func TestHTTPCacheLimitedMissNotCollapsed(t *testing.T) {
	body := pattern(300000)
	o := startCacheOrigin(t, map[string]cacheCase{
		"big": {status: 200, fields: []string{"Cache-Control: max-age=600"}, body: body},
	})
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg := newDaemonConfig(t)
	listen := "127.0.0.1:24145"
	cfg.write(t, fmt.Sprintf("config class 'slow'\n\toption rate_down '800kbit'\n\n"+
		"config user 'tv'\n\toption password '%s'\n\toption class 'slow'\n\tlist address '127.0.0.2/32'\n\n", hash)+
		httpSection("web", listen, "option cache_size '4M'"))
	p := startSluice(t, "run", "-c", cfg.path)
	p.addr = listen
	limited := proxyClient(listen)
	limited.Transport.(*http.Transport).DialContext = (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext
	slow := make(chan cacheReply, 1)
	var slowTook time.Duration
	go func() {
		start := time.Now()
		r := fetch(t, limited, "GET", o.url("big"))
		slowTook = time.Since(start)
		slow <- r
	}()
	time.Sleep(300 * time.Millisecond) // the limited fetch is under way
	start := time.Now()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := fetch(t, proxyClient(listen), "GET", o.url("big")); sha(r.body) != sha(body) {
				t.Errorf("unlimited client: status %d, %d bytes, not the body", r.status, len(r.body))
			}
		}()
	}
	wg.Wait()
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Errorf("unlimited clients took %v: they waited on the limited fetch (3 s at 100 KB/s)", took)
	}
	if r := <-slow; sha(r.body) != sha(body) {
		t.Errorf("limited client: status %d, %d bytes, not the body", r.status, len(r.body))
	}
	if slowTook < 2500*time.Millisecond || slowTook > 4*time.Second {
		t.Errorf("the limited client took %v for 300 KB at 100 KB/s, want about 3 s", slowTook)
	}
	if hits, _ := o.counts("big"); hits != 2 {
		t.Errorf("origin asked %d times, want 2 (the limited fetch and one for the others)", hits)
	}
}

// TestHTTPCacheStaleIfError: a stale entry whose revalidation fails (the
// origin answers 503, then is gone) is served stale when stale-if-error
// allows it, and the error is passed on when it does not.
func TestHTTPCacheStaleIfError(t *testing.T) {
	o := startCacheOrigin(t, map[string]cacheCase{
		"sie":  {status: 200, fields: []string{"Cache-Control: max-age=1, stale-if-error=60", `ETag: "e1"`}, body: pattern(20000)},
		"hard": {status: 200, fields: []string{"Cache-Control: max-age=1, stale-if-error=60, must-revalidate", `ETag: "h1"`}, body: pattern(100)},
		"none": {status: 200, fields: []string{"Cache-Control: max-age=1", `ETag: "n1"`}, body: pattern(100)},
	})
	cfg := newDaemonConfig(t)
	p := startCachingDaemon(t, cfg, "127.0.0.1:24147", "option cache_size '1M'")
	c := proxyClient(p.addr)
	for _, n := range []string{"sie", "hard", "none"} {
		fetch(t, c, "GET", o.url(n))
	}
	time.Sleep(1100 * time.Millisecond) // all stale now
	o.failing.Store(true)
	want := map[string]int{"sie": 200, "hard": 503, "none": 503}
	for n, status := range want {
		r := fetch(t, c, "GET", o.url(n))
		if r.status != status || status == 200 && (sha(r.body) != sha(o.cases[n].body) || r.header.Get("Age") == "") {
			t.Errorf("%s with the origin answering 503: %d, %d bytes, Age %q; want %d", n, r.status, len(r.body), r.header.Get("Age"), status)
		}
	}
	if _, err := p.waitLog(5*time.Second, "stale answer served", "why=\"status 503\""); err != nil {
		t.Error(err)
	}
	// The origin is gone: the connection is refused.
	o.srv.Close()
	want = map[string]int{"sie": 200, "hard": 502, "none": 502}
	for n, status := range want {
		r := fetch(t, c, "GET", o.url(n))
		if r.status != status || status == 200 && sha(r.body) != sha(o.cases[n].body) {
			t.Errorf("%s with the origin gone: %d, %d bytes; want %d", n, r.status, len(r.body), status)
		}
	}
	// A request may allow it where the response did not say.
	if r := fetch(t, c, "GET", o.url("none"), "Cache-Control: stale-if-error=600"); r.status != 200 || sha(r.body) != sha(o.cases["none"].body) {
		t.Errorf("none with the request's stale-if-error: %d, %d bytes", r.status, len(r.body))
	}
}

// TestHTTPCacheFilter checks that with body words on, text responses are
// not stored, a stored body with a blocked word is never served (memory,
// after a reload that turns the filter on, and disk, after a restart), and
// other types are cached as usual.
func TestHTTPCacheFilter(t *testing.T) {
	o := startCacheOrigin(t, map[string]cacheCase{
		"text-bad":  {status: 200, fields: []string{"Cache-Control: max-age=600", "Content-Type: text/html"}, body: []byte("<p>the casino</p>")},
		"text-ok":   {status: 200, fields: []string{"Cache-Control: max-age=600", "Content-Type: text/plain"}, body: []byte("harmless")},
		"image-bad": {status: 200, fields: []string{"Cache-Control: max-age=600", "Content-Type: image/png"}, body: []byte("casino")},
	})
	dir := t.TempDir()
	cfg := newDaemonConfig(t)
	listen := "127.0.0.1:24150"
	opts := []string{"option cache_size '1M'", "option cache_dir '" + dir + "'"}
	p := startCachingDaemon(t, cfg, listen, opts...)
	if res := runSluice(t, "check", "-c", cfg.path); !strings.Contains(res.stdout, "cache 1048576 bytes and "+dir) {
		t.Errorf("sluice check does not show the cache:\n%s", res.stdout)
	}
	c := proxyClient(p.addr)
	// Without the filter: stored in memory and on disk.
	if r := fetch(t, c, "GET", o.url("text-bad")); r.status != 200 {
		t.Fatalf("text-bad without the filter: %d", r.status)
	}
	waitFiles(t, dir, 1)

	cfg.write(t, httpSection("web", listen, append(opts, "list block_word 'casino'")...))
	reload(t, p, c)
	c = proxyClient(p.addr) // live connections keep the old settings
	for range 2 {
		if r := fetch(t, c, "GET", o.url("text-bad")); r.status != 403 || strings.Contains(string(r.body), "casino") {
			t.Errorf("text-bad with the filter: %d %q", r.status, r.body)
		}
		if r := fetch(t, c, "GET", o.url("text-ok")); r.status != 200 || string(r.body) != "harmless" {
			t.Errorf("text-ok: %d %q", r.status, r.body)
		}
		if r := fetch(t, c, "GET", o.url("image-bad")); r.status != 200 || string(r.body) != "casino" {
			t.Errorf("image-bad: %d %q", r.status, r.body)
		}
	}
	// The reload kept the cache: the memory copy of text-bad was scanned
	// and blocked, the origin not asked again.
	for n, want := range map[string]int{"text-bad": 1, "text-ok": 2, "image-bad": 1} {
		if hits, _ := o.counts(n); hits != want {
			t.Errorf("%s: origin asked %d times, want %d", n, hits, want)
		}
	}
	// After a restart only the disk copy is left, which cannot be scanned
	// on its way out: it is fetched again, and blocked.
	c.CloseIdleConnections()
	p.signal(syscall.SIGTERM)
	if code, _, err := p.waitExit(10 * time.Second); err != nil || code != 0 {
		t.Fatalf("after SIGTERM: exit %d, %v", code, err)
	}
	p = startCachingDaemon(t, cfg, listen, append(opts, "list block_word 'casino'")...)
	c = proxyClient(p.addr)
	if r := fetch(t, c, "GET", o.url("text-bad")); r.status != 403 || strings.Contains(string(r.body), "casino") {
		t.Errorf("text-bad from disk with the filter: %d %q", r.status, r.body)
	}
	if hits, _ := o.counts("text-bad"); hits != 2 {
		t.Errorf("text-bad after the restart: origin asked %d times, want 2", hits)
	}
}

// TestHTTPCacheKeptOnReload: a reload that changes a proxy's other
// options keeps its cache (the object is still a hit); one that changes
// the cache's own options starts a new one.
func TestHTTPCacheKeptOnReload(t *testing.T) {
	o := startCacheOrigin(t, map[string]cacheCase{"doc": {status: 200, fields: []string{"Cache-Control: max-age=600"}, body: pattern(3000)}})
	cfg := newDaemonConfig(t)
	listen := "127.0.0.1:24148"
	p := startCachingDaemon(t, cfg, listen, "option cache_size '1M'")
	c := proxyClient(p.addr)
	fetch(t, c, "GET", o.url("doc"))
	for i, lines := range [][]string{
		{"option cache_size '1M'", "option idle_timeout '30s'"}, // kept
		{"option cache_size '2M'", "option idle_timeout '30s'"}, // a new cache
	} {
		cfg.write(t, httpSection("web", listen, lines...))
		p.signal(syscall.SIGHUP)
		deadline := time.Now().Add(5 * time.Second)
		for len(p.stderr.matching("msg=reloaded")) <= i {
			if time.Now().After(deadline) {
				t.Fatalf("reload %d not logged", i+1)
			}
			time.Sleep(20 * time.Millisecond)
		}
		c.CloseIdleConnections()
		if r := fetch(t, c, "GET", o.url("doc")); sha(r.body) != sha(o.cases["doc"].body) {
			t.Fatalf("after reload %d: %d, %d bytes", i+1, r.status, len(r.body))
		}
		if hits, _ := o.counts("doc"); hits != i+1 {
			t.Errorf("after reload %d (%q): origin asked %d times, want %d", i+1, lines, hits, i+1)
		}
	}
}

// reload sends SIGHUP and waits for the reload; c's idle connections
// (served by the old settings until they close) are closed.
func reload(t *testing.T, p *sluiceProc, c *http.Client) {
	t.Helper()
	p.signal(syscall.SIGHUP)
	if _, err := p.waitLog(5*time.Second, "msg=reloaded"); err != nil {
		t.Fatal(err)
	}
	c.CloseIdleConnections()
}

// waitFiles waits until dir holds n cache files (the disk copy is written
// in the background).
func waitFiles(t *testing.T, dir string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		files, _ := filepath.Glob(filepath.Join(dir, "*.sc"))
		if len(files) >= n || time.Now().After(deadline) {
			if len(files) < n {
				t.Fatalf("%d cache files in %s, want %d", len(files), dir, n)
			}
			return files
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// diskCache is a caching `sluice run` with a memory cache and a disk
// directory, which a test stops and starts again on the same config.
type diskCache struct {
	t      *testing.T
	dir    string
	cfg    *daemonConfig
	listen string
	opts   []string
	p      *sluiceProc
	c      *http.Client
}

// startDiskCache starts sluice on listen with a 4M memory cache, a fresh
// cache_dir and the extra options.
func startDiskCache(t *testing.T, listen string, extra ...string) *diskCache {
	t.Helper()
	d := &diskCache{t: t, dir: t.TempDir(), cfg: newDaemonConfig(t), listen: listen}
	d.opts = append([]string{"option cache_size '4M'", "option cache_dir '" + d.dir + "'"}, extra...)
	d.start()
	return d
}

func (d *diskCache) start() {
	d.t.Helper()
	d.p = startCachingDaemon(d.t, d.cfg, d.listen, d.opts...)
	d.c = proxyClient(d.p.addr)
}

// stop ends sluice with SIGTERM, which must exit 0.
func (d *diskCache) stop() {
	d.t.Helper()
	d.c.CloseIdleConnections()
	d.p.signal(syscall.SIGTERM)
	if code, _, err := d.p.waitExit(10 * time.Second); err != nil || code != 0 {
		d.t.Fatalf("after SIGTERM: exit %d, %v", code, err)
	}
}

// TestHTTPCacheRange: a Range request for a stored 200 is answered from
// the cache with a 206 of exactly that part (from memory, and from disk by
// sendfile after a restart), past the end with 416, and with the whole
// 200 for several ranges or an If-Range that names another version; a
// Range request for something not stored goes to the origin and stores
// nothing.
func TestHTTPCacheRange(t *testing.T) {
	body := pattern(100000)
	o := startCacheOrigin(t, map[string]cacheCase{
		"obj":   {status: 200, fields: []string{"Cache-Control: max-age=600", `ETag: "r1"`, "Date: {now}", "Last-Modified: {old}"}, body: body},
		"other": {status: 200, fields: []string{"Cache-Control: max-age=600"}, body: pattern(5000)},
	})
	d := startDiskCache(t, "127.0.0.1:24165")
	if r := fetch(t, d.c, "GET", o.url("obj")); r.status != 200 || sha(r.body) != sha(body) {
		t.Fatalf("first GET: %d, %d bytes", r.status, len(r.body))
	}
	waitFiles(t, d.dir, 1)
	check := func(where string) {
		t.Helper()
		tests := []struct {
			fields       []string
			status       int
			part         []byte
			contentRange string
		}{
			{[]string{"Range: bytes=100-199"}, 206, body[100:200], "bytes 100-199/100000"},
			{[]string{"Range: bytes=-10"}, 206, body[99990:], "bytes 99990-99999/100000"},
			{[]string{"Range: bytes=99000-"}, 206, body[99000:], "bytes 99000-99999/100000"},
			{[]string{"Range: bytes=0-0", `If-Range: "r1"`}, 206, body[:1], "bytes 0-0/100000"},
			{[]string{"Range: bytes=0-0", `If-Range: "r0"`}, 200, body, ""},
			{[]string{"Range: bytes=0-1,5-6"}, 200, body, ""},
			{[]string{"Range: bytes=200000-"}, 416, nil, "bytes */100000"},
		}
		for _, tt := range tests {
			r := fetch(t, d.c, "GET", o.url("obj"), tt.fields...)
			if r.status != tt.status || sha(r.body) != sha(tt.part) || r.header.Get("Content-Range") != tt.contentRange {
				t.Errorf("%s %q: %d, %d bytes, Content-Range %q; want %d, %d bytes, %q", where, tt.fields, r.status,
					len(r.body), r.header.Get("Content-Range"), tt.status, len(tt.part), tt.contentRange)
			}
		}
		if hits, _ := o.counts("obj"); hits != 1 {
			t.Errorf("%s: origin asked %d times, want 1", where, hits)
		}
	}
	check("memory")

	// Not stored: a Range request goes to the origin and stores nothing.
	fetch(t, d.c, "GET", o.url("other"), "Range: bytes=0-9")
	fetch(t, d.c, "GET", o.url("other"))
	if hits, _ := o.counts("other"); hits != 2 {
		t.Errorf("other: origin asked %d times, want 2 (a Range miss is not stored)", hits)
	}

	// From disk after a restart: the first hits go by sendfile from an
	// offset in the file.
	d.stop()
	d.start()
	r := fetch(t, d.c, "GET", o.url("obj"), "Range: bytes=50000-50099")
	if r.status != 206 || sha(r.body) != sha(body[50000:50100]) {
		t.Errorf("disk: Range 50000-50099: %d, %d bytes", r.status, len(r.body))
	}
	check("disk")
}

// TestHTTPCacheDisk checks the disk store: objects survive a restart and
// are served from disk without the origin (byte-exact, Content-Length and
// chunked originals), a truncated file is discarded at start, and a
// reload that denies the origin's address answers 403, not the stored
// object.
func TestHTTPCacheDisk(t *testing.T) {
	o := startCacheOrigin(t, map[string]cacheCase{
		"big":     {status: 200, fields: []string{"Cache-Control: max-age=600", `ETag: "b"`}, body: pattern(700000)},
		"chunked": {status: 200, fields: []string{"Cache-Control: max-age=600"}, body: pattern(123457), chunked: true},
	})
	d := startDiskCache(t, "127.0.0.1:24160", "option cache_dir_size '10M'")
	for _, n := range []string{"big", "chunked"} {
		if r := fetch(t, d.c, "GET", o.url(n)); sha(r.body) != sha(o.cases[n].body) {
			t.Fatalf("%s: body differs", n)
		}
	}
	files := waitFiles(t, d.dir, 2)
	d.stop()

	d.start()
	for _, n := range []string{"big", "chunked", "big"} {
		r := fetch(t, d.c, "GET", o.url(n))
		if r.status != 200 || sha(r.body) != sha(o.cases[n].body) || r.header.Get("Age") == "" {
			t.Errorf("%s from disk: status %d, %d bytes (want %d), Age %q", n, r.status, len(r.body), len(o.cases[n].body), r.header.Get("Age"))
		}
	}
	for _, n := range []string{"big", "chunked"} {
		if hits, _ := o.counts(n); hits != 1 {
			t.Errorf("%s: origin asked %d times after the restart, want 1", n, hits)
		}
	}
	// The disk hits were promoted to memory for the next ones.
	var cs map[string]any
	for _, sv := range daemonStats(t, d.cfg)["services"].([]any) {
		if m, ok := sv.(map[string]any)["cache"].(map[string]any); ok {
			cs = m
		}
	}
	if cs == nil || cs["mem_entries"] != 2.0 || cs["disk_entries"] != 2.0 || cs["hits"] != 3.0 {
		t.Errorf("cache after the restart (want 2 entries promoted to memory, 3 hits): %v", cs)
	}
	d.stop()

	// Truncate the big object's file: discarded at start, fetched again.
	var big string
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil && fi.Size() > 700000 {
			big = f
		}
	}
	if big == "" {
		t.Fatalf("no file of the big object among %v", files)
	}
	if err := os.Truncate(big, 1000); err != nil {
		t.Fatal(err)
	}
	d.start()
	if _, err := d.p.waitLog(5*time.Second, "discarding a disk entry"); err != nil {
		t.Error(err)
	}
	if r := fetch(t, d.c, "GET", o.url("big")); sha(r.body) != sha(o.cases["big"].body) {
		t.Error("big after truncation: body differs")
	}
	if hits, _ := o.counts("big"); hits != 2 {
		t.Errorf("big: origin asked %d times after truncation, want 2", hits)
	}

	// A denied address is never answered from the cache.
	d.cfg.write(t, httpSection("web", d.listen, append(d.opts, "list rule 'deny dest 127.0.0.0/8'")...))
	reload(t, d.p, d.c)
	c := proxyClient(d.p.addr) // live connections keep the old settings
	if r := fetch(t, c, "GET", o.url("chunked")); r.status != 403 {
		t.Errorf("stored object behind a deny rule: status %d, want 403", r.status)
	}
}

// TestHTTPCacheFlagsAndBodies runs `sluice http-proxy --cache-size`: a
// hit needs no origin, and a GET with a body is never answered from the
// cache (its body would be read as the next request).
func TestHTTPCacheFlagsAndBodies(t *testing.T) {
	o := startCacheOrigin(t, map[string]cacheCase{"doc": {status: 200, fields: []string{"Cache-Control: max-age=600"}, body: pattern(4000)}})
	p := startHTTPProxy(t, "--cache-size", "1M", "--cache-max-object", "10K")
	c := proxyClient(p.addr)
	for range 3 {
		if r := fetch(t, c, "GET", o.url("doc")); r.status != 200 || sha(r.body) != sha(pattern(4000)) {
			t.Fatalf("GET: %d, %d bytes", r.status, len(r.body))
		}
	}
	if hits, _ := o.counts("doc"); hits != 1 {
		t.Fatalf("origin asked %d times, want 1", hits)
	}
	u := o.url("doc")
	raw := rawExchange(t, p, "GET "+u+" HTTP/1.1\r\nHost: "+o.srv.Listener.Addr().String()+"\r\nContent-Length: 40\r\n\r\n"+
		"GET /c/doc HTTP/1.1\r\nHost: x\r\nX-A: b\r\n\r\n"[:40]+"GET "+u+" HTTP/1.1\r\nHost: "+o.srv.Listener.Addr().String()+"\r\nConnection: close\r\n\r\n")
	if n := strings.Count(raw, "HTTP/1.1 200 OK"); n != 2 {
		t.Errorf("GET with a body, then a GET: %d responses of 200, want 2:\n%.300s", n, raw)
	}
	if hits, _ := o.counts("doc"); hits != 2 {
		t.Errorf("origin asked %d times, want 2 (the GET with a body goes to the origin)", hits)
	}
}

// TestConfigHTTPCacheErrors checks that bad cache options are reported
// with their file and line.
func TestConfigHTTPCacheErrors(t *testing.T) {
	cfg := newDaemonConfig(t)
	cfg.write(t, httpSection("web", "127.0.0.1:24170", "option cache_size 'lots'", "option cache_dir 'relative/dir'", "option cache_max_object '1T'"))
	res := runSluice(t, "check", "-c", cfg.path)
	if res.code == 0 {
		t.Fatalf("check accepted a bad file:\n%s", res.stdout)
	}
	text, err := os.ReadFile(cfg.path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(text), "\n")
	for _, opt := range []string{"cache_size", "cache_dir", "cache_max_object"} {
		line := 0
		for i, l := range lines {
			if strings.Contains(l, "option "+opt+" ") {
				line = i + 1
			}
		}
		want := fmt.Sprintf("sluice.conf:%d: http_proxy 'web': option '%s'", line, opt)
		if !strings.Contains(res.stderr, want) {
			t.Errorf("check output lacks %q:\n%s", want, res.stderr)
		}
	}
}

// TestHTTPCacheDiskRevalidate checks a stale disk entry after a restart:
// revalidated with its ETag, the 304 serves the body from disk and writes
// the new head (the 304 extends max-age), so the next request is a plain
// hit.
func TestHTTPCacheDiskRevalidate(t *testing.T) {
	o := startCacheOrigin(t, map[string]cacheCase{
		"short": {status: 200, fields: []string{"Cache-Control: max-age=1", `ETag: "s1"`}, body: pattern(200000),
			reval: []string{"Cache-Control: max-age=600"}},
	})
	d := startDiskCache(t, "127.0.0.1:24180")
	fetch(t, d.c, "GET", o.url("short"))
	waitFiles(t, d.dir, 1)
	d.stop()
	time.Sleep(1100 * time.Millisecond) // stale now
	d.start()
	for i := range 2 {
		if r := fetch(t, d.c, "GET", o.url("short")); r.status != 200 || sha(r.body) != sha(pattern(200000)) {
			t.Errorf("request %d after the restart: %d, %d bytes", i, r.status, len(r.body))
		}
		if i == 0 {
			time.Sleep(200 * time.Millisecond) // the new head is written in the background
		}
	}
	if hits, rev := o.counts("short"); hits != 2 || rev != 1 {
		t.Errorf("origin asked %d times (%d revalidations), want 2 (1)", hits, rev)
	}
}

// TestHTTPCacheDiskDamagedAfterStart truncates an indexed disk entry while
// sluice runs: the hit finds it short when opening it, logs it, fetches
// from the origin instead and stores the answer again.
func TestHTTPCacheDiskDamagedAfterStart(t *testing.T) {
	o := startCacheOrigin(t, map[string]cacheCase{"obj": {status: 200, fields: []string{"Cache-Control: max-age=600"}, body: pattern(90000)}})
	d := startDiskCache(t, "127.0.0.1:24190")
	fetch(t, d.c, "GET", o.url("obj"))
	files := waitFiles(t, d.dir, 1)
	d.stop()
	d.start()
	if err := os.Truncate(files[0], 500); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if r := fetch(t, d.c, "GET", o.url("obj")); r.status != 200 || sha(r.body) != sha(pattern(90000)) {
			t.Errorf("request %d: %d, %d bytes", i, r.status, len(r.body))
		}
	}
	if _, err := d.p.waitLog(5*time.Second, "cache file unusable"); err != nil {
		t.Error(err)
	}
	if hits, _ := o.counts("obj"); hits != 2 {
		t.Errorf("origin asked %d times, want 2 (once more for the damaged file, then hits again)", hits)
	}
}

// TestIntegrationHTTPCacheDirAfterDrop runs sluice as root with `option
// user 'nobody'`: the cache directory (and a file left in it by an
// earlier root run) belongs to nobody, so the disk store still writes
// after the privilege drop.
func TestIntegrationHTTPCacheDirAfterDrop(t *testing.T) {
	requireRoot(t)
	o := startCacheOrigin(t, map[string]cacheCase{"doc": {status: 200, fields: []string{"Cache-Control: max-age=600"}, body: pattern(5000)}})
	base := t.TempDir()
	for _, d := range []string{filepath.Dir(base), base} { // nobody must reach the cache
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(base, "cache")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(dir, "left-by-root")
	if err := os.WriteFile(old, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := newDaemonConfig(t)
	cfg.global = "\toption user 'nobody'\n"
	p := startCachingDaemon(t, cfg, "127.0.0.1:24195", "option cache_size '1M'", "option cache_dir '"+dir+"'")
	fetch(t, proxyClient(p.addr), "GET", o.url("doc"))
	files := waitFiles(t, dir, 1)
	for _, f := range append(files, dir, old) {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != 65534 {
			t.Errorf("%s belongs to uid %d, want nobody (65534)", f, uid)
		}
	}
}
