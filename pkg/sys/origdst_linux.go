package sys

import (
	"encoding/binary"
	"os"

	"golang.org/x/sys/unix"
)

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST from linux/netfilter_ipv6/ip6_tables.h.
const ip6tSOOriginalDst = 80

// OriginalDst returns the destination a connection had before netfilter
// redirected it to this socket (nftables/iptables REDIRECT or DNAT), read
// from conntrack with SO_ORIGINAL_DST (IPv4) or IP6T_SO_ORIGINAL_DST
// (IPv6). A connection that was not redirected answers ENOENT.
func OriginalDst(fd int) (Sockaddr, error) {
	local, err := unix.Getsockname(fd)
	if err != nil {
		return nil, os.NewSyscallError("getsockname", err)
	}
	if _, ok := local.(*unix.SockaddrInet6); ok {
		// Both structs are read in place: the kernel fills a
		// sockaddr_in6 at the start of the larger IPv6MTUInfo.
		info, err := unix.GetsockoptIPv6MTUInfo(fd, unix.SOL_IPV6, ip6tSOOriginalDst)
		if err == nil {
			sa := &unix.SockaddrInet6{Port: int(ntohs(info.Addr.Port)), Addr: info.Addr.Addr, ZoneId: info.Addr.Scope_id}
			return sa, nil
		}
		if err != unix.ENOENT && err != unix.ENOPROTOOPT {
			return nil, os.NewSyscallError("getsockopt IP6T_SO_ORIGINAL_DST", err)
		}
		// An IPv4 connection on a dual-stack socket: ask the IPv4 table.
	}
	mreq, err := unix.GetsockoptIPv6Mreq(fd, unix.SOL_IP, unix.SO_ORIGINAL_DST)
	if err != nil {
		return nil, os.NewSyscallError("getsockopt SO_ORIGINAL_DST", err)
	}
	// struct sockaddr_in: family (2 bytes), port (network order), address.
	b := mreq.Multiaddr
	sa := &unix.SockaddrInet4{Port: int(binary.BigEndian.Uint16(b[2:4]))}
	copy(sa.Addr[:], b[4:8])
	return sa, nil
}

// ntohs turns a port as the kernel stores it in a raw sockaddr (network
// order, read as a native uint16) into a number.
func ntohs(p uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], p)
	return binary.BigEndian.Uint16(b[:])
}
