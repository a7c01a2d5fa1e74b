package endpoint

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/mdlayher/vsock"

	"github.com/sluice-proxy/sluice/pkg/sys"
)

// VsockCIDAny in Addr.CID listens on whatever context ID the machine has
// (vsock:any:PORT). It cannot be connected to.
const VsockCIDAny = sys.VsockCIDAny

// Context IDs with names in the address syntax (vsock:host:PORT,
// vsock:local:PORT).
const (
	// VsockCIDLocal is this machine through the vsock_loopback transport.
	VsockCIDLocal = vsock.Local
	// VsockCIDHost is the host, seen from a guest.
	VsockCIDHost = vsock.Host
)

// maxVsockPort is the highest port an address may name: 2^32-1 is
// VMADDR_PORT_ANY.
const maxVsockPort = 1<<32 - 2

// parseVsock parses the CID:PORT after "vsock:".
func parseVsock(s string) (Addr, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return Addr{}, errors.New("missing :PORT after the vsock CID")
	}
	cid, port := s[:i], s[i+1:]
	a := Addr{Network: Vsock}
	switch cid {
	case "any":
		a.CID = VsockCIDAny
	case "host":
		a.CID = VsockCIDHost
	case "local":
		a.CID = VsockCIDLocal
	default:
		n, err := strconv.ParseUint(cid, 10, 32)
		if err != nil || n == VsockCIDAny {
			return Addr{}, fmt.Errorf("vsock CID %q is not a number from 0 to 4294967294, any, host or local", cid)
		}
		a.CID = uint32(n)
	}
	p, err := strconv.ParseUint(port, 10, 32)
	if err != nil || p > maxVsockPort {
		return Addr{}, fmt.Errorf("vsock port %q is not a number from 0 to %d", port, uint32(maxVsockPort))
	}
	a.Port = uint32(p)
	return a, nil
}

// formatVsock renders a vsock address as vsock:CID:PORT (vsock:any:PORT).
func formatVsock(cid, port uint32) string {
	c := "any"
	if cid != VsockCIDAny {
		c = strconv.FormatUint(uint64(cid), 10)
	}
	return "vsock:" + c + ":" + strconv.FormatUint(uint64(port), 10)
}

// vsockSockaddr is the kernel address of a vsock endpoint. Listening on port
// 0 lets the kernel pick a free port, as it does for TCP; connecting needs a
// real context ID.
func vsockSockaddr(a Addr, listen bool) (*sys.SockaddrVM, error) {
	if !listen && a.CID == VsockCIDAny {
		return nil, errors.New("vsock:any can only listen; to connect, name a CID (host, local or a number)")
	}
	port := a.Port
	if listen && port == 0 {
		port = sys.VsockPortAny
	}
	return &sys.SockaddrVM{CID: a.CID, Port: port}, nil
}

// localName renders the address a listener is bound to. A vsock listener
// bound to any CID is shown with the machine's own CID when it has one, so
// the log says what a peer must dial.
func localName(sa sys.Sockaddr) string {
	if vm, ok := sa.(*sys.SockaddrVM); ok && vm.CID == VsockCIDAny {
		if cid, err := VsockLocalCID(); err == nil && cid != VsockCIDAny {
			return formatVsock(cid, vm.Port)
		}
	}
	return FormatSockaddr(sa)
}

// VsockLocalCID returns this machine's vsock context ID, as a guest's host
// would dial it. It fails with an error wrapping sys.ErrVsockUnsupported
// when the kernel has no vsock, and with the reason from /dev/vsock when
// there is no transport to a host (a machine with only vsock_loopback has
// no CID of its own).
func VsockLocalCID() (uint32, error) {
	if err := sys.VsockSupported(); err != nil {
		return 0, err
	}
	cid, err := vsock.ContextID()
	if err != nil {
		return 0, fmt.Errorf("vsock local CID: %w", err)
	}
	return cid, nil
}
