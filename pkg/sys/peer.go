package sys

import (
	"os"

	"golang.org/x/sys/unix"
)

// PeerAddr returns the address of a connected socket's peer (getpeername),
// for services whose policy depends on who connected.
func PeerAddr(fd int) (Sockaddr, error) {
	sa, err := unix.Getpeername(fd)
	if err != nil {
		return nil, os.NewSyscallError("getpeername", err)
	}
	return sa, nil
}
