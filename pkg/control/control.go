// Package control is sluice's control socket: a unix stream socket, mode
// 0600, on which a client sends one command line ("stats", "reload") and
// reads one JSON Response before the daemon closes the connection.
//
// It runs on ordinary goroutines, apart from the event loops: it is used a
// few times a day, and a request that blocks (a reload reading the config)
// must not hold up a loop.
package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Commands understood by the daemon.
const (
	CmdStats  = "stats"
	CmdReload = "reload"
	// CmdAccounting takes arguments: "accounting show [USER]",
	// "accounting reset USER".
	CmdAccounting = "accounting"
)

// requestTimeout bounds reading a request and writing its answer.
const requestTimeout = 30 * time.Second

// Response is the daemon's answer to one command.
type Response struct {
	OK bool `json:"ok"`
	// Errors explains a failure, one message per entry (for a rejected
	// reload, one per config error).
	Errors []string `json:"errors,omitempty"`
	// Stats is set for CmdStats.
	Stats json.RawMessage `json:"stats,omitempty"`
	// Accounting is set for CmdAccounting show.
	Accounting json.RawMessage `json:"accounting,omitempty"`
}

// Handler answers one command.
type Handler func(cmd string) Response

// Server accepts control connections.
type Server struct {
	ln   *net.UnixListener
	path string
	wg   sync.WaitGroup
}

// Listen creates the control socket at path with mode 0600. A socket file
// left by a dead process is replaced; one that answers means another sluice
// runs, and is an error.
func Listen(path string) (*Server, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another sluice is running there", path)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
	// The umask makes the socket 0600 from the start, with no window in
	// which another user could connect.
	old := syscall.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	return &Server{ln: ln, path: path}, nil
}

// Path returns the socket's path.
func (s *Server) Path() string { return s.path }

// Serve answers connections with h until Close. It returns at once; each
// connection is served on its own goroutine.
func (s *Server) Serve(h Handler) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				time.Sleep(100 * time.Millisecond) // out of fds: do not spin
				continue
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				serveConn(c, h)
			}()
		}
	}()
}

func serveConn(c net.Conn, h Handler) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(requestTimeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	resp := h(strings.TrimSpace(line))
	_ = json.NewEncoder(c).Encode(resp)
}

// Close removes the socket and waits for requests in progress.
func (s *Server) Close() {
	s.ln.Close()
	s.wg.Wait()
}

// Request sends cmd to the daemon listening on path and returns its
// answer.
func Request(path, cmd string) (Response, error) {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return Response{}, fmt.Errorf("control socket %s: %w (is sluice running with this config?)", path, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(requestTimeout + 5*time.Second))
	if _, err := fmt.Fprintf(c, "%s\n", cmd); err != nil {
		return Response{}, fmt.Errorf("control socket %s: %w", path, err)
	}
	var resp Response
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return Response{}, fmt.Errorf("control socket %s: read answer: %w", path, err)
	}
	return resp, nil
}
