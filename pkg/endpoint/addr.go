// Package endpoint parses sluice addresses and turns them into non-blocking
// listening and connecting sockets driven by a reactor loop.
//
// Address syntax:
//
//	tcp:HOST:PORT      TCP over IPv4 or IPv6, whatever HOST resolves to
//	tcp4:HOST:PORT     TCP over IPv4 only
//	tcp6:[ADDR]:PORT   TCP over IPv6 only
//	unix:/path         a unix stream socket (unix:@name for the abstract namespace)
//	vsock:CID:PORT     AF_VSOCK stream socket (CID a number, host or local)
//	vsock:any:PORT     AF_VSOCK, to listen on whatever context ID the machine has
//	HOST:PORT          the same as tcp:HOST:PORT
//
// HOST may be a name, an IPv4 address or a bracketed IPv6 address; an empty
// HOST listens on every address. udp: is reserved for later.
package endpoint

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Network is the kind of socket an address names.
type Network string

// Networks understood by Parse.
const (
	TCP   Network = "tcp"
	TCP4  Network = "tcp4"
	TCP6  Network = "tcp6"
	Unix  Network = "unix"
	Vsock Network = "vsock"
)

// Addr is a parsed endpoint address. For the tcp networks Host and Port are
// set; for unix, Path; for vsock, CID and Port.
type Addr struct {
	Network Network
	Host    string // name or IP literal, without brackets; "" means any
	Port    uint32 // 0-65535 for tcp; vsock ports are 32-bit
	Path    string // unix socket path; a leading '@' means abstract
	CID     uint32 // vsock context ID; VsockCIDAny means any (listen only)
}

// expected is appended to every parse error so the user knows the syntax.
const expected = "expected tcp:HOST:PORT, tcp4:HOST:PORT, tcp6:[ADDR]:PORT, unix:/path, vsock:CID:PORT, vsock:any:PORT or HOST:PORT"

// maxUnixPath is the room in sockaddr_un.sun_path, minus the trailing NUL.
const maxUnixPath = 107

// ErrBadAddress is wrapped by every error Parse returns.
var ErrBadAddress = errors.New("bad address")

// Parse parses an address in the syntax described in the package comment.
func Parse(s string) (Addr, error) {
	a, err := parse(s)
	if err != nil {
		return Addr{}, fmt.Errorf("%w %q: %s; %s", ErrBadAddress, s, err, expected)
	}
	return a, nil
}

func parse(s string) (Addr, error) {
	if s == "" {
		return Addr{}, errors.New("empty address")
	}
	if strings.ContainsAny(s, " \t\r\n\x00") {
		return Addr{}, errors.New("contains white space or a NUL byte")
	}
	scheme, rest, hasScheme := strings.Cut(s, ":")
	if hasScheme {
		switch Network(scheme) {
		case Unix:
			return parseUnix(rest)
		case TCP, TCP4, TCP6:
			return parseHostPort(Network(scheme), rest)
		case Vsock:
			return parseVsock(rest)
		case "udp", "udp4", "udp6":
			return Addr{}, fmt.Errorf("%s endpoints are not supported yet", scheme)
		}
	}
	// No known scheme: a bare HOST:PORT, or [v6]:PORT.
	return parseHostPort(TCP, s)
}

func parseUnix(path string) (Addr, error) {
	switch {
	case path == "" || path == "@":
		return Addr{}, errors.New("unix socket path is empty")
	case len(path) > maxUnixPath:
		return Addr{}, fmt.Errorf("unix socket path is %d bytes, longer than %d", len(path), maxUnixPath)
	}
	return Addr{Network: Unix, Path: path}, nil
}

func parseHostPort(n Network, s string) (Addr, error) {
	var host, port string
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return Addr{}, errors.New("missing ']' after IPv6 address")
		}
		host = s[1:end]
		rest := s[end+1:]
		if !strings.HasPrefix(rest, ":") {
			return Addr{}, errors.New("missing :PORT after ']'")
		}
		port = rest[1:]
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.Is6() {
			return Addr{}, fmt.Errorf("%q in brackets is not an IPv6 address", host)
		}
	} else {
		i := strings.LastIndexByte(s, ':')
		if i < 0 {
			return Addr{}, errors.New("missing :PORT")
		}
		host, port = s[:i], s[i+1:]
		if strings.Contains(host, ":") {
			return Addr{}, errors.New("IPv6 addresses need brackets, as in [::1]:80")
		}
		if host != "" && !ValidHost(host) {
			return Addr{}, fmt.Errorf("%q is not a host name or IP address", host)
		}
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return Addr{}, fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	a := Addr{Network: n, Host: host, Port: uint32(p)}
	if ip, err := netip.ParseAddr(host); err == nil {
		switch {
		case n == TCP4 && !ip.Is4():
			return Addr{}, fmt.Errorf("%s is not an IPv4 address", host)
		case n == TCP6 && !ip.Is6():
			return Addr{}, fmt.Errorf("%s is not an IPv6 address", host)
		}
	}
	return a, nil
}

// ValidHost accepts DNS names and IPv4 literals: letters, digits, '-', '.'
// and '_', in labels of at most 63 bytes, 253 bytes in all; one trailing
// dot is allowed.
func ValidHost(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range []byte(label) {
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
			if !ok {
				return false
			}
		}
	}
	return true
}

// String formats a in the syntax Parse accepts; Parse(a.String()) == a.
func (a Addr) String() string {
	switch a.Network {
	case Unix:
		return "unix:" + a.Path
	case Vsock:
		return formatVsock(a.CID, a.Port)
	case "":
		return ""
	}
	host := a.Host
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return string(a.Network) + ":" + host + ":" + strconv.Itoa(int(a.Port))
}
