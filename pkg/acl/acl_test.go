package acl

import (
	"net/netip"
	"testing"
	"time"
)

func TestCanonicalHost(t *testing.T) {
	tests := []struct{ in, want string }{
		{"127.0.0.1", "127.0.0.1"},
		{"2130706433", "127.0.0.1"},
		{"0177.0.0.1", "127.0.0.1"},
		{"0x7f.0.0.1", "127.0.0.1"},
		{"0X7F.0.0.1", "127.0.0.1"},
		{"0x7f000001", "127.0.0.1"},
		{"017700000001", "127.0.0.1"},
		{"127.1", "127.0.0.1"},
		{"127.0.1", "127.0.0.1"},
		{"10.65535", "10.0.255.255"},
		{"127.0.0.1.", "127.0.0.1"},
		{"[::ffff:127.0.0.1]", "127.0.0.1"},
		{"::FFFF:7F00:1", "127.0.0.1"},
		{"[::1]", "::1"},
		{"2001:DB8::1", "2001:db8::1"},
		{"Example.COM.", "example.com"},
		{"256.0.0.1", "256.0.0.1"},   // not an address: a (bad) name
		{"1.2.3.4.5", "1.2.3.4.5"},   // five parts: a name
		{"0x", "0.0.0.0"},            // inet_aton reads it as 0
		{"08.0.0.1", "08.0.0.1"},     // 8 is no octal digit: a name
		{"1.2.65536", "1.2.65536"},   // last part too large for 2 bytes
		{"4294967296", "4294967296"}, // more than 32 bits
		{"-1", "-1"},
	}
	for _, tt := range tests {
		if got, _ := CanonicalHost(tt.in); got != tt.want {
			t.Errorf("CanonicalHost(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func mustRule(t *testing.T, s string) Rule {
	t.Helper()
	r, err := ParseRule(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestCheck(t *testing.T) {
	l := &List{
		Rules: []Rule{
			mustRule(t, "deny dest 10.0.0.0/8,::ffff:192.168.0.0/112"),
			mustRule(t, "allow client 192.168.1.0/24 method GET,HEAD host .example.com"),
			mustRule(t, "deny host *.ads.*,tracker.net"),
			mustRule(t, "deny user guest port 25,8000-8100"),
			mustRule(t, "deny client 192.168.1.0/24"),
		},
		ConnectPorts: []PortRange{{443, 443}, {8443, 8443}},
	}
	lan := netip.MustParseAddr("192.168.1.7")
	other := netip.MustParseAddr("172.16.0.1")
	pub := netip.MustParseAddr("93.184.216.34")
	tests := []struct {
		name string
		r    Request
		want Action
		rule int
	}{
		{"private dest", Request{Client: other, Method: "GET", Host: "x", Port: 80, Addr: netip.MustParseAddr("10.1.2.3")}, Deny, 0},
		{"mapped private dest", Request{Client: other, Method: "GET", Host: "x", Port: 80, Addr: netip.MustParseAddr("::ffff:10.1.2.3")}, Deny, 0},
		{"rule with mapped prefix", Request{Client: other, Method: "GET", Host: "x", Port: 80, Addr: netip.MustParseAddr("192.168.9.9")}, Deny, 0},
		{"lan get example", Request{Client: lan, Method: "GET", Host: "www.example.com", Port: 80, Addr: pub}, Allow, 1},
		{"lan get example apex", Request{Client: lan, Method: "GET", Host: "example.com", Port: 80, Addr: pub}, Allow, 1},
		{"lan post example", Request{Client: lan, Method: "POST", Host: "www.example.com", Port: 80, Addr: pub}, Deny, 4},
		{"not a suffix", Request{Client: lan, Method: "GET", Host: "badexample.com", Port: 80, Addr: pub}, Deny, 4},
		{"ads wildcard", Request{Client: other, Method: "GET", Host: "a.ads.net", Port: 80, Addr: pub}, Deny, 2},
		{"exact host", Request{Client: other, Method: "GET", Host: "tracker.net", Port: 80, Addr: pub}, Deny, 2},
		{"guest port range", Request{Client: other, User: "guest", Method: "GET", Host: "x", Port: 8080, Addr: pub}, Deny, 3},
		{"guest other port", Request{Client: other, User: "guest", Method: "GET", Host: "x", Port: 80, Addr: pub}, Allow, -1},
		{"connect 443", Request{Client: other, Method: "CONNECT", Host: "x", Port: 443, Addr: pub}, Allow, -1},
		{"connect 8443", Request{Client: other, Method: "CONNECT", Host: "x", Port: 8443, Addr: pub}, Allow, -1},
		{"connect 22", Request{Client: other, Method: "CONNECT", Host: "x", Port: 22, Addr: pub}, Deny, -2},
	}
	for _, tt := range tests {
		d := l.Check(tt.r)
		if d.Action != tt.want || d.Rule != tt.rule {
			t.Errorf("%s: got %v rule %d, want %v rule %d", tt.name, d.Action, d.Rule, tt.want, tt.rule)
		}
	}
}

func TestCheckHost(t *testing.T) {
	l := &List{Rules: []Rule{
		mustRule(t, "deny host blocked.example"),
		mustRule(t, "deny dest 10.0.0.0/8 method POST"),
		mustRule(t, "allow host .ok.example"),
	}}
	tests := []struct {
		name    string
		r       Request
		decided bool
		want    Action
	}{
		{"denied name", Request{Method: "GET", Host: "blocked.example", Port: 80}, true, Deny},
		{"dest rule could match", Request{Method: "POST", Host: "a.ok.example", Port: 80}, false, Allow},
		{"dest rule cannot match", Request{Method: "GET", Host: "a.ok.example", Port: 80}, true, Allow},
		{"connect port", Request{Method: "CONNECT", Host: "x", Port: 25}, true, Deny},
	}
	for _, tt := range tests {
		d, ok := l.CheckHost(tt.r)
		if ok != tt.decided || ok && d.Action != tt.want {
			t.Errorf("%s: got %v decided %v, want %v decided %v", tt.name, d.Action, ok, tt.want, tt.decided)
		}
	}
}

func TestParseRuleErrors(t *testing.T) {
	for _, s := range []string{
		"", "permit host a", "deny host", "deny colour red", "deny dest 10.0.0.0/33",
		"deny dest example.com", "deny port 0", "deny port 90-80", "deny method get",
		"deny host a/b", "deny client ::ffff:10.0.0.0/64", "deny dest 10.0.0.0/+8", "deny host a,,b", "allow host .", "deny host ..",
	} {
		if _, err := ParseRule(s); err == nil {
			t.Errorf("ParseRule(%q): no error", s)
		}
	}
}

func TestParsePrefix(t *testing.T) {
	tests := []struct{ in, want string }{
		{"10.0.0.0/8", "10.0.0.0/8"},
		{"10.1.2.3/8", "10.0.0.0/8"},
		{"012.0.0.0/8", "10.0.0.0/8"},
		{"::ffff:10.0.0.0/104", "10.0.0.0/8"},
		{"192.168.1.1", "192.168.1.1/32"},
		{"fd00::/8", "fd00::/8"},
	}
	for _, tt := range tests {
		p, err := ParsePrefix(tt.in)
		if err != nil || p.String() != tt.want {
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", tt.in, p, err, tt.want)
		}
	}
}

func TestGlob(t *testing.T) {
	tests := []struct {
		p, s string
		want bool
	}{
		{"*.example.com", "a.example.com", true},
		{"*.example.com", "a.b.example.com", true},
		{"*.example.com", "example.com", false},
		{"ads*", "adserver.net", true},
		{"*ads*", "myadsite", true},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false},
	}
	for _, tt := range tests {
		if got := MatchHost(tt.p, tt.s); got != tt.want {
			t.Errorf("MatchHost(%q, %q) = %v", tt.p, tt.s, got)
		}
	}
}

// FuzzCanonicalDeny checks that a rule denying 127.0.0.0/8 denies every
// host string that canonicalises to an address inside it, and that
// canonicalising is idempotent.
func FuzzCanonicalDeny(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "2130706433", "0x7f.1", "[::ffff:127.0.0.1]", "127.1.", "LOCALHOST", "1.2.3.4"} {
		f.Add(s)
	}
	deny := &List{Rules: []Rule{{Action: Deny, Dests: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}}}
	f.Fuzz(func(t *testing.T, host string) {
		canon, ip := CanonicalHost(host)
		again, ip2 := CanonicalHost(canon)
		if ip.IsValid() && (again != canon || ip2 != ip) {
			t.Fatalf("not idempotent: %q -> %q -> %q", host, canon, again)
		}
		if !ip.IsValid() {
			return
		}
		if ip.Is4In6() {
			t.Fatalf("%q canonicalised to a mapped address %v", host, ip)
		}
		d := deny.Check(Request{Method: "GET", Host: canon, Port: 80, Addr: ip})
		if netip.MustParsePrefix("127.0.0.0/8").Contains(ip) != (d.Action == Deny) {
			t.Fatalf("%q (%v): %v", host, ip, d.Action)
		}
		// The same address mapped into IPv6 gets the same answer.
		if ip.Is4() {
			m := netip.AddrFrom16(ip.As16())
			if deny.Check(Request{Method: "GET", Host: canon, Port: 80, Addr: m}).Action != d.Action {
				t.Fatalf("mapped %v decided differently", m)
			}
		}
	})
}

func FuzzParseRule(f *testing.F) {
	f.Add("deny dest 10.0.0.0/8 port 80,443")
	f.Add("allow client ::ffff:192.168.0.0/112 host *.x.*")
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRule(s)
		if err != nil {
			return
		}
		_ = (&List{Rules: []Rule{r}}).Check(Request{Method: "GET", Host: "a", Port: 1})
	})
}

func TestTimeAndClass(t *testing.T) {
	l := &List{Rules: []Rule{
		mustRule(t, "deny class kids time 21:00-07:00"),
		mustRule(t, "deny user guest time 09:00-17:00,18:00-18:30"),
	}}
	at := func(h, m int) time.Time { return time.Date(2026, 1, 1, h, m, 0, 0, time.Local) }
	tests := []struct {
		name string
		r    Request
		want Action
	}{
		{"kids at night", Request{Class: "kids", Time: at(23, 0)}, Deny},
		{"kids early morning", Request{Class: "kids", Time: at(6, 59)}, Deny},
		{"kids at 7", Request{Class: "kids", Time: at(7, 0)}, Allow},
		{"adults at night", Request{Class: "adults", Time: at(23, 0)}, Allow},
		{"guest at noon", Request{User: "guest", Time: at(12, 0)}, Deny},
		{"guest at 18:15", Request{User: "guest", Time: at(18, 15)}, Deny},
		{"guest at 17:00", Request{User: "guest", Time: at(17, 0)}, Allow},
		{"no time given", Request{Class: "kids"}, Allow},
	}
	for _, tt := range tests {
		if d := l.Check(tt.r); d.Action != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, d.Action, tt.want)
		}
	}
	for _, bad := range []string{"deny time 8:00-9:00", "deny time 08:00", "deny time 08:00-08:00", "deny time 24:00-01:00", "deny time 10:60-11:00", "deny time 25:00-01:00"} {
		if _, err := ParseRule(bad); err == nil {
			t.Errorf("ParseRule(%q): no error", bad)
		}
	}
}
