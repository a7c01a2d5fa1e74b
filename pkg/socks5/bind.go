package socks5

import (
	"log/slog"
	"net/netip"
	"slices"

	"github.com/sluice-proxy/sluice/pkg/acl"
	"github.com/sluice-proxy/sluice/pkg/endpoint"
	"github.com/sluice-proxy/sluice/pkg/sys"
)

// BIND (RFC 1928 section 4), for FTP-style clients: the request names the
// host expected to connect (checked by the rules like a CONNECT target,
// method BIND, after resolution too). sluice listens on the address it
// would use to reach that host, port chosen by the kernel, and replies it;
// the first inbound connection from one of the host's addresses (any
// address when the request named 0.0.0.0 or ::, each checked by the
// rules) gets the second reply with its address, the listener closes,
// and the pair is relayed like a CONNECT session. No connection within
// ConnectTimeout gets a second reply "host unreachable" and the close.
// Connections from other hosts are reset.

// bindEnd is the handler of a BIND's listening socket.
type bindEnd struct{ c *conn }

// HandleEvent accepts on the listener.
func (b *bindEnd) HandleEvent(uint32) { b.c.acceptBound() }

// bind listens for the connection the client expects.
func (c *conn) bind() {
	ip := c.addrs[0]
	local, err := outwardAddr(ip)
	if err != nil {
		c.refuse(RepGeneralFailure, "bind: "+err.Error())
		return
	}
	fam, sa := sys.AFInet, sys.Sockaddr(&sys.SockaddrInet4{Addr: local.As4()})
	if !local.Is4() {
		fam, sa = sys.AFInet6, &sys.SockaddrInet6{Addr: local.As16()}
	}
	lfd, err := sys.Socket(fam)
	if err == nil {
		if err = sys.Listen(lfd, sa, 1); err != nil {
			sys.Close(lfd)
		}
	}
	if err != nil {
		c.refuse(RepGeneralFailure, "bind: "+err.Error())
		return
	}
	if err := c.loop.Register(lfd, sys.EventIn|sys.EventEdge, &bindEnd{c}); err != nil {
		sys.Close(lfd)
		c.refuse(RepGeneralFailure, "bind: "+err.Error())
		return
	}
	c.lfd = lfd
	var bound netip.AddrPort
	if sa, err := sys.LocalAddr(lfd); err == nil {
		bound = sockaddrAddrPort(sa)
	}
	var buf [32]byte
	if !c.send(AppendReply(buf[:0], RepSucceeded, bound)) {
		return
	}
	c.state = stBind
	c.loop.Schedule(&c.timer, c.s.cfg.ConnectTimeout)
	c.acceptBound()
}

// outwardAddr is the local address the kernel would send to ip from (a
// UDP socket connected there, which sends nothing); for an unspecified ip,
// the unspecified address of its family.
func outwardAddr(ip netip.Addr) (netip.Addr, error) {
	if ip.IsUnspecified() {
		return ip, nil
	}
	fam, sa := sys.AFInet, sys.Sockaddr(&sys.SockaddrInet4{Addr: ip.As4(), Port: 9})
	if !ip.Is4() {
		fam, sa = sys.AFInet6, &sys.SockaddrInet6{Addr: ip.As16(), Port: 9}
	}
	fd, err := sys.UDPSocket(fam)
	if err != nil {
		return netip.Addr{}, err
	}
	defer sys.Close(fd)
	if err := sys.Connect(fd, sa); err != nil {
		return netip.Addr{}, err
	}
	local, err := sys.LocalAddr(fd)
	if err != nil {
		return netip.Addr{}, err
	}
	return sockaddrAddrPort(local).Addr(), nil
}

// acceptBound takes inbound connections until one comes from the expected
// host.
func (c *conn) acceptBound() {
	for c.state == stBind {
		fd, err := sys.Accept(c.lfd)
		if err != nil {
			return // EAGAIN, or an aborted connection
		}
		var peer netip.AddrPort
		if sa, err := sys.PeerAddr(fd); err == nil {
			peer = sockaddrAddrPort(sa)
		}
		want := !c.addrs[0].IsUnspecified()
		if want && !slices.Contains(c.addrs, peer.Addr()) {
			c.s.warn.Log(slog.LevelInfo, "bind: connection from another host closed", "client", c.client.String(),
				"from", peer.String(), "want", c.host)
			sys.CloseReset(fd)
			continue
		}
		if d := c.s.acl.Check(c.aclRequest(peer.Addr())); d.Action == acl.Deny {
			c.deny(d, peer.Addr())
			sys.CloseReset(fd)
			return
		}
		sys.SetNoDelay(fd)
		if err := c.loop.Register(fd, endpoint.ConnEvents, c); err != nil {
			sys.Close(fd)
			c.refuse(RepGeneralFailure, "bind: "+err.Error())
			return
		}
		c.loop.Close(c.lfd)
		c.lfd = -1
		var buf [32]byte
		if !c.send(AppendReply(buf[:0], RepSucceeded, peer)) {
			c.loop.Close(fd)
			return
		}
		var early uint64
		if len(c.in) > 0 {
			n, werr := sys.Write(fd, c.in)
			if werr != nil || n != len(c.in) {
				c.loop.Close(fd)
				c.close(true)
				return
			}
			early = uint64(n)
		}
		c.startSession(fd, early)
		return
	}
}
