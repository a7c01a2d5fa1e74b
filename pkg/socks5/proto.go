package socks5

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Version is the protocol version byte of every SOCKS5 message (RFC 1928
// section 3).
const Version = 0x05

// Method is an authentication method (RFC 1928 section 3).
type Method byte

// Methods sluice knows.
const (
	MethodNoAuth       Method = 0x00 // NO AUTHENTICATION REQUIRED
	MethodGSSAPI       Method = 0x01 // GSSAPI (RFC 1961); never chosen
	MethodUserPass     Method = 0x02 // USERNAME/PASSWORD (RFC 1929)
	MethodNoAcceptable Method = 0xFF // NO ACCEPTABLE METHODS: the client must close
)

// Command is a request's CMD (RFC 1928 section 4).
type Command byte

// Commands.
const (
	CmdConnect      Command = 0x01
	CmdBind         Command = 0x02
	CmdUDPAssociate Command = 0x03
)

// String names the command as access logs and ACL rules (`method`) see it.
func (c Command) String() string {
	switch c {
	case CmdConnect:
		return "CONNECT"
	case CmdBind:
		return "BIND"
	case CmdUDPAssociate:
		return "UDP"
	}
	return fmt.Sprintf("CMD%d", byte(c))
}

// Address types (ATYP, RFC 1928 section 5).
const (
	AtypIPv4   = 0x01
	AtypDomain = 0x03
	AtypIPv6   = 0x04
)

// Reply is a reply's REP field (RFC 1928 section 6).
type Reply byte

// Reply codes, as RFC 1928 section 6 means them.
const (
	RepSucceeded        Reply = 0x00 // succeeded
	RepGeneralFailure   Reply = 0x01 // general SOCKS server failure
	RepNotAllowed       Reply = 0x02 // connection not allowed by ruleset
	RepNetUnreachable   Reply = 0x03 // network unreachable
	RepHostUnreachable  Reply = 0x04 // host unreachable (no address, no answer)
	RepConnRefused      Reply = 0x05 // connection refused
	RepTTLExpired       Reply = 0x06 // TTL expired
	RepCmdNotSupported  Reply = 0x07 // command not supported
	RepAddrNotSupported Reply = 0x08 // address type not supported
)

// RFC 1929 sub-negotiation.
const (
	AuthVersion = 0x01 // VER of the username/password request and reply
	AuthSuccess = 0x00 // STATUS success; any other value is a failure
	AuthFailure = 0x01
)

// Errors of the parsers. ErrShort means the bytes so far are a valid
// prefix: read more and parse again.
var (
	ErrShort    = errors.New("socks5: message incomplete")
	ErrVersion  = errors.New("socks5: not SOCKS version 5")
	ErrNoMethod = errors.New("socks5: greeting offers no method")
	ErrAuthVer  = errors.New("socks5: bad username/password version")
	ErrAddrType = errors.New("socks5: address type not supported")
	ErrReserved = errors.New("socks5: reserved byte not zero")
	ErrEmpty    = errors.New("socks5: empty domain name")
)

// Addr is a request's or UDP datagram's destination: an IP address, or a
// domain name (never both), and a port.
type Addr struct {
	IP   netip.Addr
	Host string // a domain name as the client sent it; empty for IP addresses
	Port uint16
}

// String returns host:port (IPv6 in brackets), "-" for the zero Addr.
func (a Addr) String() string {
	if a.Host != "" {
		return a.Host + ":" + itoa(a.Port)
	}
	if !a.IP.IsValid() {
		return "-" // a request refused before its address could be read
	}
	return netip.AddrPortFrom(a.IP, a.Port).String()
}

func itoa(p uint16) string {
	var b [5]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + p%10)
		p /= 10
		if p == 0 {
			return string(b[i:])
		}
	}
}

// ParseGreeting parses the version/method selection message
//
//	VER | NMETHODS | METHODS (1 to 255)
//
// and returns the offered methods (a sub-slice of b) and the message's
// length.
func ParseGreeting(b []byte) (methods []byte, n int, err error) {
	if len(b) < 2 {
		if len(b) == 1 && b[0] != Version {
			return nil, 0, ErrVersion
		}
		return nil, 0, ErrShort
	}
	if b[0] != Version {
		return nil, 0, ErrVersion
	}
	m := int(b[1])
	if m == 0 {
		return nil, 0, ErrNoMethod
	}
	if len(b) < 2+m {
		return nil, 0, ErrShort
	}
	return b[2 : 2+m], 2 + m, nil
}

// Offers reports whether methods includes m.
func Offers(methods []byte, m Method) bool {
	for _, x := range methods {
		if Method(x) == m {
			return true
		}
	}
	return false
}

// ParseUserPass parses an RFC 1929 username/password request
//
//	VER (1) | ULEN | UNAME (1 to 255) | PLEN | PASSWD (1 to 255)
//
// Empty names and passwords are accepted by the parser (the user table
// refuses them).
func ParseUserPass(b []byte) (user, pass string, n int, err error) {
	if len(b) < 2 {
		if len(b) == 1 && b[0] != AuthVersion {
			return "", "", 0, ErrAuthVer
		}
		return "", "", 0, ErrShort
	}
	if b[0] != AuthVersion {
		return "", "", 0, ErrAuthVer
	}
	ul := int(b[1])
	if len(b) < 2+ul+1 {
		return "", "", 0, ErrShort
	}
	pl := int(b[2+ul])
	end := 3 + ul + pl
	if len(b) < end {
		return "", "", 0, ErrShort
	}
	return string(b[2 : 2+ul]), string(b[3+ul : end]), end, nil
}

// Request is a client's request (RFC 1928 section 4).
type Request struct {
	Cmd  Command
	Addr Addr
}

// ParseRequest parses a request
//
//	VER | CMD | RSV (0) | ATYP | DST.ADDR | DST.PORT
//
// An unknown command is returned as it is (the caller answers
// RepCmdNotSupported); an unknown address type is ErrAddrType (answer
// RepAddrNotSupported), since the message's length cannot be known.
func ParseRequest(b []byte) (Request, int, error) {
	if len(b) >= 1 && b[0] != Version {
		return Request{}, 0, ErrVersion
	}
	if len(b) >= 3 && b[2] != 0 {
		return Request{}, 0, ErrReserved
	}
	if len(b) < 4 {
		return Request{}, 0, ErrShort
	}
	a, n, err := parseAddr(b[3:])
	if err != nil {
		return Request{}, 0, err
	}
	return Request{Cmd: Command(b[1]), Addr: a}, 3 + n, nil
}

// parseAddr parses ATYP | ADDR | PORT.
func parseAddr(b []byte) (Addr, int, error) {
	if len(b) < 1 {
		return Addr{}, 0, ErrShort
	}
	var a Addr
	var n int
	switch b[0] {
	case AtypIPv4:
		n = 1 + 4
		if len(b) < n+2 {
			return Addr{}, 0, ErrShort
		}
		a.IP = netip.AddrFrom4([4]byte(b[1:5]))
	case AtypIPv6:
		n = 1 + 16
		if len(b) < n+2 {
			return Addr{}, 0, ErrShort
		}
		// An IPv4-mapped address stays IPv6 here; the policy unmaps it,
		// so ::ffff:10.0.0.1 meets the rules of 10.0.0.1.
		a.IP = netip.AddrFrom16([16]byte(b[1:17]))
	case AtypDomain:
		if len(b) < 2 {
			return Addr{}, 0, ErrShort
		}
		l := int(b[1])
		if l == 0 {
			return Addr{}, 0, ErrEmpty
		}
		n = 2 + l
		if len(b) < n+2 {
			return Addr{}, 0, ErrShort
		}
		a.Host = string(b[2:n])
	default:
		return Addr{}, 0, ErrAddrType
	}
	a.Port = binary.BigEndian.Uint16(b[n:])
	return a, n + 2, nil
}

// appendAddr appends ATYP | ADDR | PORT for an IP address (the zero
// address: 0.0.0.0:0).
func appendAddr(dst []byte, ap netip.AddrPort) []byte {
	ip := ap.Addr().Unmap()
	switch {
	case ip.Is6():
		a := ip.As16()
		dst = append(dst, AtypIPv6)
		dst = append(dst, a[:]...)
	case ip.Is4():
		a := ip.As4()
		dst = append(dst, AtypIPv4)
		dst = append(dst, a[:]...)
	default:
		dst = append(dst, AtypIPv4, 0, 0, 0, 0)
	}
	return binary.BigEndian.AppendUint16(dst, ap.Port())
}

// AppendReply appends a reply
//
//	VER | REP | RSV (0) | ATYP | BND.ADDR | BND.PORT
//
// with bound as BND (the zero AddrPort for 0.0.0.0:0, as failures carry).
func AppendReply(dst []byte, rep Reply, bound netip.AddrPort) []byte {
	dst = append(dst, Version, byte(rep), 0)
	return appendAddr(dst, bound)
}

// UDPHeader is the header of a UDP ASSOCIATE datagram (RFC 1928
// section 7).
type UDPHeader struct {
	// Frag is the fragment number; 0 is a whole datagram. sluice
	// implements no reassembly, so it drops every datagram with Frag != 0
	// (which the RFC allows).
	Frag byte
	Addr Addr
}

// ParseUDPHeader parses
//
//	RSV (2, zero) | FRAG | ATYP | DST.ADDR | DST.PORT | DATA
//
// and returns the header and its length; the data follows it. A datagram
// cannot be read further, so a truncated one is ErrShort too: drop it.
func ParseUDPHeader(b []byte) (UDPHeader, int, error) {
	if len(b) < 4 {
		return UDPHeader{}, 0, ErrShort
	}
	if b[0] != 0 || b[1] != 0 {
		return UDPHeader{}, 0, ErrReserved
	}
	a, n, err := parseAddr(b[3:])
	if err != nil {
		return UDPHeader{}, 0, err
	}
	return UDPHeader{Frag: b[2], Addr: a}, 3 + n, nil
}

// AppendUDPHeader appends the header of a whole datagram from src.
func AppendUDPHeader(dst []byte, src netip.AddrPort) []byte {
	dst = append(dst, 0, 0, 0)
	return appendAddr(dst, src)
}

// SOCKS4 and SOCKS4a, the protocol before RFC 1928 that some clients
// still speak (no RFC; the de facto specifications "SOCKS: A protocol for
// TCP proxy across firewalls" and "SOCKS 4A"). sluice takes CONNECT only.
const (
	Version4     = 0x04
	Rep4Granted  = 90 // request granted
	Rep4Rejected = 91 // request rejected or failed
)

// ErrTooLong is a SOCKS4 user id or SOCKS4a name over 255 bytes.
var ErrTooLong = errors.New("socks4: field too long")

// ParseRequest4 parses a SOCKS4 or SOCKS4a request
//
//	VN (4) | CD | DSTPORT (2) | DSTIP (4) | USERID | NUL [ | DOMAIN | NUL ]
//
// where a DSTIP of 0.0.0.x (x != 0) announces the SOCKS4a domain name.
// It returns the request and the user id the client sent.
func ParseRequest4(b []byte) (Request, string, int, error) {
	if len(b) >= 1 && b[0] != Version4 {
		return Request{}, "", 0, ErrVersion
	}
	if len(b) < 9 {
		return Request{}, "", 0, ErrShort
	}
	user, n, err := cString(b[8:])
	if err != nil {
		return Request{}, "", 0, err
	}
	end := 8 + n
	r := Request{Cmd: Command(b[1]), Addr: Addr{Port: binary.BigEndian.Uint16(b[2:4])}}
	ip := [4]byte(b[4:8])
	if ip[0] == 0 && ip[1] == 0 && ip[2] == 0 && ip[3] != 0 {
		host, m, err := cString(b[end:])
		if err != nil {
			return Request{}, "", 0, err
		}
		if host == "" {
			return Request{}, "", 0, ErrEmpty
		}
		r.Addr.Host = host
		end += m
	} else {
		r.Addr.IP = netip.AddrFrom4(ip)
	}
	return r, user, end, nil
}

// cString reads a NUL-terminated field of at most 255 bytes and returns
// it and the bytes it took, NUL included.
func cString(b []byte) (string, int, error) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), i + 1, nil
		}
		if i == 255 {
			return "", 0, ErrTooLong
		}
	}
	return "", 0, ErrShort
}

// AppendReply4 appends a SOCKS4 reply: VN (0) | CD | DSTPORT | DSTIP.
func AppendReply4(dst []byte, granted bool, bound netip.AddrPort) []byte {
	cd := byte(Rep4Rejected)
	if granted {
		cd = Rep4Granted
	}
	ip := bound.Addr().Unmap()
	var a [4]byte
	if ip.Is4() {
		a = ip.As4()
	}
	dst = append(dst, 0, cd)
	dst = binary.BigEndian.AppendUint16(dst, bound.Port())
	return append(dst, a[:]...)
}
