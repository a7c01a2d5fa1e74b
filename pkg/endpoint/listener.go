package endpoint

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/sluice-proxy/sluice/pkg/reactor"
	"github.com/sluice-proxy/sluice/pkg/sys"
)

// Backlog is the listen queue length used by Listen.
const Backlog = 1024

// acceptBatch bounds the connections one loop accepts per wake-up, so one
// busy listener cannot starve the loop's other work.
const acceptBatch = 32

// pauseOnFDLimit is how long a loop stops accepting when it ran out of file
// descriptors and has no reserve descriptor left to refuse connections with.
const pauseOnFDLimit = 100 * time.Millisecond

// AcceptFunc receives a newly accepted, non-blocking connection on the loop
// that accepted it. It owns fd from then on.
type AcceptFunc func(l *reactor.Loop, fd int)

// Listener is a listening socket shared by every loop of a reactor. Each
// loop adds the one fd to its epoll set with EPOLLEXCLUSIVE, so the kernel
// wakes one idle loop per connection and no fd is handed between threads.
type Listener struct {
	addr   Addr
	fd     int
	family int
	local  string

	// OnError, if set, is told about accept failures (out of file
	// descriptors, ...). It is called on a loop goroutine and should
	// rate-limit what it logs. Set it before Serve.
	OnError func(err error)

	mu        sync.Mutex
	acceptors []*acceptor
}

// ListenOptions are the socket options of a listener. The zero value is
// a plain listener.
type ListenOptions struct {
	// Transparent sets IP_TRANSPARENT (IPV6_TRANSPARENT) before binding,
	// so that connections an nftables `tproxy` rule diverts to the socket
	// are accepted with their original destination as local address. It
	// needs CAP_NET_ADMIN and applies to TCP only.
	Transparent bool
}

// Listen creates a listening socket for a. Host names are resolved here,
// blocking, since listening happens at start-up.
func Listen(ctx context.Context, a Addr) (*Listener, error) {
	return ListenWith(ctx, a, ListenOptions{})
}

// ListenWith is Listen with socket options.
func ListenWith(ctx context.Context, a Addr, opts ListenOptions) (*Listener, error) {
	if opts.Transparent && a.Network != TCP && a.Network != TCP4 && a.Network != TCP6 {
		return nil, fmt.Errorf("listen %s: a transparent listener must be TCP", a)
	}
	sas, err := a.Sockaddrs(ctx, true)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", a, err)
	}
	var errs []error
	for _, sa := range sas {
		fd, err := listenOne(a, sa, opts)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		local := FormatSockaddr(sa)
		if got, err := sys.LocalAddr(fd); err == nil {
			local = localName(got)
		}
		return &Listener{addr: a, fd: fd, family: family(sa), local: local}, nil
	}
	return nil, fmt.Errorf("listen %s: %w", a, errors.Join(errs...))
}

func listenOne(a Addr, sa sys.Sockaddr, opts ListenOptions) (int, error) {
	fd, err := sys.Socket(family(sa))
	if err != nil {
		return -1, err
	}
	if opts.Transparent {
		if err := sys.SetTransparent(fd, family(sa)); err != nil {
			sys.Close(fd)
			return -1, err
		}
	}
	if a.Network == Unix {
		removeStaleSocket(a.Path)
	}
	if err := sys.Listen(fd, sa, Backlog); err != nil {
		sys.Close(fd)
		return -1, err
	}
	return fd, nil
}

// removeStaleSocket deletes a unix socket file left behind by a process that
// is gone (nobody accepts on it), so a restart can bind again. A live
// socket, a regular file or an abstract name is left alone.
func removeStaleSocket(path string) {
	if path == "" || path[0] == '@' {
		return
	}
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 {
		return
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return
	}
	os.Remove(path)
}

// Addr returns the address the listener is bound to, with port 0 resolved.
func (ln *Listener) Addr() string { return ln.local }

// Serve starts accepting on every loop in loops; accepted connections go to
// accept on the loop that took them.
func (ln *Listener) Serve(loops []*reactor.Loop, accept AcceptFunc) error {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	for _, l := range loops {
		reserve, err := sys.Open(os.DevNull)
		if err != nil {
			return fmt.Errorf("serve %s: reserve descriptor: %w", ln.addr, err)
		}
		acc := &acceptor{ln: ln, loop: l, accept: accept, reserve: reserve}
		acc.resume.Func = acc.register
		ln.acceptors = append(ln.acceptors, acc)
		l.Post(acc.register)
	}
	return nil
}

// Close stops accepting on every loop, then closes the socket (and removes
// a unix socket's file). Connections already accepted are not touched. It
// waits for the loops, so it must not be called from a loop goroutine.
func (ln *Listener) Close() {
	ln.mu.Lock()
	accs := ln.acceptors
	ln.acceptors = nil
	ln.mu.Unlock()
	var wg sync.WaitGroup
	for _, acc := range accs {
		wg.Add(1)
		acc.loop.Post(func() {
			defer wg.Done()
			acc.stop()
		})
	}
	wg.Wait()
	sys.Close(ln.fd)
	if ln.addr.Network == Unix && ln.addr.Path[0] != '@' {
		os.Remove(ln.addr.Path)
	}
}

// SetActiveLoops makes only the loops with ID below n accept new
// connections; the others stop accepting but keep relaying what they have,
// so an idle loop can be retired and brought back (the tuner's knob). n
// below 1 is taken as 1. It returns at once; the loops apply it in turn.
func (ln *Listener) SetActiveLoops(n int) {
	n = max(n, 1)
	ln.mu.Lock()
	defer ln.mu.Unlock()
	for _, acc := range ln.acceptors {
		retire := acc.loop.ID() >= n
		acc.loop.Post(func() {
			acc.retired = retire
			if retire {
				acc.pause()
			} else {
				acc.register()
			}
		})
	}
}

// acceptor is a listener's presence on one loop.
type acceptor struct {
	ln      *Listener
	loop    *reactor.Loop
	accept  AcceptFunc
	reserve int // an fd kept open to free when accept hits EMFILE; -1 if spent
	resume  reactor.Timer
	active  bool
	retired bool // the loop takes no new connections (SetActiveLoops)
	stopped bool
}

func (a *acceptor) register() {
	if a.stopped || a.retired || a.active {
		return
	}
	if err := a.loop.Register(a.ln.fd, sys.EventIn|sys.EventExclusive, a); err != nil {
		a.report(err)
		a.loop.Schedule(&a.resume, pauseOnFDLimit)
		return
	}
	a.active = true
}

func (a *acceptor) pause() {
	if a.active {
		_ = a.loop.Unregister(a.ln.fd)
		a.active = false
	}
}

func (a *acceptor) stop() {
	a.stopped = true
	a.pause()
	a.loop.Cancel(&a.resume)
	if a.reserve >= 0 {
		sys.Close(a.reserve)
		a.reserve = -1
	}
}

// HandleEvent accepts a batch of connections.
func (a *acceptor) HandleEvent(uint32) {
	for range acceptBatch {
		fd, err := sys.Accept(a.ln.fd)
		switch {
		case err == nil:
			if a.ln.family == sys.AFInet || a.ln.family == sys.AFInet6 {
				sys.SetNoDelay(fd)
			}
			a.accept(a.loop, fd)
		case sys.IsAgain(err):
			return
		case sys.IsConnAborted(err) || sys.IsInterrupted(err):
			continue
		case sys.IsFDLimit(err):
			a.refuseOne(err)
			return
		default:
			a.report(err)
			return
		}
	}
}

// refuseOne handles EMFILE/ENFILE: the pending connection would make a
// level-triggered listener fire forever, so it is accepted on the reserve
// descriptor's slot and closed at once. Without a reserve the loop stops
// accepting for a moment instead. Either way the CPU does not spin.
func (a *acceptor) refuseOne(cause error) {
	a.report(cause)
	if a.reserve >= 0 {
		sys.Close(a.reserve)
		a.reserve = -1
		if fd, err := sys.Accept(a.ln.fd); err == nil {
			sys.Close(fd)
		}
		if fd, err := sys.Open(os.DevNull); err == nil {
			a.reserve = fd
			return
		}
	}
	a.pause()
	a.loop.Schedule(&a.resume, pauseOnFDLimit)
}

func (a *acceptor) report(err error) {
	if a.ln.OnError != nil {
		a.ln.OnError(fmt.Errorf("accept on %s: %w", a.ln.addr, err))
	}
}
