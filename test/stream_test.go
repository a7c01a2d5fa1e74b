package test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// Stream directions, mixed into the seed so that the two directions of one
// transfer carry different bytes.
const (
	dirUp   byte = 'u' // client to backend
	dirDown byte = 'd' // backend to client
)

const (
	// copyChunk is the buffer size of the fast copy loops.
	copyChunk = 256 << 10
	// slowChunk and slowPause make a slow reader: at most slowChunk bytes
	// per read, then a pause.
	slowChunk = 8 << 10
	slowPause = time.Millisecond
)

// newStream returns the pseudo-random stream for transfer id in direction
// dir. The same id and dir always give the same bytes, so neither side has
// to hold the data.
func newStream(id uint64, dir byte) *rand.ChaCha8 {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], id)
	seed[8] = dir
	copy(seed[9:], "sluice end-to-end")
	return rand.NewChaCha8(seed)
}

// randomBytes returns n bytes of the stream for id.
func randomBytes(id uint64, n int) []byte {
	b := make([]byte, n)
	_, _ = newStream(id, 'r').Read(b)
	return b
}

// sideResult is what one side of a transfer sent and received.
type sideResult struct {
	SentN   int64
	SentSum [32]byte // sha256 of the bytes sent
	RecvN   int64
	RecvSum [32]byte // sha256 of the bytes received
	Err     error
}

// pause stops both directions of a client transfer after the first after
// bytes, until release is closed.
type pause struct {
	after   int64
	reached sync.WaitGroup // one Done per direction once it stopped (or failed)
	release chan struct{}
}

func newPause(after int64) *pause {
	p := &pause{after: after, release: make(chan struct{})}
	p.reached.Add(2)
	return p
}

// waitReached waits up to d for both directions to stop at the pause.
func (p *pause) waitReached(d time.Duration) bool {
	done := make(chan struct{})
	go func() { p.reached.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// stop is called by one direction of a transfer that has moved done bytes.
// It blocks at the pause point and returns the most the direction may move
// before calling stop again. With no pause it returns limit.
func (p *pause) stop(done, limit int64, once *sync.Once) int64 {
	if p == nil {
		return limit
	}
	if done < p.after {
		return min(limit, p.after-done)
	}
	if done == p.after {
		once.Do(p.reached.Done)
		<-p.release
	}
	return limit
}

// exchange sends sendN bytes of stream (id, dir) on c while it reads recvN
// bytes from c, hashing both, and returns the tallies. A slow reader reads
// at most slowChunk bytes at a time and pauses between reads.
func exchange(c net.Conn, id uint64, dir byte, sendN, recvN int64, slow bool, p *pause) sideResult {
	var (
		res     sideResult
		wg      sync.WaitGroup
		sendErr error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		var once sync.Once
		if p != nil {
			defer once.Do(p.reached.Done)
		}
		src := newStream(id, dir)
		h := sha256.New()
		buf := make([]byte, copyChunk)
		for res.SentN < sendN {
			n := int(p.stop(res.SentN, min(int64(len(buf)), sendN-res.SentN), &once))
			_, _ = src.Read(buf[:n])
			h.Write(buf[:n])
			w, err := c.Write(buf[:n])
			res.SentN += int64(w)
			if err != nil {
				sendErr = fmt.Errorf("send after %d of %d bytes: %w", res.SentN, sendN, err)
				break
			}
		}
		copy(res.SentSum[:], h.Sum(nil))
	}()

	var once sync.Once
	if p != nil {
		defer once.Do(p.reached.Done)
	}
	var recvErr error
	h := sha256.New()
	chunk := int64(copyChunk)
	if slow {
		chunk = slowChunk
	}
	buf := make([]byte, chunk)
	for res.RecvN < recvN {
		n := p.stop(res.RecvN, min(chunk, recvN-res.RecvN), &once)
		r, err := c.Read(buf[:n])
		h.Write(buf[:r])
		res.RecvN += int64(r)
		if err != nil {
			recvErr = fmt.Errorf("receive after %d of %d bytes: %w", res.RecvN, recvN, err)
			break
		}
		if slow {
			time.Sleep(slowPause)
		}
	}
	copy(res.RecvSum[:], h.Sum(nil))
	wg.Wait()
	res.Err = errors.Join(sendErr, recvErr)
	return res
}

// outcome says how a read on a connection ended.
type outcome string

const (
	outEOF     outcome = "EOF"
	outReset   outcome = "connection reset"
	outTimeout outcome = "timeout (still open)"
	outData    outcome = "data"
	outOther   outcome = "other error"
)

// closed reports whether the peer closed the connection (FIN or RST).
func (o outcome) closed() bool { return o == outEOF || o == outReset }

// classify names the result of one Read.
func classify(n int, err error) outcome {
	switch {
	case n > 0:
		return outData
	case errors.Is(err, io.EOF):
		return outEOF
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return outReset
	case errors.Is(err, os.ErrDeadlineExceeded):
		return outTimeout
	default:
		return outOther
	}
}

// awaitClose reads from c for at most d and reports how the read ended and
// how long it took.
func awaitClose(c net.Conn, d time.Duration) (outcome, time.Duration, error) {
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(d))
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	return classify(n, err), time.Since(start), err
}

// echoRoundTrip writes payload to c and expects it back within d.
func echoRoundTrip(c net.Conn, payload []byte, d time.Duration) error {
	if err := c.SetDeadline(time.Now().Add(d)); err != nil {
		return err
	}
	defer c.SetDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		errc <- err
	}()
	got := make([]byte, len(payload))
	n, rerr := io.ReadFull(c, got)
	if werr := <-errc; werr != nil {
		return fmt.Errorf("write %d bytes: %w", len(payload), werr)
	}
	if rerr != nil {
		return fmt.Errorf("read echo: got %d of %d bytes: %w (%s)", n, len(payload), rerr, classify(0, rerr))
	}
	if !bytes.Equal(got, payload) {
		return fmt.Errorf("echo of %d bytes: got sha256 %x, want %x", len(payload), sha256.Sum256(got), sha256.Sum256(payload))
	}
	return nil
}
