package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The HTTP figures' child processes: an origin server, a bulk source for
// CONNECT tunnels, and the load generators. They are written on raw
// sockets (a goroutine per connection, pre-built bytes, no net/http) so
// that the load side, pinned to one CPU, outruns every proxy: the
// "direct" rows show how far.

// originBody is the fixed body every origin response carries.
func originBody(size int) []byte {
	b := make([]byte, size)
	r := rand.NewChaCha8([32]byte{'s', 'l', 'u', 'i', 'c', 'e'})
	r.Read(b)
	for i := range b { // printable, so a proxy's text handling cannot differ
		b[i] = 'a' + b[i]%26
	}
	return b
}

// originCounts is what the origin answers on /__count: requests served in
// all and per path under /slow/.
type originCounts struct {
	Total int64            `json:"total"`
	Slow  map[string]int64 `json:"slow"`
}

// runOrigin serves GET on raw sockets: every path gets 200 with the same
// body and `Cache-Control: public, max-age=3600` (so a caching proxy may
// keep it); paths under /slow/ are answered after -slow; /__count answers
// the counts as JSON.
func runOrigin(args []string) error {
	fs := flag.NewFlagSet("httporigin", flag.ExitOnError)
	addr := fs.String("listen", "127.0.0.1:22000", "address")
	size := fs.Int("size", 100, "body bytes")
	slow := fs.Duration("slow", 300*time.Millisecond, "delay of /slow/ paths")
	fs.Parse(args)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	body := originBody(*size)
	var resp atomic.Pointer[[]byte]
	build := func() {
		b := fmt.Appendf(nil, "HTTP/1.1 200 OK\r\nDate: %s\r\nLast-Modified: Sun, 01 Nov 2026 00:00:00 GMT\r\nCache-Control: public, max-age=3600\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n",
			time.Now().UTC().Format("Mon, 02 Jan 2006 15:04:05 GMT"), len(body))
		b = append(b, body...)
		resp.Store(&b)
	}
	build()
	go func() {
		for range time.Tick(time.Second) {
			build()
		}
	}()
	var total atomic.Int64
	var mu sync.Mutex
	slowCounts := map[string]int64{}
	fmt.Println("ready")
	return serve(ln, func(c net.Conn) {
		r := bufio.NewReaderSize(c, 4096)
		for {
			path, n, err := readRequestHead(r)
			if err != nil {
				return
			}
			if n > 0 {
				if _, err := r.Discard(int(n)); err != nil {
					return
				}
			}
			switch {
			case path == "/__count":
				mu.Lock()
				j, _ := json.Marshal(originCounts{Total: total.Load(), Slow: maps.Clone(slowCounts)})
				mu.Unlock()
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nCache-Control: no-store\r\n\r\n%s", len(j), j)
				continue
			case strings.HasPrefix(path, "/slow/"):
				mu.Lock()
				slowCounts[path]++
				mu.Unlock()
				time.Sleep(*slow)
			}
			total.Add(1)
			if _, err := c.Write(*resp.Load()); err != nil {
				return
			}
		}
	})
}

// readRequestHead reads one request head and returns its path (the
// origin form of an absolute target too) and its Content-Length.
func readRequestHead(r *bufio.Reader) (path string, clen int64, err error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return "", 0, err
	}
	f := bytes.Fields(line)
	if len(f) != 3 {
		return "", 0, fmt.Errorf("bad request line %q", line)
	}
	target := f[1]
	if i := bytes.Index(target, []byte("://")); i >= 0 {
		target = target[i+3:]
		if j := bytes.IndexByte(target, '/'); j >= 0 {
			target = target[j:]
		}
	}
	path = string(target)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return "", 0, err
		}
		if len(line) <= 2 {
			return path, clen, nil
		}
		if name, value, ok := bytes.Cut(line, []byte(":")); ok && asciiEqualFold(name, "content-length") {
			clen, _ = strconv.ParseInt(string(bytes.TrimSpace(value)), 10, 64)
		}
	}
}

func asciiEqualFold(b []byte, s string) bool {
	return len(b) == len(s) && strings.EqualFold(string(b), s)
}

// runSource writes a fixed pseudo-random pattern to every connection until
// the peer goes: the far end of the CONNECT throughput figure.
func runSource(args []string) error {
	fs := flag.NewFlagSet("source", flag.ExitOnError)
	addr := fs.String("listen", "127.0.0.1:22001", "address")
	fs.Parse(args)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	pat := sourcePattern()
	fmt.Println("ready")
	return serve(ln, func(c net.Conn) {
		for {
			if _, err := c.Write(pat); err != nil {
				return
			}
		}
	})
}

// sourcePattern is what the source repeats: 256 KiB of ChaCha8 output.
func sourcePattern() []byte {
	b := make([]byte, 256<<10)
	rand.NewChaCha8([32]byte{'b', 'u', 'l', 'k'}).Read(b)
	return b
}

// sourceSum is the sha256 of the source's first n bytes (n a multiple of
// the pattern's length).
func sourceSum(n int) [32]byte {
	pat := sourcePattern()
	h := sha256.New()
	for range n / len(pat) {
		h.Write(pat)
	}
	return [32]byte(h.Sum(nil))
}

// httpLoadResult is what `bench httpload` prints.
type httpLoadResult struct {
	Requests int64   `json:"requests"`
	RPS      float64 `json:"rps"`
	P50      float64 `json:"p50_us"`
	P99      float64 `json:"p99_us"`
	P999     float64 `json:"p999_us"`
	Max      float64 `json:"max_us"`
	Errors   int64   `json:"errors"`
	Reconns  int64   `json:"reconnects"`
}

// getRequest is the request for path on origin, in absolute form through
// a proxy or origin form directly.
func getRequest(origin, path string, direct bool) []byte {
	target := "http://" + origin + path
	if direct {
		target = path
	}
	return []byte("GET " + target + " HTTP/1.1\r\nHost: " + origin + "\r\nUser-Agent: sluice-bench\r\nAccept: */*\r\n\r\n")
}

// readResponse reads one response with a Content-Length body into body's
// space (returned) and says whether the connection stays open.
func readResponse(r *bufio.Reader, body []byte) (status int, got []byte, keep bool, err error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return 0, nil, false, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, nil, false, fmt.Errorf("bad status line %q", line)
	}
	status, _ = strconv.Atoi(string(line[9:12]))
	keep = line[7] == '1'
	clen := -1
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return 0, nil, false, err
		}
		if len(line) <= 2 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		value = bytes.TrimSpace(value)
		switch {
		case asciiEqualFold(name, "content-length"):
			clen, _ = strconv.Atoi(string(value))
		case asciiEqualFold(name, "connection"), asciiEqualFold(name, "proxy-connection"):
			if bytes.EqualFold(value, []byte("close")) {
				keep = false
			} else if bytes.EqualFold(value, []byte("keep-alive")) {
				keep = true
			}
		}
	}
	if clen < 0 {
		return status, nil, false, errors.New("response without Content-Length")
	}
	if clen > len(body) {
		body = make([]byte, clen)
	}
	if _, err := io.ReadFull(r, body[:clen]); err != nil {
		return 0, nil, false, err
	}
	return status, body[:clen], keep, nil
}

// runHTTPLoad keeps -conns keep-alive connections each sending GET and
// reading the response, for -dur; paths cycle through -paths names.
func runHTTPLoad(args []string) error {
	fs := flag.NewFlagSet("httpload", flag.ExitOnError)
	addr := fs.String("addr", "", "proxy address (or the origin's, with -direct)")
	origin := fs.String("origin", "127.0.0.1:22000", "origin host:port")
	prefix := fs.String("path", "/obj/", "path prefix")
	paths := fs.Int("paths", 1, "distinct paths (prefix + number)")
	direct := fs.Bool("direct", false, "send origin-form requests (no proxy)")
	conns := fs.Int("conns", 32, "connections")
	dur := fs.Duration("dur", 3*time.Second, "duration")
	size := fs.Int("size", 100, "expected body size")
	fs.Parse(args)
	reqs := make([][]byte, *paths)
	for i := range reqs {
		reqs[i] = getRequest(*origin, *prefix+strconv.Itoa(i), *direct)
	}
	var mu sync.Mutex
	var all []time.Duration
	var errs, reconns atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(*dur)
	for w := range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c net.Conn
			var r *bufio.Reader
			served := 0 // responses read on c
			body := make([]byte, *size)
			lat := make([]time.Duration, 0, 1<<16)
			for i := w; time.Now().Before(deadline); i++ {
				if c == nil {
					var err error
					if c, err = net.DialTimeout("tcp", *addr, 2*time.Second); err != nil {
						errs.Add(1)
						time.Sleep(10 * time.Millisecond)
						continue
					}
					c.SetDeadline(deadline.Add(5 * time.Second))
					r = bufio.NewReaderSize(c, 16<<10)
					reconns.Add(1)
				}
				t0 := time.Now()
				_, err := c.Write(reqs[i%len(reqs)])
				var status int
				var got []byte
				keep := false
				if err == nil {
					status, got, keep, err = readResponse(r, body)
				}
				if err != nil && served > 0 && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)) {
					// The proxy closed a connection it had served on (no
					// keep-alive, though it did not say so): reconnect
					// and ask again, as browsers do.
					c.Close()
					c, served = nil, 0
					continue
				}
				if err != nil || status != 200 || len(got) != *size {
					errs.Add(1)
					c.Close()
					c, served = nil, 0
					continue
				}
				served++
				lat = append(lat, time.Since(t0))
				if !keep {
					c.Close()
					c, served = nil, 0
				}
			}
			if c != nil {
				c.Close()
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	pct := percentiles(all)
	return json.NewEncoder(os.Stdout).Encode(httpLoadResult{
		Requests: int64(len(all)), RPS: float64(len(all)) / elapsed.Seconds(),
		P50: pct(0.50), P99: pct(0.99), P999: pct(0.999), Max: pct(1), Errors: errs.Load(),
		Reconns: reconns.Load() - int64(*conns),
	})
}

// tunnelResult is what `bench tunnel` prints.
type tunnelResult struct {
	Bytes int64   `json:"bytes"`
	Gbps  float64 `json:"gbps"`
}

// dialTunnel connects to proxy and opens a CONNECT tunnel to target; with
// proxy empty it connects to target directly.
func dialTunnel(proxy, target string) (net.Conn, *bufio.Reader, error) {
	addr := proxy
	if proxy == "" {
		addr = target
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	r := bufio.NewReaderSize(c, 64<<10)
	if proxy == "" {
		return c, r, nil
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target); err != nil {
		c.Close()
		return nil, nil, err
	}
	line, err := r.ReadSlice('\n')
	if err == nil && !bytes.Contains(line, []byte(" 200")) {
		err = fmt.Errorf("CONNECT answered %q", bytes.TrimSpace(line))
	}
	for err == nil {
		if line, err = r.ReadSlice('\n'); len(line) <= 2 {
			break
		}
	}
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("CONNECT %s via %s: %w", target, proxy, err)
	}
	c.SetDeadline(time.Time{})
	return c, r, nil
}

// runTunnel reads from -conns tunnels to the source for -dur and prints
// the bytes received.
func runTunnel(args []string) error {
	fs := flag.NewFlagSet("tunnel", flag.ExitOnError)
	proxy := fs.String("proxy", "", "proxy address (empty: connect to the target directly)")
	target := fs.String("target", "127.0.0.1:22001", "source address")
	conns := fs.Int("conns", 1, "tunnels")
	dur := fs.Duration("dur", 3*time.Second, "duration")
	fs.Parse(args)
	var total atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, *conns)
	cs := make([]*bufio.Reader, 0, *conns)
	var closers []net.Conn
	for range *conns {
		c, r, err := dialTunnel(*proxy, *target)
		if err != nil {
			return err
		}
		cs, closers = append(cs, r), append(closers, c)
	}
	start := time.Now()
	for i, r := range cs {
		closers[i].SetReadDeadline(start.Add(*dur))
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256<<10)
			for {
				n, err := r.Read(buf)
				total.Add(int64(n))
				if err != nil {
					var ne net.Error
					if !errors.As(err, &ne) || !ne.Timeout() {
						errc <- err
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, c := range closers {
		c.Close()
	}
	select {
	case err := <-errc:
		return fmt.Errorf("tunnel read: %w", err)
	default:
	}
	return json.NewEncoder(os.Stdout).Encode(tunnelResult{Bytes: total.Load(), Gbps: float64(total.Load()) * 8 / elapsed.Seconds() / 1e9})
}

// runHTTPHold opens -n connections through the proxy, makes each carry
// exchanges (two GETs, or a CONNECT tunnel to an echo server and a 64-byte
// echo), prints "ready HELD FAILED" and holds them until stdin closes.
func runHTTPHold(args []string) error {
	fs := flag.NewFlagSet("httphold", flag.ExitOnError)
	proxy := fs.String("proxy", "", "proxy address")
	mode := fs.String("mode", "get", "get or connect")
	origin := fs.String("origin", "127.0.0.1:22000", "origin (get)")
	echo := fs.String("echo", "127.0.0.1:22002", "echo server (connect)")
	n := fs.Int("n", 2000, "connections")
	fs.Parse(args)
	req := getRequest(*origin, "/idle", false)
	msg, buf := make([]byte, 64), make([]byte, 64)
	conns := make([]net.Conn, 0, *n)
	var failed int
	var lastErr error
	for range *n {
		var c net.Conn
		var err error
		if *mode == "connect" {
			var r *bufio.Reader
			if c, r, err = dialTunnel(*proxy, *echo); err == nil {
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err = c.Write(msg); err == nil {
					_, err = io.ReadFull(r, buf)
				}
			}
		} else if c, err = net.DialTimeout("tcp", *proxy, 5*time.Second); err == nil {
			// Two GETs: a proxy that closes client connections after
			// each response (tinyproxy) holds none.
			c.SetDeadline(time.Now().Add(5 * time.Second))
			r := bufio.NewReaderSize(c, 1024)
			for i := 0; i < 2 && err == nil; i++ {
				var status int
				var keep bool
				if _, err = c.Write(req); err == nil {
					status, _, keep, err = readResponse(r, nil)
				}
				if err == nil && (status != 200 || !keep) {
					err = fmt.Errorf("status %d, keep-alive %v", status, keep)
				}
			}
		}
		if err != nil {
			failed++
			lastErr = err
			if c != nil {
				c.Close()
			}
			continue
		}
		conns = append(conns, c)
	}
	if lastErr != nil {
		fmt.Fprintln(os.Stderr, "httphold: last failure:", lastErr)
	}
	fmt.Printf("ready %d %d\n", len(conns), failed)
	io.Copy(io.Discard, bufio.NewReader(os.Stdin))
	for _, c := range conns {
		c.Close()
	}
	return nil
}

// burstResult is what `bench burst` prints.
type burstResult struct {
	OK     int `json:"ok"`
	Errors int `json:"errors"`
}

// runBurst connects -n clients, then has all of them GET one path at the
// same moment: the concurrent-miss test of a cache.
func runBurst(args []string) error {
	fs := flag.NewFlagSet("burst", flag.ExitOnError)
	proxy := fs.String("proxy", "", "proxy address")
	origin := fs.String("origin", "127.0.0.1:22000", "origin")
	path := fs.String("path", "/slow/x", "path")
	n := fs.Int("n", 32, "clients")
	size := fs.Int("size", 100, "expected body size")
	fs.Parse(args)
	req := getRequest(*origin, *path, false)
	conns := make([]net.Conn, *n)
	for i := range conns {
		c, err := net.DialTimeout("tcp", *proxy, 5*time.Second)
		if err != nil {
			return err
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
		conns[i] = c
	}
	var res burstResult
	var mu sync.Mutex
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			<-gate
			_, err := c.Write(req)
			var status int
			var got []byte
			if err == nil {
				status, got, _, err = readResponse(bufio.NewReader(c), nil)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil || status != 200 || len(got) != *size {
				res.Errors++
				return
			}
			res.OK++
		}()
	}
	close(gate)
	wg.Wait()
	return json.NewEncoder(os.Stdout).Encode(res)
}
