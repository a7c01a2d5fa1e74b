package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The load generators and backends run as child processes of the bench
// (`bench echo`, `bench pingpong`, ...) so they can be pinned to their own
// CPU with taskset and keep their fds out of the relay's and each other's.

// runEcho serves an echo backend until killed.
func runEcho(args []string) error {
	fs := flag.NewFlagSet("echo", flag.ExitOnError)
	addrs := fs.String("listen", "127.0.0.1:21000", "comma-separated addresses")
	fs.Parse(args)
	errc := make(chan error)
	for _, addr := range strings.Split(*addrs, ",") {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		go func() { errc <- serveEcho(ln) }()
	}
	fmt.Println("ready")
	return <-errc
}

// serve accepts on ln until it is closed and runs handle for every
// connection on its own goroutine, closing the connection after it.
// Accept errors (EMFILE under the idle figures) back off and go on.
func serve(ln net.Listener, handle func(c net.Conn)) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go func() {
			defer c.Close()
			handle(c)
		}()
	}
}

// serveEcho echoes every connection on ln.
func serveEcho(ln net.Listener) error {
	return serve(ln, func(c net.Conn) {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	})
}

// pingResult is what `bench pingpong` prints.
type pingResult struct {
	Requests int64   `json:"requests"`
	RPS      float64 `json:"rps"`
	P50      float64 `json:"p50_us"`
	P99      float64 `json:"p99_us"`
	P999     float64 `json:"p999_us"`
	Errors   int64   `json:"errors"`
}

// runPingPong keeps conns connections each sending size bytes and waiting
// for the echo, for dur, and prints latency percentiles.
func runPingPong(args []string) error {
	fs := flag.NewFlagSet("pingpong", flag.ExitOnError)
	addr := fs.String("addr", "", "relay address")
	conns := fs.Int("conns", 1, "connections")
	dur := fs.Duration("dur", 3*time.Second, "duration")
	size := fs.Int("size", 64, "message size")
	fs.Parse(args)
	var mu sync.Mutex
	var all []time.Duration
	var errs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(*dur)
	for range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", *addr)
			if err != nil {
				errs.Add(1)
				return
			}
			defer c.Close()
			c.SetDeadline(deadline.Add(5 * time.Second))
			msg := make([]byte, *size)
			buf := make([]byte, *size)
			lat := make([]time.Duration, 0, 1<<16)
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if _, err := c.Write(msg); err != nil {
					errs.Add(1)
					break
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					errs.Add(1)
					break
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	pct := percentiles(all)
	return json.NewEncoder(os.Stdout).Encode(pingResult{
		Requests: int64(len(all)), RPS: float64(len(all)) / elapsed.Seconds(),
		P50: pct(0.50), P99: pct(0.99), P999: pct(0.999), Errors: errs.Load(),
	})
}

// rateResult is what `bench connrate` prints.
type rateResult struct {
	Conns  int64   `json:"conns"`
	CPS    float64 `json:"cps"`
	Errors int64   `json:"errors"`
}

// runConnRate runs conc workers doing connect, 64-byte echo, close.
func runConnRate(args []string) error {
	fs := flag.NewFlagSet("connrate", flag.ExitOnError)
	addr := fs.String("addr", "", "relay address")
	conc := fs.Int("conc", 32, "concurrent workers")
	dur := fs.Duration("dur", 3*time.Second, "duration")
	fs.Parse(args)
	var done, errs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(*dur)
	for range *conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := make([]byte, 64)
			buf := make([]byte, 64)
			for time.Now().Before(deadline) {
				c, err := net.DialTimeout("tcp", *addr, 2*time.Second)
				if err != nil {
					errs.Add(1)
					continue
				}
				c.SetDeadline(time.Now().Add(2 * time.Second))
				_, err = c.Write(msg)
				if err == nil {
					_, err = io.ReadFull(c, buf)
				}
				c.Close()
				if err != nil {
					errs.Add(1)
					continue
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	return json.NewEncoder(os.Stdout).Encode(rateResult{
		Conns: done.Load(), CPS: float64(done.Load()) / time.Since(start).Seconds(), Errors: errs.Load(),
	})
}

// runHold opens n connections, echoes 64 bytes on each so every one is
// relayed end to end, prints "ready N" and holds them until stdin closes.
func runHold(args []string) error {
	fs := flag.NewFlagSet("hold", flag.ExitOnError)
	addr := fs.String("addr", "", "relay address")
	n := fs.Int("n", 9000, "connections")
	fs.Parse(args)
	conns := make([]net.Conn, 0, *n)
	msg := make([]byte, 64)
	buf := make([]byte, 64)
	var failed int
	for range *n {
		c, err := net.DialTimeout("tcp", *addr, 5*time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err = c.Write(msg); err == nil {
				_, err = io.ReadFull(c, buf)
			}
		}
		if err != nil {
			failed++
			if c != nil {
				c.Close()
			}
			continue
		}
		conns = append(conns, c)
	}
	fmt.Printf("ready %d %d\n", len(conns), failed)
	io.Copy(io.Discard, bufio.NewReader(os.Stdin))
	for _, c := range conns {
		c.Close()
	}
	return nil
}

// runGoProxy is the plain-Go baseline: a goroutine per connection and two
// io.Copy calls (which splice on Linux), half-close with CloseWrite.
func runGoProxy(args []string) error {
	fs := flag.NewFlagSet("goproxy", flag.ExitOnError)
	listen := fs.String("listen", "", "listen address")
	upstream := fs.String("upstream", "", "upstream address")
	fs.Parse(args)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	return serve(ln, func(c net.Conn) {
		u, err := net.Dial("tcp", *upstream)
		if err != nil {
			return
		}
		defer u.Close()
		done := make(chan struct{})
		go func() {
			io.Copy(u, c)
			u.(*net.TCPConn).CloseWrite()
			close(done)
		}()
		io.Copy(c, u)
		c.(*net.TCPConn).CloseWrite()
		<-done
	})
}

// percentiles sorts latencies and returns a function from a fraction (0.5,
// 0.99, 1 for the maximum) to that percentile in microseconds (0 without
// latencies).
func percentiles(all []time.Duration) func(p float64) float64 {
	slices.Sort(all)
	return func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[min(len(all)-1, int(p*float64(len(all))))].Microseconds())
	}
}
