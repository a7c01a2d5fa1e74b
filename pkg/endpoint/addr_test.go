package endpoint

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want Addr
	}{
		{"tcp:127.0.0.1:80", Addr{Network: TCP, Host: "127.0.0.1", Port: 80}},
		{"127.0.0.1:8080", Addr{Network: TCP, Host: "127.0.0.1", Port: 8080}},
		{":8080", Addr{Network: TCP, Port: 8080}},
		{"localhost:0", Addr{Network: TCP, Host: "localhost", Port: 0}},
		{"tcp:router.lan.:65535", Addr{Network: TCP, Host: "router.lan.", Port: 65535}},
		{"tcp4:0.0.0.0:1", Addr{Network: TCP4, Host: "0.0.0.0", Port: 1}},
		{"tcp6:[::1]:443", Addr{Network: TCP6, Host: "::1", Port: 443}},
		{"tcp6:[fe80::1%eth0]:22", Addr{Network: TCP6, Host: "fe80::1%eth0", Port: 22}},
		{"[2001:db8::1]:53", Addr{Network: TCP, Host: "2001:db8::1", Port: 53}},
		{"tcp:[::]:80", Addr{Network: TCP, Host: "::", Port: 80}},
		{"tcp6:host.example:80", Addr{Network: TCP6, Host: "host.example", Port: 80}},
		{"unix:/run/sluice.sock", Addr{Network: Unix, Path: "/run/sluice.sock"}},
		{"unix:@abstract", Addr{Network: Unix, Path: "@abstract"}},
		{"unix:relative.sock", Addr{Network: Unix, Path: "relative.sock"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("Parse(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			again, err := Parse(got.String())
			if err != nil || again != got {
				t.Fatalf("Parse(%q.String() = %q) = %+v, %v; want %+v", tt.in, got.String(), again, err, got)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		in, why string
	}{
		{"", "empty address"},
		{"8080", "missing :PORT"},
		{"tcp:host", "missing :PORT"},
		{"host:", `port "" is not a number`},
		{"host:http", `port "http" is not a number`},
		{"host:65536", `port "65536" is not a number`},
		{"host:-1", `port "-1" is not a number`},
		{"::1:80", "IPv6 addresses need brackets"},
		{"[::1:80", "missing ']'"},
		{"[::1]80", "missing :PORT after ']'"},
		{"[1.2.3.4]:80", "is not an IPv6 address"},
		{"tcp4:[::1]:80", "::1 is not an IPv4 address"},
		{"tcp6:127.0.0.1:80", "127.0.0.1 is not an IPv6 address"},
		{"bad host:80", "white space"},
		{"bad/host:80", `"bad/host" is not a host name`},
		{"a..b:80", `"a..b" is not a host name`},
		{"unix:", "unix socket path is empty"},
		{"unix:/" + strings.Repeat("x", 200), "longer than 107"},
		{"udp:1.2.3.4:53", "udp endpoints are not supported yet"},
		{"vsock:3:1024", "vsock endpoints are not supported yet"},
		{"nonsense::", "IPv6 addresses need brackets"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := Parse(tt.in)
			if err == nil {
				t.Fatalf("Parse(%q) succeeded, want an error containing %q", tt.in, tt.why)
			}
			msg := err.Error()
			if !errors.Is(err, ErrBadAddress) || !strings.Contains(msg, tt.why) || !strings.Contains(msg, "expected tcp:HOST:PORT") {
				t.Fatalf("Parse(%q) error %q: want ErrBadAddress, %q and the expected syntax", tt.in, msg, tt.why)
			}
		})
	}
}

// FuzzParse checks that Parse never panics and that whatever it accepts
// prints back to an address that parses to the same value.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"tcp:127.0.0.1:80", "[::1]:1", "unix:/x", "tcp6:[fe80::1%lo]:9", ":0", "a.b:65535"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := Parse(s)
		if err != nil {
			return
		}
		b, err := Parse(a.String())
		if err != nil || a != b {
			t.Fatalf("Parse(%q) = %+v; its String %q parses to %+v, %v", s, a, a.String(), b, err)
		}
	})
}
