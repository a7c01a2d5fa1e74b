// Package allow is the outbound allowlist of bridges: the upstream
// addresses a service may connect to, like the allowlist of
// aws-nitro-enclaves vsock-proxy. A guest that reaches the outside only
// through sluice reaches exactly what the list names.
//
// A rule is HOST:PORT, ADDR:PORT, CIDR:PORT or the IPv6 forms in brackets
// ([2001:db8::1]:443, [2001:db8::/32]:443). PORT is a number, a range
// LO-HI, or * for every port. Examples:
//
//	10.0.0.5:22          one address, one port
//	192.168.0.0/16:*     a subnet, every port
//	[fd00::/8]:8000-8999 an IPv6 prefix and a port range
//	api.example.com:443  a host name (see below)
//
// Address and prefix rules match the resolved address being dialed. A host
// name rule matches the name the upstream was asked for (case-insensitive,
// trailing dot ignored), whatever it resolves to: the name is trusted, as
// vsock-proxy trusts its allowlisted names. Addresses of other families
// (unix, vsock) match no rule.
package allow

import (
	"errors"
	"fmt"
	"github.com/sluice-proxy/sluice/pkg/endpoint"
	"net/netip"
	"strconv"
	"strings"

	"github.com/sluice-proxy/sluice/pkg/sys"
)

// ErrBadRule is wrapped by every error Parse returns.
var ErrBadRule = errors.New("bad allow rule")

// expected is appended to parse errors so the user knows the syntax.
const expected = "expected HOST:PORT, ADDR:PORT, CIDR:PORT or [IPv6 or prefix]:PORT, PORT a number, LO-HI or *"

// Rule is one entry of a List.
type Rule struct {
	prefix netip.Prefix // valid for address and prefix rules
	name   string       // lower case, no trailing dot, for host name rules
	lo, hi uint16       // port range, inclusive
}

// List is an allowlist. A nil *List allows everything; an empty one
// nothing. It is read-only once built, so loops may share it.
type List struct {
	rules []Rule
}

// Parse builds a List from rules in the syntax of the package comment.
func Parse(rules ...string) (*List, error) {
	l := &List{rules: make([]Rule, 0, len(rules))}
	for _, s := range rules {
		r, err := ParseRule(s)
		if err != nil {
			return nil, err
		}
		l.rules = append(l.rules, r)
	}
	return l, nil
}

// ParseRule parses one rule.
func ParseRule(s string) (Rule, error) {
	r, err := parseRule(s)
	if err != nil {
		return Rule{}, fmt.Errorf("%w %q: %s; %s", ErrBadRule, s, err, expected)
	}
	return r, nil
}

func parseRule(s string) (Rule, error) {
	if s == "" {
		return Rule{}, errors.New("empty rule")
	}
	if strings.ContainsAny(s, " \t\r\n\x00") {
		return Rule{}, errors.New("contains white space or a NUL byte")
	}
	var host, port string
	bracketed := strings.HasPrefix(s, "[")
	if bracketed {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return Rule{}, errors.New("missing ']'")
		}
		host = s[1:end]
		rest := s[end+1:]
		if !strings.HasPrefix(rest, ":") {
			return Rule{}, errors.New("missing :PORT after ']'")
		}
		port = rest[1:]
	} else {
		i := strings.LastIndexByte(s, ':')
		if i < 0 {
			return Rule{}, errors.New("missing :PORT")
		}
		host, port = s[:i], s[i+1:]
		if strings.Contains(host, ":") {
			return Rule{}, errors.New("IPv6 addresses and prefixes need brackets, as in [2001:db8::/32]:443")
		}
	}
	var r Rule
	var err error
	if r.lo, r.hi, err = parsePorts(port); err != nil {
		return Rule{}, err
	}
	if host == "" {
		return Rule{}, errors.New("missing host, address or prefix before :PORT")
	}
	if r.prefix, err = parsePrefix(host); err == nil {
		if r.prefix.Addr().Is4In6() {
			return Rule{}, fmt.Errorf("%s is IPv4-mapped: write the IPv4 form", host)
		}
		if bracketed != r.prefix.Addr().Is6() {
			if bracketed {
				return Rule{}, fmt.Errorf("%s in brackets is not IPv6", host)
			}
			return Rule{}, fmt.Errorf("%s is IPv6 and needs brackets", host)
		}
		return r, nil
	}
	if strings.ContainsAny(host, "/%") || bracketed || looksNumeric(host) {
		return Rule{}, err
	}
	if !endpoint.ValidHost(host) {
		return Rule{}, fmt.Errorf("%q is not a host name, IP address or CIDR prefix", host)
	}
	r.name = strings.ToLower(strings.TrimSuffix(host, "."))
	return r, nil
}

// parsePrefix parses an address (a /32 or /128 prefix) or a CIDR prefix
// without host bits.
func parsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address", s)
		}
		if ip.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%s: zones are not allowed in rules", s)
		}
		return netip.PrefixFrom(ip, ip.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR prefix", s)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%s has bits set after the prefix length; did you mean %s?", s, p.Masked())
	}
	return p, nil
}

// looksNumeric reports whether s is made of digits and dots only: a
// mistyped IPv4 address, never a host name.
func looksNumeric(s string) bool {
	return strings.Trim(s, "0123456789.") == ""
}

func parsePorts(s string) (lo, hi uint16, err error) {
	if s == "*" {
		return 0, 65535, nil
	}
	a, b, isRange := strings.Cut(s, "-")
	l, err := parsePort(a)
	if err != nil {
		return 0, 0, err
	}
	if !isRange {
		return l, l, nil
	}
	h, err := parsePort(b)
	if err != nil {
		return 0, 0, err
	}
	if h < l {
		return 0, 0, fmt.Errorf("port range %s is empty (%d > %d)", s, l, h)
	}
	return l, h, nil
}

func parsePort(s string) (uint16, error) {
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("port %q is not a number from 0 to 65535", s)
	}
	return uint16(p), nil
}

// String formats r in the syntax ParseRule accepts.
func (r Rule) String() string {
	var host string
	switch {
	case r.name != "":
		host = r.name
	case r.prefix.Bits() == r.prefix.Addr().BitLen():
		host = r.prefix.Addr().String()
	default:
		host = r.prefix.String()
	}
	if r.prefix.IsValid() && r.prefix.Addr().Is6() {
		host = "[" + host + "]"
	}
	var port string
	switch {
	case r.lo == 0 && r.hi == 65535:
		port = "*"
	case r.lo == r.hi:
		port = strconv.Itoa(int(r.lo))
	default:
		port = strconv.Itoa(int(r.lo)) + "-" + strconv.Itoa(int(r.hi))
	}
	return host + ":" + port
}

// Allows reports whether a service may connect to sa, the resolved address
// of an upstream that was asked for by the name host ("" or an IP literal
// when there was no name). A nil List allows everything.
func (l *List) Allows(host string, sa sys.Sockaddr) bool {
	if l == nil {
		return true
	}
	ip, port, ok := addrPort(sa)
	if !ok {
		return false
	}
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	for _, r := range l.rules {
		if port < r.lo || port > r.hi {
			continue
		}
		if r.name != "" {
			if r.name == name {
				return true
			}
			continue
		}
		if r.prefix.Contains(ip) {
			return true
		}
	}
	return false
}

// addrPort extracts the IP (IPv4-mapped IPv6 unmapped) and port of sa.
func addrPort(sa sys.Sockaddr) (netip.Addr, uint16, bool) {
	switch sa := sa.(type) {
	case *sys.SockaddrInet4:
		return netip.AddrFrom4(sa.Addr), uint16(sa.Port), true
	case *sys.SockaddrInet6:
		return netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port), true
	}
	return netip.Addr{}, 0, false
}
