// Package sys is sluice's one chokepoint for raw Linux system calls: epoll,
// eventfd, pipes, splice and socket options. Every other package goes through
// these typed wrappers and never calls golang.org/x/sys/unix for I/O itself, so
// the kernel interface can be audited, probed and ported in one place.
//
// Errors returned here are plain syscall.Errno values (EAGAIN is returned
// unwrapped so callers can test it cheaply with [IsAgain]); callers wrap them
// with context.
package sys

import (
	"errors"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Epoll event bits, re-exported so that only this package imports unix.
const (
	EventIn        = unix.EPOLLIN
	EventOut       = unix.EPOLLOUT
	EventRdHup     = unix.EPOLLRDHUP
	EventErr       = unix.EPOLLERR
	EventHup       = unix.EPOLLHUP
	EventEdge      = unix.EPOLLET
	EventExclusive = unix.EPOLLEXCLUSIVE
)

// EpollEvent is one readiness report from [Epoll.Wait].
type EpollEvent = unix.EpollEvent

// Sockaddr is a socket address understood by the kernel.
type Sockaddr = unix.Sockaddr

// Socket address types, re-exported for the endpoint package.
type (
	// SockaddrInet4 is an IPv4 address and port.
	SockaddrInet4 = unix.SockaddrInet4
	// SockaddrInet6 is an IPv6 address, port and zone.
	SockaddrInet6 = unix.SockaddrInet6
	// SockaddrUnix is a unix socket path.
	SockaddrUnix = unix.SockaddrUnix
)

// Address families.
const (
	AFInet  = unix.AF_INET
	AFInet6 = unix.AF_INET6
	AFUnix  = unix.AF_UNIX
)

// IsAgain reports whether err means "would block".
func IsAgain(err error) bool { return err == unix.EAGAIN }

// IsInProgress reports whether err is the EINPROGRESS of a non-blocking connect.
func IsInProgress(err error) bool { return err == unix.EINPROGRESS }

// IsInterrupted reports whether err is EINTR.
func IsInterrupted(err error) bool { return err == unix.EINTR }

// IsFDLimit reports whether err means the process or system ran out of file
// descriptors (EMFILE or ENFILE).
func IsFDLimit(err error) bool {
	return errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE)
}

// IsSpliceUnsupported reports whether splice refused the file pair itself
// (EINVAL or ENOSYS), as opposed to a connection error.
func IsSpliceUnsupported(err error) bool { return err == unix.EINVAL || err == unix.ENOSYS }

// IsConnAborted reports whether accept returned a connection that died in the
// backlog (ECONNABORTED), which is not an error of the listener.
func IsConnAborted(err error) bool { return err == unix.ECONNABORTED || err == unix.EPROTO }

// Epoll is an epoll instance.
type Epoll struct{ fd int }

// NewEpoll creates an epoll instance.
func NewEpoll() (*Epoll, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	return &Epoll{fd: fd}, nil
}

// Add registers fd for events.
func (e *Epoll) Add(fd int, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	return os.NewSyscallError("epoll_ctl add", unix.EpollCtl(e.fd, unix.EPOLL_CTL_ADD, fd, &ev))
}

// Modify changes the events fd is registered for.
func (e *Epoll) Modify(fd int, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	return os.NewSyscallError("epoll_ctl mod", unix.EpollCtl(e.fd, unix.EPOLL_CTL_MOD, fd, &ev))
}

// Remove unregisters fd.
func (e *Epoll) Remove(fd int) error {
	return os.NewSyscallError("epoll_ctl del", unix.EpollCtl(e.fd, unix.EPOLL_CTL_DEL, fd, nil))
}

// Wait blocks until events arrive or msec milliseconds pass (-1: forever).
// EINTR is reported as zero events.
func (e *Epoll) Wait(events []EpollEvent, msec int) (int, error) {
	n, err := unix.EpollWait(e.fd, events, msec)
	if err == unix.EINTR {
		return 0, nil
	}
	if err != nil {
		return 0, os.NewSyscallError("epoll_wait", err)
	}
	return n, nil
}

// Close releases the epoll instance.
func (e *Epoll) Close() error { return unix.Close(e.fd) }

// EventFD is a counter file descriptor used to wake an event loop.
type EventFD struct{ fd int }

// NewEventFD creates a non-blocking eventfd.
func NewEventFD() (*EventFD, error) {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("eventfd", err)
	}
	return &EventFD{fd: fd}, nil
}

// FD returns the descriptor, for registration with epoll.
func (e *EventFD) FD() int { return e.fd }

var one = [8]byte{1}

// Signal increments the counter, waking whoever polls it.
func (e *EventFD) Signal() {
	// EAGAIN means the counter is saturated: the poller is awake anyway.
	_, _ = unix.Write(e.fd, one[:])
}

// Drain resets the counter.
func (e *EventFD) Drain() {
	var b [8]byte
	_, _ = unix.Read(e.fd, b[:])
}

// Close releases the eventfd.
func (e *EventFD) Close() error { return unix.Close(e.fd) }

// Close closes fd. Errors are not actionable for sockets and are dropped.
func Close(fd int) { _ = unix.Close(fd) }

// The data-path calls below (Read, Write, Splice) use raw system calls:
// on non-blocking fds they never sleep, so telling the Go scheduler about
// them only costs time. A long splice made through the ordinary path lets
// the runtime take the loop's P away mid-call and hand it back afterwards,
// which showed up as thousands of futex and nanosleep calls per second and
// half the throughput (docs/ARCHITECTURE.md, "Raw system calls").

// Read reads from a non-blocking fd.
func Read(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return result(n, e)
}

// Write writes to a non-blocking socket without raising SIGPIPE.
func Write(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), unix.MSG_NOSIGNAL, 0, 0)
	return result(n, e)
}

// result turns a raw system call's return into (count, error).
func result(n uintptr, e unix.Errno) (int, error) {
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// Pipe2 creates a non-blocking pipe and returns its read and write ends.
func Pipe2() (r, w int, err error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return -1, -1, os.NewSyscallError("pipe2", err)
	}
	return p[0], p[1], nil
}

// SetPipeSize asks the kernel to resize the pipe whose end is fd and returns
// the size it got.
func SetPipeSize(fd, size int) (int, error) {
	n, err := unix.FcntlInt(uintptr(fd), unix.F_SETPIPE_SZ, size)
	if err != nil {
		return 0, os.NewSyscallError("fcntl F_SETPIPE_SZ", err)
	}
	return n, nil
}

// Splice moves up to n bytes from in to out without copying them through
// user space. It never blocks. 0 with a nil error means end of file on in.
func Splice(in, out, n int) (int, error) {
	m, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
	return result(m, e)
}

// ShutdownWrite sends FIN on a socket after the data already queued.
func ShutdownWrite(fd int) error {
	return os.NewSyscallError("shutdown", unix.Shutdown(fd, unix.SHUT_WR))
}

// CloseReset closes a socket so the peer receives RST instead of FIN.
func CloseReset(fd int) {
	_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	_ = unix.Close(fd)
}

// SocketError returns and clears the pending error of a socket (SO_ERROR).
func SocketError(fd int) error {
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return os.NewSyscallError("getsockopt SO_ERROR", err)
	}
	if v != 0 {
		return unix.Errno(v)
	}
	return nil
}

// Gettid returns the id of the calling OS thread.
func Gettid() int { return unix.Gettid() }

// Dup returns a close-on-exec duplicate of fd (sharing its open file
// description), for handing a socket to Go's netpoller for a while.
func Dup(fd int) (int, error) {
	n, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err)
	}
	return n, nil
}
