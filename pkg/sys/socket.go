package sys

import (
	"os"

	"golang.org/x/sys/unix"
)

// Socket creates a non-blocking, close-on-exec stream socket of family.
func Socket(family int) (int, error) {
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	return fd, nil
}

// Listen binds fd to sa and starts listening with the given backlog. For IP
// families it sets SO_REUSEADDR so a restarted sluice can bind at once.
func Listen(fd int, sa Sockaddr, backlog int) error {
	if _, ok := sa.(*unix.SockaddrUnix); !ok {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return os.NewSyscallError("setsockopt SO_REUSEADDR", err)
		}
	}
	if sa6, ok := sa.(*unix.SockaddrInet6); ok && sa6.Addr != [16]byte{} {
		// A specific IPv6 address never accepts IPv4; only [::] decides.
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
	}
	if err := unix.Bind(fd, sa); err != nil {
		return os.NewSyscallError("bind", err)
	}
	if err := unix.Listen(fd, backlog); err != nil {
		return os.NewSyscallError("listen", err)
	}
	return nil
}

// SetTransparent sets IP_TRANSPARENT (IPV6_TRANSPARENT for family
// AFInet6) on a socket before it is bound, so a listener accepts
// connections an nftables tproxy rule diverts to it. It needs
// CAP_NET_ADMIN.
func SetTransparent(fd, family int) error {
	level, opt, name := unix.SOL_IP, unix.IP_TRANSPARENT, "IP_TRANSPARENT"
	if family == unix.AF_INET6 {
		level, opt, name = unix.SOL_IPV6, unix.IPV6_TRANSPARENT, "IPV6_TRANSPARENT"
	}
	if err := unix.SetsockoptInt(fd, level, opt, 1); err != nil {
		return os.NewSyscallError("setsockopt "+name, err)
	}
	return nil
}

// Accept takes one connection from a non-blocking listener. The new socket is
// non-blocking and close-on-exec. EAGAIN is returned unwrapped.
func Accept(fd int) (int, error) {
	nfd, _, err := unix.Accept4(fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
	if err != nil {
		return -1, err
	}
	return nfd, nil
}

// Connect starts a non-blocking connect. EINPROGRESS is returned unwrapped.
func Connect(fd int, sa Sockaddr) error {
	return unix.Connect(fd, sa)
}

// SetNoDelay disables Nagle's algorithm on a TCP socket.
func SetNoDelay(fd int) {
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
}

// LocalAddr returns the address a socket is bound to.
func LocalAddr(fd int) (Sockaddr, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, os.NewSyscallError("getsockname", err)
	}
	return sa, nil
}

// Open opens a file read-only; used to keep a reserve descriptor.
func Open(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("open "+path, err)
	}
	return fd, nil
}

// SetRecvBuffer sets SO_RCVBUF (the kernel doubles it and stops autotuning
// the socket). Errors are ignored: the socket keeps working as it was.
func SetRecvBuffer(fd, n int) {
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, n)
}

// SetSendBuffer sets SO_SNDBUF, like SetRecvBuffer.
func SetSendBuffer(fd, n int) {
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, n)
}
