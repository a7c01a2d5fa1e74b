package allow

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/sluice-proxy/sluice/pkg/sys"
)

func TestParseRule(t *testing.T) {
	tests := []struct {
		in, want string // want: the rule's String
	}{
		{"10.0.0.5:22", "10.0.0.5:22"},
		{"192.168.0.0/16:*", "192.168.0.0/16:*"},
		{"0.0.0.0/0:443", "0.0.0.0/0:443"},
		{"10.0.0.5/32:80", "10.0.0.5:80"},
		{"[2001:db8::1]:443", "[2001:db8::1]:443"},
		{"[fd00::/8]:8000-8999", "[fd00::/8]:8000-8999"},
		{"[::/0]:0-65535", "[::/0]:*"},
		{"API.Example.com.:443", "api.example.com:443"},
		{"localhost:5", "localhost:5"},
		{"10.0.0.1:7-7", "10.0.0.1:7"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := ParseRule(tt.in)
			if err != nil {
				t.Fatalf("ParseRule(%q): %v", tt.in, err)
			}
			if got := r.String(); got != tt.want {
				t.Fatalf("ParseRule(%q).String() = %q, want %q", tt.in, got, tt.want)
			}
			again, err := ParseRule(r.String())
			if err != nil || again != r {
				t.Fatalf("ParseRule(%q) = %+v, %v; want %+v", r.String(), again, err, r)
			}
		})
	}
}

func TestParseRuleErrors(t *testing.T) {
	tests := []struct{ in, why string }{
		{"", "empty rule"},
		{"10.0.0.1", "missing :PORT"},
		{":80", "missing host"},
		{"10.0.0.1:", `port "" is not a number`},
		{"10.0.0.1:http", `port "http" is not a number`},
		{"10.0.0.1:65536", `port "65536" is not a number`},
		{"10.0.0.1:90-80", "port range 90-80 is empty"},
		{"10.0.0.1:80-", `port "" is not a number`},
		{"10.0.0.0/33:80", `"10.0.0.0/33" is not a CIDR prefix`},
		{"10.1.2.3/8:80", "did you mean 10.0.0.0/8?"},
		{"10.0.0:80", `"10.0.0" is not an IP address`},
		{"2001:db8::1:443", "need brackets"},
		{"[10.0.0.1]:80", "in brackets is not IPv6"},
		{"[2001:db8::1]443", "missing :PORT after ']'"},
		{"[2001:db8::1:443", "missing ']'"},
		{"[fe80::1%eth0]:22", "zones are not allowed"},
		{"[::ffff:10.0.0.1]:80", "IPv4-mapped"},
		{"[example.com]:80", `"example.com" is not an IP address`},
		{"bad/host:80", `"bad/host" is not a CIDR prefix`},
		{"a..b:80", `"a..b" is not a host name`},
		{"a b:80", "white space"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParseRule(tt.in)
			if err == nil {
				t.Fatalf("ParseRule(%q) succeeded, want an error containing %q", tt.in, tt.why)
			}
			if !errors.Is(err, ErrBadRule) || !strings.Contains(err.Error(), tt.why) || !strings.Contains(err.Error(), "expected HOST:PORT") {
				t.Fatalf("ParseRule(%q) error %q: want ErrBadRule, %q and the expected syntax", tt.in, err, tt.why)
			}
		})
	}
}

func sockaddr(t *testing.T, s string) sys.Sockaddr {
	t.Helper()
	ap := netip.MustParseAddrPort(s)
	if ap.Addr().Is4() {
		return &sys.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	}
	return &sys.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
}

func TestAllows(t *testing.T) {
	list, err := Parse("10.0.0.5:22", "192.168.0.0/16:8000-8999", "[fd00::/8]:*", "api.example.com:443")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		host string
		sa   string
		want bool
	}{
		{"exact address and port", "", "10.0.0.5:22", true},
		{"exact address, other port", "", "10.0.0.5:23", false},
		{"neighbour address", "", "10.0.0.6:22", false},
		{"in the subnet, low end of the range", "", "192.168.3.4:8000", true},
		{"in the subnet, high end of the range", "", "192.168.3.4:8999", true},
		{"in the subnet, past the range", "", "192.168.3.4:9000", false},
		{"outside the subnet", "", "192.169.0.1:8080", false},
		{"IPv6 prefix, any port", "", "[fd12::1]:1", true},
		{"IPv6 outside the prefix", "", "[fe80::1]:1", false},
		{"IPv4-mapped IPv6 sockaddr matches the IPv4 rule", "", "[::ffff:10.0.0.5]:22", true},
		{"allowed name, whatever it resolved to", "api.example.com", "203.0.113.9:443", true},
		{"allowed name in other case with a dot", "API.example.COM.", "203.0.113.9:443", true},
		{"allowed name, other port", "api.example.com", "203.0.113.9:80", false},
		{"other name resolving to an allowed address", "evil.example", "10.0.0.5:22", true},
		{"other name", "evil.example", "203.0.113.9:443", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := list.Allows(tt.host, sockaddr(t, tt.sa)); got != tt.want {
				t.Fatalf("Allows(%q, %s) = %v, want %v", tt.host, tt.sa, got, tt.want)
			}
		})
	}
}

func TestAllowsEdges(t *testing.T) {
	var none *List
	if !none.Allows("", sockaddr(t, "1.2.3.4:5")) {
		t.Error("a nil list must allow everything")
	}
	empty, err := Parse()
	if err != nil {
		t.Fatal(err)
	}
	if empty.Allows("", sockaddr(t, "1.2.3.4:5")) {
		t.Error("an empty list must allow nothing")
	}
	all, err := Parse("0.0.0.0/0:*", "[::/0]:*")
	if err != nil {
		t.Fatal(err)
	}
	for _, sa := range []sys.Sockaddr{&sys.SockaddrUnix{Name: "/run/x.sock"}, &sys.SockaddrVM{CID: 2, Port: 22}} {
		if all.Allows("", sa) {
			t.Errorf("Allows(%T) = true: unix and vsock upstreams match no rule", sa)
		}
	}
	if _, err := Parse("10.0.0.1:1", "nonsense"); !errors.Is(err, ErrBadRule) {
		t.Errorf("Parse with a bad rule: %v, want ErrBadRule", err)
	}
}

// FuzzParseRule checks that ParseRule never panics, that whatever it
// accepts prints back to a rule that parses to the same value, and that
// matching an accepted rule never panics.
func FuzzParseRule(f *testing.F) {
	for _, s := range []string{"10.0.0.5:22", "192.168.0.0/16:*", "[fd00::/8]:8000-8999", "api.example.com:443", "[::1]:0", "1.2.3.4/0:1-2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRule(s)
		if err != nil {
			return
		}
		again, err := ParseRule(r.String())
		if err != nil || again != r {
			t.Fatalf("ParseRule(%q) = %+v; its String %q parses to %+v, %v", s, r, r.String(), again, err)
		}
		l := &List{rules: []Rule{r}}
		l.Allows(s, &sys.SockaddrInet4{Addr: [4]byte{10, 0, 0, 5}, Port: 22})
		l.Allows("", &sys.SockaddrInet6{Addr: [16]byte{0xfd}, Port: 8000})
	})
}
