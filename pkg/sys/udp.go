package sys

import (
	"os"

	"golang.org/x/sys/unix"
)

// UDPSocket creates a non-blocking, close-on-exec UDP socket of family
// (AFInet or AFInet6); an AF_INET6 socket takes IPv6 addresses only.
func UDPSocket(family int) (int, error) {
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	if family == unix.AF_INET6 {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
	}
	return fd, nil
}

// Bind binds fd to sa.
func Bind(fd int, sa Sockaddr) error {
	if err := unix.Bind(fd, sa); err != nil {
		return os.NewSyscallError("bind", err)
	}
	return nil
}

// RecvFrom reads one datagram into p and returns its length and sender
// (a datagram longer than p is cut).
func RecvFrom(fd int, p []byte) (int, Sockaddr, error) {
	n, sa, err := unix.Recvfrom(fd, p, unix.MSG_DONTWAIT)
	if err != nil {
		return 0, nil, err
	}
	return n, sa, nil
}

// SendTo sends p as one datagram to sa.
func SendTo(fd int, p []byte, sa Sockaddr) error {
	return unix.Sendto(fd, p, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, sa)
}
