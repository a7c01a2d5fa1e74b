package httpproxy

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"

	"github.com/sluice-proxy/sluice/pkg/sys"
)

// target is where a request goes: the origin's host and port and, for
// absolute-form requests, the origin-form path to send it.
type target struct {
	host string // lower case, IPv6 without brackets, no trailing dot
	port int
	path string // "/..." or "*"; empty for CONNECT
}

// authority returns host:port as it goes in a Host field (port omitted
// when it is the default, 80).
func (t target) authority() string {
	h := t.host
	if strings.IndexByte(h, ':') >= 0 {
		h = "[" + h + "]"
	}
	if t.port == 80 && t.path != "" {
		return h
	}
	return h + ":" + strconv.Itoa(t.port)
}

// url returns the target for logs.
func (t target) url() string {
	if t.path == "" {
		return t.authority()
	}
	return "http://" + t.authority() + t.path
}

var errTarget = errors.New("bad request target")

// parseAbsolute parses an absolute-form http URI (RFC 9112 section 3.2.2).
// Other schemes, userinfo and fragments are refused.
func parseAbsolute(s string) (target, error) {
	const scheme = "http://"
	if len(s) < len(scheme) || !strings.EqualFold(s[:len(scheme)], scheme) {
		return target{}, errors.New("only http:// URIs can be proxied (use CONNECT for https)")
	}
	rest := s[len(scheme):]
	end := strings.IndexAny(rest, "/?#")
	auth, path := rest, "/"
	if end >= 0 {
		auth, path = rest[:end], rest[end:]
		if path[0] == '?' {
			path = "/" + path
		}
	}
	if strings.IndexByte(path, '#') >= 0 {
		return target{}, errors.New("fragment in request target")
	}
	t, err := parseAuthority(auth, 80)
	if err != nil {
		return target{}, err
	}
	t.path = path
	return t, nil
}

// parseAuthority parses host[:port]; port defaults to def (0: required).
func parseAuthority(s string, def int) (target, error) {
	if strings.IndexByte(s, '@') >= 0 {
		return target{}, errors.New("userinfo in request target")
	}
	host, portStr := s, ""
	if strings.HasPrefix(s, "[") {
		i := strings.IndexByte(s, ']')
		if i < 0 {
			return target{}, errTarget
		}
		host = s[1:i]
		rest := s[i+1:]
		if rest != "" {
			if rest[0] != ':' {
				return target{}, errTarget
			}
			portStr = rest[1:]
		} else if def == 0 {
			return target{}, errors.New("missing port")
		}
		if !validIPv6(host) {
			return target{}, errors.New("bad IPv6 address in request target")
		}
	} else {
		if i := strings.LastIndexByte(s, ':'); i >= 0 {
			host, portStr = s[:i], s[i+1:]
		} else if def == 0 {
			return target{}, errors.New("missing port")
		}
		if !validRegName(host) {
			return target{}, errors.New("bad host in request target")
		}
	}
	port := def
	if portStr != "" || def == 0 {
		n, err := strconv.Atoi(portStr)
		if err != nil || n < 1 || n > 65535 || portStr[0] == '+' || len(portStr) > 5 {
			return target{}, errors.New("bad port in request target")
		}
		port = n
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "" {
		return target{}, errors.New("empty host in request target")
	}
	return target{host: host, port: port}, nil
}

// validRegName accepts DNS names and IPv4 literals in any spelling the
// ACL understands: letters, digits, '-', '_' and '.', at most 253 bytes.
func validRegName(h string) bool {
	if h == "" || len(h) > 254 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func validIPv6(h string) bool {
	if h == "" || len(h) > 45 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c >= '0' && c <= '9' || c == ':' || c == '.') {
			return false
		}
	}
	return true
}

// originalDst is where a connection accepted in transparent mode was
// going: the conntrack entry of a REDIRECT or DNAT, else, with TProxy,
// the local address of a connection a tproxy rule diverted. A connection
// to the listeners' own port was made to the proxy itself: its original
// destination is invalid, so an origin-form request on it cannot make
// the proxy connect to itself.
func (s *Service) originalDst(fd int) netip.AddrPort {
	sa, err := sys.OriginalDst(fd)
	if err != nil && s.cfg.TProxy {
		sa, err = sys.LocalAddr(fd)
	}
	if err != nil {
		return netip.AddrPort{}
	}
	orig := sockaddrAddrPort(sa)
	if int32(orig.Port()) == s.port.Load() {
		return netip.AddrPort{}
	}
	return orig
}
