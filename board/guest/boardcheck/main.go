// Command boardcheck is the traffic generator and checker that runs inside
// the board guests (board/guest/check.sh): busybox's nc cannot half-close
// and has no timing, and hashing in shell pipelines is slow under emulation.
//
//	boardcheck sink -listen ADDR [-down N] [-hash=false]
//	boardcheck send -connect ADDR -up N [-down N] [-hash=false]
//	boardcheck wait ADDR
//
// sink serves connections until killed: it reads each to EOF, then answers
// with the SHA-256 of what it read followed by N pseudo-random bytes, and
// closes. send writes N pseudo-random bytes, half-closes (CloseWrite),
// reads the answer to EOF and checks both directions byte-exact. The reply
// can only start after the sender's FIN has crossed every relay, so a
// passing send also proves half-close. With -hash=false neither side
// hashes (for throughput measurements; the byte counts are still checked).
// wait dials ADDR until it accepts a connection.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

const chunk = 64 << 10

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "sink":
		err = sink(os.Args[2:])
	case "send":
		err = send(os.Args[2:])
	case "wait":
		if len(os.Args) != 3 {
			usage()
		}
		var c net.Conn
		if c, err = dial(os.Args[2]); err == nil {
			c.Close()
		}
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "boardcheck:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: boardcheck sink -listen ADDR [-down N] [-hash=false] | send -connect ADDR -up N [-down N] [-hash=false] | wait ADDR")
	os.Exit(2)
}

// stream is a cheap deterministic byte stream (xorshift64*), so both ends
// can produce and check gigabytes without storing them.
type stream struct{ s uint64 }

func (g *stream) fill(p []byte) {
	for i := 0; i+8 <= len(p); i += 8 {
		g.s ^= g.s >> 12
		g.s ^= g.s << 25
		g.s ^= g.s >> 27
		binary.LittleEndian.PutUint64(p[i:], g.s*2685821657736338717)
	}
}

// generate writes n bytes of the stream seeded with seed to w (and h).
func generate(w io.Writer, h hash.Hash, seed uint64, n int64) error {
	g := stream{s: seed}
	buf := make([]byte, chunk)
	for n > 0 {
		g.fill(buf)
		p := buf
		if int64(len(p)) > n {
			p = p[:n]
		}
		if h != nil {
			h.Write(p)
		}
		if _, err := w.Write(p); err != nil {
			return err
		}
		n -= int64(len(p))
	}
	return nil
}

func newHash(on bool) hash.Hash {
	if on {
		return sha256.New()
	}
	return nil
}

func sink(args []string) error {
	fs := flag.NewFlagSet("sink", flag.ExitOnError)
	listen := fs.String("listen", "", "address to listen on")
	down := fs.Int64("down", 0, "bytes to send back after the digest")
	useHash := fs.Bool("hash", true, "hash what is read")
	_ = fs.Parse(args)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			h := newHash(*useHash)
			var w io.Writer = io.Discard
			if h != nil {
				w = h
			}
			n, err := io.CopyBuffer(w, c, make([]byte, chunk))
			if err != nil {
				return
			}
			var sum [sha256.Size]byte
			if h != nil {
				h.Sum(sum[:0])
			}
			binary.BigEndian.PutUint64(sum[:8], binary.BigEndian.Uint64(sum[:8])^uint64(n))
			if _, err := c.Write(sum[:]); err != nil {
				return
			}
			_ = generate(c, nil, 2, *down)
		}()
	}
}

func send(args []string) error {
	fs := flag.NewFlagSet("send", flag.ExitOnError)
	connect := fs.String("connect", "", "address to connect to")
	up := fs.Int64("up", 64<<20, "bytes to send")
	down := fs.Int64("down", 0, "bytes the sink sends back")
	useHash := fs.Bool("hash", true, "hash both directions")
	_ = fs.Parse(args)
	c, err := dial(*connect)
	if err != nil {
		return err
	}
	defer c.Close()
	start := time.Now()
	hUp := newHash(*useHash)
	wrote := make(chan error, 1)
	go func() {
		err := generate(c, hUp, 1, *up)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		wrote <- err
	}()
	var reply [sha256.Size]byte
	if _, err := io.ReadFull(c, reply[:]); err != nil {
		if werr := <-wrote; werr != nil {
			return fmt.Errorf("send: %w", werr)
		}
		return fmt.Errorf("read digest (the sink answers only after our FIN; half-close lost?): %w", err)
	}
	if err := <-wrote; err != nil {
		return fmt.Errorf("send: %w", err)
	}
	upTook := time.Since(start)
	var want [sha256.Size]byte
	if hUp != nil {
		hUp.Sum(want[:0])
	}
	binary.BigEndian.PutUint64(want[:8], binary.BigEndian.Uint64(want[:8])^uint64(*up))
	if !bytes.Equal(reply[:], want[:]) {
		return fmt.Errorf("up: the sink got other bytes than the %d sent (digest or length mismatch)", *up)
	}
	hDown := newHash(*useHash)
	var w io.Writer = io.Discard
	if hDown != nil {
		w = hDown
	}
	n, err := io.CopyBuffer(w, c, make([]byte, chunk))
	if err != nil {
		return fmt.Errorf("read down stream after %d bytes: %w", n, err)
	}
	if n != *down {
		return fmt.Errorf("down: got %d bytes, want %d", n, *down)
	}
	if hDown != nil {
		exp := sha256.New()
		_ = generate(io.Discard, exp, 2, *down)
		if !bytes.Equal(hDown.Sum(nil), exp.Sum(nil)) {
			return fmt.Errorf("down: %d bytes arrived but differ from the ones sent", n)
		}
	}
	check := "byte-exact (sha256)"
	if hUp == nil {
		check = "lengths checked, no hash"
	}
	fmt.Printf("up %d bytes, down %d bytes, %s, half-close ok; up %.1f MB/s by the guest clock\n",
		*up, *down, check, float64(*up)/1e6/upTook.Seconds())
	return nil
}

// dial connects to addr, retrying while nothing listens there yet.
func dial(addr string) (net.Conn, error) {
	var err error
	for range 600 {
		var c net.Conn
		c, err = net.Dial("tcp", addr)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, err
}
