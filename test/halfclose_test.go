package test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// readResult is what a backend handler saw on its connection.
type readResult struct {
	data []byte
	err  error
}

// TestHalfClose checks that a half-close in one direction is passed on and
// leaves the other direction working, whichever side closes first.
func TestHalfClose(t *testing.T) {
	const (
		reqSize  = 1 << 20
		respSize = 4 << 20 // larger than socket and pipe buffers
	)
	request := randomBytes(1, reqSize)
	response := randomBytes(2, respSize)

	t.Run("client first", func(t *testing.T) {
		t.Parallel()
		// The backend reads the request up to EOF, only then answers.
		got := make(chan readResult, 1)
		b := startBackend(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			data, err := io.ReadAll(c)
			got <- readResult{data, err}
			if err == nil {
				_, _ = c.Write(response)
			}
		})
		p := startSluice(t, "forward", "127.0.0.1:0", b.upstream())
		c := p.dial(t).(*net.TCPConn)
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))

		if _, err := c.Write(request); err != nil {
			t.Fatalf("write request: %v", err)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatalf("CloseWrite: %v", err)
		}
		resp, err := io.ReadAll(c)
		if err != nil {
			t.Errorf("client reading the response after its CloseWrite: got error %v (%s) after %d bytes, want the whole response then EOF",
				err, classify(0, err), len(resp))
		}
		if !bytes.Equal(resp, response) {
			t.Errorf("response: got %d bytes sha256 %x, want %d bytes sha256 %x",
				len(resp), sha256.Sum256(resp), len(response), sha256.Sum256(response))
		}
		select {
		case r := <-got:
			checkHalfCloseRead(t, "backend", r, request)
		case <-time.After(5 * time.Second):
			t.Errorf("backend: no EOF after the request")
		}
	})

	t.Run("backend first", func(t *testing.T) {
		t.Parallel()
		// The backend sends its response and half-closes, then reads on.
		got := make(chan readResult, 1)
		b := startBackend(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			if _, err := c.Write(response); err != nil {
				got <- readResult{err: fmt.Errorf("backend write: %w", err)}
				return
			}
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				got <- readResult{err: fmt.Errorf("backend CloseWrite: %w", err)}
				return
			}
			data, err := io.ReadAll(c)
			got <- readResult{data, err}
		})
		p := startSluice(t, "forward", "127.0.0.1:0", b.upstream())
		c := p.dial(t).(*net.TCPConn)
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))

		resp, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("client reading the response: got error %v (%s) after %d bytes, want the whole response then EOF",
				err, classify(0, err), len(resp))
		}
		if !bytes.Equal(resp, response) {
			t.Errorf("response: got %d bytes sha256 %x, want %d bytes sha256 %x",
				len(resp), sha256.Sum256(resp), len(response), sha256.Sum256(response))
		}
		// The backend's write side is closed; the client keeps sending.
		if _, err := c.Write(request); err != nil {
			t.Fatalf("client writing after the backend half-closed: %v", err)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatalf("CloseWrite: %v", err)
		}
		select {
		case r := <-got:
			checkHalfCloseRead(t, "backend", r, request)
		case <-time.After(10 * time.Second):
			t.Errorf("backend: no EOF after the request")
		}
	})
}

// checkHalfCloseRead checks that who read exactly want and then EOF.
func checkHalfCloseRead(t *testing.T, who string, r readResult, want []byte) {
	t.Helper()
	if r.err != nil {
		t.Errorf("%s: got error %v (%s) after %d bytes, want %d bytes then EOF", who, r.err, classify(0, r.err), len(r.data), len(want))
		return
	}
	if !bytes.Equal(r.data, want) {
		t.Errorf("%s: got %d bytes sha256 %x before EOF, want %d bytes sha256 %x",
			who, len(r.data), sha256.Sum256(r.data), len(want), sha256.Sum256(want))
	}
}

// TestResetPropagation checks that an abortive close (RST, SO_LINGER 0) on
// one side reaches the other side as an error, not a silent hang.
func TestResetPropagation(t *testing.T) {
	hello := []byte("hello")
	tests := []struct {
		name string
		// rstBackend: the backend resets; otherwise the client does.
		rstBackend bool
		// want is the outcomes accepted on the side that did not reset.
		want []outcome
	}{
		{name: "backend resets", rstBackend: true, want: []outcome{outReset}},
		{name: "client resets", rstBackend: false, want: []outcome{outReset, outEOF}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			greeted := make(chan struct{})
			backendSaw := make(chan outcome, 1)
			b := startBackend(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
				buf := make([]byte, len(hello))
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				close(greeted)
				if tt.rstBackend {
					_ = c.(*net.TCPConn).SetLinger(0)
					return // the backend closes c: RST
				}
				o, _, _ := awaitClose(c, 5*time.Second)
				backendSaw <- o
			})
			p := startSluice(t, "forward", "127.0.0.1:0", b.upstream())
			c := p.dial(t).(*net.TCPConn)
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(hello); err != nil {
				t.Fatalf("client write: %v", err)
			}
			select {
			case <-greeted:
			case <-time.After(5 * time.Second):
				t.Fatal("backend never got the client's first bytes")
			}

			var got outcome
			var err error
			if tt.rstBackend {
				got, _, err = awaitClose(c, 5*time.Second)
			} else {
				_ = c.SetLinger(0)
				c.Close()
				select {
				case got = <-backendSaw:
				case <-time.After(10 * time.Second):
					t.Fatal("backend read never returned")
				}
			}
			for _, w := range tt.want {
				if got == w {
					return
				}
			}
			who := "backend"
			if tt.rstBackend {
				who = "client"
			}
			t.Errorf("%s read: got %s (%v), want one of %v", who, got, err, tt.want)
		})
	}
}
