// Package acl decides which proxied requests may pass: an ordered list of
// allow and deny rules, first match wins, on the client address, user,
// method, destination host, destination address and port.
//
// Destination addresses are compared as the addresses actually dialed, after
// resolution, and every numeric spelling of a host is first turned into
// the address it means (CanonicalHost): decimal ("2130706433"), octal
// ("0177.0.0.1"), hex ("0x7f.1"), short forms ("127.1"), IPv4-mapped IPv6
// ("[::ffff:127.0.0.1]"), a trailing dot and mixed case cannot dodge a rule.
package acl

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Action is what a rule does with a matching request.
type Action int

// Actions. The zero value is Allow.
const (
	Allow Action = iota
	Deny
)

func (a Action) String() string {
	if a == Deny {
		return "deny"
	}
	return "allow"
}

// PortRange is an inclusive range of ports.
type PortRange struct{ Lo, Hi int }

// TimeRange is a time of day from From up to (not including) To, in
// minutes since midnight; From > To wraps past midnight (22:00-06:00).
type TimeRange struct{ From, To int }

func (tr TimeRange) contains(m int) bool {
	if tr.From <= tr.To {
		return tr.From <= m && m < tr.To
	}
	return m >= tr.From || m < tr.To
}

// Rule matches a request when every one of its non-empty fields matches;
// an empty field matches anything.
type Rule struct {
	Action  Action
	Clients []netip.Prefix // client address
	Users   []string       // authenticated user (or the user a client address maps to)
	Classes []string       // the user's class
	Methods []string       // request method, CONNECT included; case-sensitive as in HTTP
	// Hosts are destination host patterns: "example.com" (exactly),
	// ".example.com" (it and every name under it), "*.example.com" or any
	// pattern with '*' (each '*' matches any run of characters). IP
	// literals are compared in canonical form.
	Hosts []string
	Dests []netip.Prefix // destination address, after resolution
	Ports []PortRange    // destination port
	Times []TimeRange    // local time of day of the request
}

// List is an ordered rule list. Its zero value allows everything except
// CONNECT to ports other than 443.
type List struct {
	Rules []Rule
	// Default is the action when no rule matches; zero: Allow.
	Default Action
	// ConnectPorts are the ports CONNECT may reach, checked before the
	// rules; if empty, 443 only.
	ConnectPorts []PortRange
}

// Default returns the list used when none is configured.
func Default() *List { return &List{} }

// Request is what a decision looks at.
type Request struct {
	Client netip.Addr
	User   string
	Class  string // the user's class, if any
	Method string
	Host   string     // as CanonicalHost returns it
	Port   int        // destination port
	Addr   netip.Addr // resolved destination address, unmapped
	// Time is when the request came; rules with Times never match a
	// zero Time.
	Time time.Time
}

// Decision is the outcome of Check.
type Decision struct {
	Action Action
	// Rule is the index of the matching rule, -1 for the default, -2 for
	// the CONNECT port check.
	Rule int
}

// Check returns what the list does with r.
func (l *List) Check(r Request) Decision {
	r.Client = r.Client.Unmap()
	r.Addr = r.Addr.Unmap()
	if r.Method == "CONNECT" {
		ports := l.ConnectPorts
		if len(ports) == 0 {
			ports = []PortRange{{443, 443}}
		}
		if !inPorts(ports, r.Port) {
			return Decision{Action: Deny, Rule: -2}
		}
	}
	for i := range l.Rules {
		if l.Rules[i].matches(r) {
			return Decision{Action: l.Rules[i].Action, Rule: i}
		}
	}
	return Decision{Action: l.Default, Rule: -1}
}

// CheckHost decides r before its destination is resolved, when no rule
// that looks at the destination address can come first: it returns the
// decision Check would give for every address, and false when the address
// is needed. A denied name then costs no DNS lookup.
func (l *List) CheckHost(r Request) (Decision, bool) {
	r.Addr = netip.Addr{}
	r.Client = r.Client.Unmap()
	if r.Method == "CONNECT" {
		if d := l.Check(r); d.Rule == -2 {
			return d, true
		}
	}
	for i := range l.Rules {
		rule := l.Rules[i]
		if len(rule.Dests) > 0 {
			rule.Dests = nil
			if rule.matches(r) {
				return Decision{}, false // depends on the address
			}
			continue
		}
		if rule.matches(r) {
			return Decision{Action: rule.Action, Rule: i}, true
		}
	}
	return Decision{Action: l.Default, Rule: -1}, true
}

func (rule *Rule) matches(r Request) bool {
	if len(rule.Clients) > 0 && !inPrefixes(rule.Clients, r.Client) {
		return false
	}
	if len(rule.Users) > 0 && !contains(rule.Users, r.User) {
		return false
	}
	if len(rule.Classes) > 0 && !contains(rule.Classes, r.Class) {
		return false
	}
	if len(rule.Methods) > 0 && !contains(rule.Methods, r.Method) {
		return false
	}
	if len(rule.Times) > 0 {
		if r.Time.IsZero() {
			return false
		}
		m, ok := r.Time.Hour()*60+r.Time.Minute(), false
		for _, tr := range rule.Times {
			ok = ok || tr.contains(m)
		}
		if !ok {
			return false
		}
	}
	if len(rule.Hosts) > 0 {
		ok := false
		for _, p := range rule.Hosts {
			if MatchHost(p, r.Host) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(rule.Dests) > 0 && !inPrefixes(rule.Dests, r.Addr) {
		return false
	}
	if len(rule.Ports) > 0 && !inPorts(rule.Ports, r.Port) {
		return false
	}
	return true
}

func inPrefixes(ps []netip.Prefix, a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func inPorts(ps []PortRange, port int) bool {
	for _, p := range ps {
		if p.Lo <= port && port <= p.Hi {
			return true
		}
	}
	return false
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// MatchHost reports whether host (canonical) matches pattern (see
// Rule.Hosts). Patterns are canonicalised the same way as hosts.
func MatchHost(pattern, host string) bool {
	switch {
	case strings.HasPrefix(pattern, "."):
		p := strings.ToLower(strings.TrimSuffix(pattern, "."))
		if len(p) < 2 {
			return false // "." or "..": no name; ParseRule refuses them
		}
		return host == p[1:] || strings.HasSuffix(host, p)
	case strings.IndexByte(pattern, '*') >= 0:
		return Glob(strings.ToLower(strings.TrimSuffix(pattern, ".")), host)
	}
	p, _ := CanonicalHost(pattern)
	return p == host
}

// Glob matches s against p where '*' matches any run of characters
// (including none, dots and slashes); every other byte matches itself.
func Glob(p, s string) bool {
	star, sAt := -1, 0
	i, j := 0, 0
	for j < len(s) {
		switch {
		case i < len(p) && p[i] == '*':
			star, sAt = i, j
			i++
		case i < len(p) && p[i] == s[j]:
			i++
			j++
		case star >= 0:
			sAt++
			i, j = star+1, sAt
		default:
			return false
		}
	}
	for i < len(p) && p[i] == '*' {
		i++
	}
	return i == len(p)
}

// CanonicalHost returns host in the one spelling rules compare: lower
// case, without a trailing dot or IPv6 brackets, and, when it is an address
// in any numeric spelling, that address's standard form (IPv4-mapped IPv6
// unmapped) along with the address itself.
func CanonicalHost(host string) (string, netip.Addr) {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	if ip, err := netip.ParseAddr(h); err == nil {
		if ip.Zone() != "" {
			return h, netip.Addr{}
		}
		ip = ip.Unmap()
		return ip.String(), ip
	}
	if ip, ok := parseIPv4Any(h); ok {
		return ip.String(), ip
	}
	return h, netip.Addr{}
}

// parseIPv4Any parses the inet_aton spellings of an IPv4 address: one to
// four parts separated by dots, each decimal, octal (leading 0) or hex
// (0x); the last part fills the remaining bytes.
func parseIPv4Any(s string) (netip.Addr, bool) {
	if s == "" {
		return netip.Addr{}, false
	}
	parts := strings.Split(s, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	vals := make([]uint64, len(parts))
	for i, p := range parts {
		v, ok := parseIPv4Part(p)
		if !ok {
			return netip.Addr{}, false
		}
		vals[i] = v
	}
	var n uint64
	for i, v := range vals[:len(vals)-1] {
		if v > 255 {
			return netip.Addr{}, false
		}
		n |= v << (24 - 8*uint(i))
	}
	last := vals[len(vals)-1]
	if last >= 1<<(8*uint(5-len(vals))) {
		return netip.Addr{}, false
	}
	n |= last
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), true
}

func parseIPv4Part(p string) (uint64, bool) {
	base := 10
	switch {
	case p == "":
		return 0, false
	case strings.HasPrefix(p, "0x"):
		base, p = 16, p[2:]
		if p == "" {
			return 0, true // "0x" is 0 to inet_aton
		}
	case len(p) > 1 && p[0] == '0':
		base, p = 8, p[1:]
	}
	if p[0] == '+' || p[0] == '-' {
		return 0, false
	}
	v, err := strconv.ParseUint(p, base, 32)
	if err != nil {
		return 0, false
	}
	return v, true
}

// ParsePorts parses "443", "8000-8080" or "*".
func ParsePorts(s string) (PortRange, error) {
	if s == "*" {
		return PortRange{1, 65535}, nil
	}
	lo, hi, isRange := strings.Cut(s, "-")
	a, err1 := strconv.Atoi(lo)
	b := a
	var err2 error
	if isRange {
		b, err2 = strconv.Atoi(hi)
	}
	if err1 != nil || err2 != nil || a < 1 || b > 65535 || a > b {
		return PortRange{}, fmt.Errorf("%q: want a port, LO-HI or *", s)
	}
	return PortRange{a, b}, nil
}

// ParsePrefix parses an address or CIDR in any spelling CanonicalHost
// accepts for the address part. An IPv4-mapped IPv6 prefix
// (::ffff:10.0.0.0/104) means the IPv4 prefix it maps (10.0.0.0/8).
func ParsePrefix(s string) (netip.Prefix, error) {
	addr, bits, hasBits := strings.Cut(s, "/")
	_, ip := CanonicalHost(addr)
	if !ip.IsValid() {
		return netip.Prefix{}, fmt.Errorf("%q: not an address or CIDR", s)
	}
	n := ip.BitLen()
	if hasBits {
		width := ip.BitLen()
		mapped := strings.Contains(addr, ":") && ip.Is4()
		if mapped {
			width = 128
		}
		var err error
		n, err = strconv.Atoi(bits)
		if err != nil || n < 0 || n > width || bits[0] == '+' {
			return netip.Prefix{}, fmt.Errorf("%q: bad prefix length", s)
		}
		if mapped {
			if n < 96 {
				return netip.Prefix{}, fmt.Errorf("%q: prefix too short for an IPv4-mapped address", s)
			}
			n -= 96
		}
	}
	p, err := ip.Prefix(n)
	if err != nil {
		return netip.Prefix{}, errors.Join(fmt.Errorf("%q: bad prefix", s), err)
	}
	return p.Masked(), nil
}
