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
		{"vsock:3:1024", Addr{Network: Vsock, CID: 3, Port: 1024}},
		{"vsock:any:5000", Addr{Network: Vsock, CID: VsockCIDAny, Port: 5000}},
		{"vsock:any:0", Addr{Network: Vsock, CID: VsockCIDAny}},
		{"vsock:host:8000", Addr{Network: Vsock, CID: 2, Port: 8000}},
		{"vsock:local:52", Addr{Network: Vsock, CID: 1, Port: 52}},
		{"vsock:0:1", Addr{Network: Vsock, CID: 0, Port: 1}},
		{"vsock:4294967294:4294967294", Addr{Network: Vsock, CID: 4294967294, Port: 4294967294}},
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
		{"vsock:", "missing :PORT after the vsock CID"},
		{"vsock:3", "missing :PORT after the vsock CID"},
		{"vsock::80", `vsock CID "" is not a number`},
		{"vsock:-1:80", `vsock CID "-1" is not a number`},
		{"vsock:4294967295:80", `vsock CID "4294967295" is not a number from 0 to 4294967294, any, host or local`},
		{"vsock:guest:80", `vsock CID "guest" is not a number`},
		{"vsock:3:", `vsock port "" is not a number from 0 to 4294967294`},
		{"vsock:3:4294967295", `vsock port "4294967295" is not a number`},
		{"vsock:3:1:2", `vsock CID "3:1" is not a number`},
		{"vsock:any:http", `vsock port "http" is not a number`},
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
	for _, s := range []string{"tcp:127.0.0.1:80", "[::1]:1", "unix:/x", "tcp6:[fe80::1%lo]:9", ":0", "a.b:65535", "vsock:3:1024", "vsock:any:0", "vsock:host:4294967294"} {
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
