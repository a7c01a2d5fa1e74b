package endpoint

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/sluice-proxy/sluice/pkg/sys"
)

// NeedsLookup reports whether a names a host that must be resolved through
// DNS before it can be used; such work belongs in the reactor's blocking pool.
func (a Addr) NeedsLookup() bool {
	if a.Network == Unix || a.Network == Vsock || a.Host == "" {
		return false
	}
	_, err := netip.ParseAddr(a.Host)
	return err != nil
}

// Sockaddrs returns the kernel addresses a stands for, in the order to try
// them. listen chooses the meaning of an empty host: every address when
// listening, loopback when connecting. When a names a host, the lookup
// blocks: call it from the blocking pool, or at start-up. A vsock address
// needs no lookup; it fails with an error wrapping sys.ErrVsockUnsupported
// when the kernel has no AF_VSOCK, and when vsock:any is used to connect,
// so calling it at config check reports both.
func (a Addr) Sockaddrs(ctx context.Context, listen bool) ([]sys.Sockaddr, error) {
	switch a.Network {
	case Unix:
		return []sys.Sockaddr{&sys.SockaddrUnix{Name: a.Path}}, nil
	case Vsock:
		if err := sys.VsockSupported(); err != nil {
			return nil, err
		}
		sa, err := vsockSockaddr(a, listen)
		if err != nil {
			return nil, err
		}
		return []sys.Sockaddr{sa}, nil
	}
	var ips []netip.Addr
	switch {
	case a.Host == "" && listen:
		switch a.Network {
		case TCP4:
			ips = []netip.Addr{netip.IPv4Unspecified()}
		case TCP6:
			ips = []netip.Addr{netip.IPv6Unspecified()}
		default: // dual-stack [::], then 0.0.0.0 for kernels without IPv6
			ips = []netip.Addr{netip.IPv6Unspecified(), netip.IPv4Unspecified()}
		}
	case a.Host == "":
		if a.Network == TCP6 {
			ips = []netip.Addr{netip.IPv6Loopback()}
		} else {
			ips = []netip.Addr{netip.AddrFrom4([4]byte{127, 0, 0, 1})}
		}
	default:
		if ip, err := netip.ParseAddr(a.Host); err == nil {
			ips = []netip.Addr{ip}
			break
		}
		network := map[Network]string{TCP: "ip", TCP4: "ip4", TCP6: "ip6"}[a.Network]
		found, err := net.DefaultResolver.LookupNetIP(ctx, network, a.Host)
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", a.Host, err)
		}
		ips = found
	}
	out := make([]sys.Sockaddr, 0, len(ips))
	for _, ip := range ips {
		out = append(out, sockaddr(ip, a.Port))
	}
	return out, nil
}

func sockaddr(ip netip.Addr, port uint32) sys.Sockaddr {
	if ip.Is4() || ip.Is4In6() {
		return &sys.SockaddrInet4{Addr: ip.Unmap().As4(), Port: int(port)}
	}
	sa := &sys.SockaddrInet6{Addr: ip.As16(), Port: int(port)}
	if z := ip.Zone(); z != "" {
		if ifi, err := net.InterfaceByName(z); err == nil {
			sa.ZoneId = uint32(ifi.Index)
		} else if n, err := strconv.Atoi(z); err == nil {
			sa.ZoneId = uint32(n)
		}
	}
	return sa
}

// family returns the address family of sa.
func family(sa sys.Sockaddr) int {
	switch sa.(type) {
	case *sys.SockaddrInet4:
		return sys.AFInet
	case *sys.SockaddrInet6:
		return sys.AFInet6
	case *sys.SockaddrVM:
		return sys.AFVsock
	default:
		return sys.AFUnix
	}
}

// FormatSockaddr renders sa as HOST:PORT, [ADDR]:PORT, a unix path or
// vsock:CID:PORT.
func FormatSockaddr(sa sys.Sockaddr) string {
	switch sa := sa.(type) {
	case *sys.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)).String()
	case *sys.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port)).String()
	case *sys.SockaddrUnix:
		return sa.Name
	case *sys.SockaddrVM:
		return formatVsock(sa.CID, sa.Port)
	}
	return fmt.Sprintf("%v", sa)
}
