package sys

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// AFVsock is the AF_VSOCK address family: sockets between a virtual machine
// and its host (or, with the vsock_loopback transport, within one machine).
const AFVsock = unix.AF_VSOCK

// SockaddrVM is an AF_VSOCK address: a context ID and a port.
type SockaddrVM = unix.SockaddrVM

// Special vsock context IDs and ports (linux/vm_sockets.h).
const (
	// VsockCIDAny binds to whatever context ID the machine has.
	VsockCIDAny = unix.VMADDR_CID_ANY
	// VsockPortAny asks the kernel to pick a free port when binding.
	VsockPortAny = unix.VMADDR_PORT_ANY
)

// ErrVsockUnsupported means the running kernel has no AF_VSOCK support
// (CONFIG_VSOCKETS off, or the vsock module not loaded and not loadable).
var ErrVsockUnsupported = errors.New("vsock is not supported by this kernel")

// vsockProbe runs the probe once per process; the answer cannot change
// without loading a module, and sluice is restarted for that.
var vsockProbe = sync.OnceValue(probeVsock)

// VsockSupported reports, as a nil error, whether the kernel can create
// AF_VSOCK sockets; otherwise it returns an error wrapping
// [ErrVsockUnsupported]. The probe creates (and closes at once) one unbound
// AF_VSOCK socket the first time; it never connects anywhere. Never call it
// under qemu-user: the socket would be the host kernel's.
func VsockSupported() error { return vsockProbe() }

func probeVsock() error {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return vsockProbeError(err)
	}
	_ = unix.Close(fd)
	return nil
}

// vsockProbeError maps the error of socket(AF_VSOCK) to what it means for
// sluice: EAFNOSUPPORT (no vsock core) and ENODEV/ESOCKTNOSUPPORT/
// EPROTONOSUPPORT (core without a stream transport) mean the kernel cannot
// do vsock; anything else (EMFILE, EPERM from a seccomp filter, ...) is
// reported as the system call error it is.
func vsockProbeError(err error) error {
	switch err {
	case unix.EAFNOSUPPORT, unix.ENODEV, unix.ESOCKTNOSUPPORT, unix.EPROTONOSUPPORT:
		return fmt.Errorf("%w (socket AF_VSOCK: %w)", ErrVsockUnsupported, err)
	}
	return os.NewSyscallError("socket AF_VSOCK", err)
}

// SetVsockConnectTimeout sets how long the kernel lets a connect on the
// AF_VSOCK socket fd wait for the peer (SO_VM_SOCKETS_CONNECT_TIMEOUT). The
// kernel applies it to non-blocking connects too, and its default is 2 s.
func SetVsockConnectTimeout(fd int, d time.Duration) error {
	tv := unix.NsecToTimeval(d.Nanoseconds())
	return os.NewSyscallError("setsockopt SO_VM_SOCKETS_CONNECT_TIMEOUT",
		unix.SetsockoptTimeval(fd, unix.AF_VSOCK, unix.SO_VM_SOCKETS_CONNECT_TIMEOUT, &tv))
}
