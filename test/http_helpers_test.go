package test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// origin is a local HTTP origin for the proxy tests. It answers:
//
//	/echo        method, body sha256 and length, and the request fields it saw (as X-Seen-*)
//	/bytes/N     N deterministic bytes with Content-Length
//	/chunked/N   N deterministic bytes, chunked (flushed in 4 KiB pieces)
//	/drip/N      N deterministic bytes with Content-Length, at 1 MB/s in 64 KiB pieces
//	/silent      nothing, ever (for timeouts)
type origin struct {
	srv      *httptest.Server
	requests atomic.Int64 // requests that reached a handler
	conns    atomic.Int64 // connections accepted

	mu   sync.Mutex
	seen []*http.Request
}

func startOrigin(t testing.TB, tlsOn bool) *origin {
	t.Helper()
	o := &origin{}
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		for name, vs := range r.Header {
			w.Header().Set("X-Seen-"+name, strings.Join(vs, " | "))
		}
		w.Header().Set("X-Seen-Host", r.Host)
		w.Header().Set("X-Method", r.Method)
		w.Header().Set("X-Body-Sha256", hex.EncodeToString(h.Sum(nil)))
		w.Header().Set("X-Body-Length", strconv.FormatInt(n, 10))
		w.Header().Set("X-Chunked", strconv.FormatBool(len(r.TransferEncoding) > 0))
		fmt.Fprintf(w, "%s %d\n", r.Method, n)
	})
	mux.HandleFunc("/bytes/", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/bytes/"))
		w.Header().Set("Content-Length", strconv.Itoa(n))
		_, _ = w.Write(pattern(n))
	})
	mux.HandleFunc("/drip/", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/drip/"))
		w.Header().Set("Content-Length", strconv.Itoa(n))
		body := pattern(n)
		tick := time.NewTicker(64 * time.Millisecond) // 64 KiB each: 1 MB/s
		defer tick.Stop()
		for len(body) > 0 {
			piece := body[:min(len(body), 64<<10)]
			if _, err := w.Write(piece); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			body = body[len(piece):]
			select {
			case <-tick.C:
			case <-r.Context().Done():
				return
			}
		}
	})
	mux.HandleFunc("/chunked/", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/chunked/"))
		b := pattern(n)
		for len(b) > 0 {
			k := min(4096, len(b))
			_, _ = w.Write(b[:k])
			w.(http.Flusher).Flush()
			b = b[k:]
		}
	})
	mux.HandleFunc("/silent", func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	})
	o.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.requests.Add(1)
		o.mu.Lock()
		o.seen = append(o.seen, r)
		o.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	o.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			o.conns.Add(1)
		}
	}
	if tlsOn {
		o.srv.StartTLS()
	} else {
		o.srv.Start()
	}
	t.Cleanup(o.srv.Close)
	return o
}

// hostPort returns the origin's 127.0.0.1:PORT.
func (o *origin) hostPort() string { return o.srv.Listener.Addr().String() }

func (o *origin) port() string {
	_, p, _ := net.SplitHostPort(o.hostPort())
	return p
}

// pattern returns n bytes that differ from one position to the next.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// startHTTPProxy starts `sluice http-proxy args... 127.0.0.1:0`.
func startHTTPProxy(t testing.TB, args ...string) *sluiceProc {
	t.Helper()
	return startSluice(t, append(append([]string{"http-proxy", "--loops", "2"}, args...), "127.0.0.1:0")...)
}

// curlResult is what one curl run printed.
type curlResult struct {
	body    []byte
	headers string // every response head curl saw (-D -)
	status  int
	stderr  string
	err     error
}

// runCurl runs curl through the proxy p with args and returns its output.
func runCurl(t testing.TB, p *sluiceProc, args ...string) curlResult {
	t.Helper()
	curl := requireTool(t, "curl", "curl")
	dir := t.TempDir()
	hdr := filepath.Join(dir, "headers")
	all := append([]string{"-sS", "--max-time", "20", "--proxy", "http://" + p.addr, "-D", hdr, "-w", "%{http_code}", "-o", filepath.Join(dir, "body")}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, curl, all...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := curlResult{stderr: stderr.String(), err: err}
	res.status, _ = strconv.Atoi(strings.TrimSpace(stdout.String()))
	res.body, _ = os.ReadFile(filepath.Join(dir, "body"))
	h, _ := os.ReadFile(hdr)
	res.headers = string(h)
	return res
}

// header returns the value of field name in the last head of r.headers.
func (r curlResult) header(name string) string {
	heads := strings.Split(strings.TrimSpace(r.headers), "\r\n\r\n")
	last := heads[len(heads)-1]
	for _, line := range strings.Split(last, "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// rawExchange sends raw bytes to the proxy and returns everything it
// answers until it closes (or 5 s pass).
func rawExchange(t testing.TB, p *sluiceProc, req string) string {
	t.Helper()
	c := p.dial(t)
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatalf("write: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(c)
	return string(b)
}

// statusOf returns the status code of the first response in raw.
func statusOf(raw string) int {
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(raw)), nil)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// writeFile writes b to a new file in a test directory and returns its path.
func writeFile(t testing.TB, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
