package socks5

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
)

func TestParseRequest(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   []byte
		want Request
		n    int
		err  error
	}{
		{"ipv4", []byte{5, 1, 0, 1, 10, 0, 0, 1, 0, 80}, Request{CmdConnect, Addr{IP: netip.MustParseAddr("10.0.0.1"), Port: 80}}, 10, nil},
		{"ipv6", append(append([]byte{5, 1, 0, 4}, netip.MustParseAddr("2001:db8::1").AsSlice()...), 1, 187),
			Request{CmdConnect, Addr{IP: netip.MustParseAddr("2001:db8::1"), Port: 443}}, 22, nil},
		{"domain", []byte{5, 3, 0, 3, 3, 'a', '.', 'b', 0, 53}, Request{CmdUDPAssociate, Addr{Host: "a.b", Port: 53}}, 10, nil},
		{"trailing bytes", []byte{5, 1, 0, 1, 1, 2, 3, 4, 0, 1, 'G', 'E'}, Request{CmdConnect, Addr{IP: netip.MustParseAddr("1.2.3.4"), Port: 1}}, 10, nil},
		{"unknown command kept", []byte{5, 9, 0, 1, 1, 2, 3, 4, 0, 1}, Request{9, Addr{IP: netip.MustParseAddr("1.2.3.4"), Port: 1}}, 10, nil},
		{"short", []byte{5, 1, 0, 1, 10, 0}, Request{}, 0, ErrShort},
		{"short domain", []byte{5, 1, 0, 3, 10, 'a'}, Request{}, 0, ErrShort},
		{"empty domain", []byte{5, 1, 0, 3, 0, 0, 80}, Request{}, 0, ErrEmpty},
		{"version 4", []byte{4, 1, 0, 80, 1, 2, 3, 4, 0}, Request{}, 0, ErrVersion},
		{"reserved", []byte{5, 1, 1, 1, 1, 2, 3, 4, 0, 1}, Request{}, 0, ErrReserved},
		{"atyp 2", []byte{5, 1, 0, 2, 1, 2, 3, 4, 0, 1}, Request{}, 0, ErrAddrType},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, n, err := ParseRequest(tt.in)
			if !errors.Is(err, tt.err) || n != tt.n || got != tt.want {
				t.Errorf("ParseRequest(%v) = %+v, %d, %v; want %+v, %d, %v", tt.in, got, n, err, tt.want, tt.n, tt.err)
			}
		})
	}
}

func TestParseGreetingAndAuth(t *testing.T) {
	m, n, err := ParseGreeting([]byte{5, 2, 0, 2, 0xAA})
	if err != nil || n != 4 || !bytes.Equal(m, []byte{0, 2}) {
		t.Errorf("greeting: %v %d %v", m, n, err)
	}
	if _, _, err := ParseGreeting([]byte{5, 3, 0}); err != ErrShort {
		t.Errorf("short greeting: %v", err)
	}
	if _, _, err := ParseGreeting([]byte{5, 0}); err != ErrNoMethod {
		t.Errorf("no methods: %v", err)
	}
	if _, _, err := ParseGreeting([]byte("GET / HTTP/1.1\r\n")); err != ErrVersion {
		t.Errorf("HTTP: %v", err)
	}
	u, p, n, err := ParseUserPass([]byte{1, 3, 'b', 'o', 'b', 2, 'p', 'w'})
	if err != nil || u != "bob" || p != "pw" || n != 8 {
		t.Errorf("userpass: %q %q %d %v", u, p, n, err)
	}
	if _, _, _, err := ParseUserPass([]byte{1, 3, 'b', 'o', 'b', 2, 'p'}); err != ErrShort {
		t.Errorf("short userpass: %v", err)
	}
	if _, _, _, err := ParseUserPass([]byte{5, 1}); err != ErrAuthVer {
		t.Errorf("userpass version: %v", err)
	}
}

func TestReplyAndUDPHeader(t *testing.T) {
	got := AppendReply(nil, RepSucceeded, netip.MustParseAddrPort("127.0.0.1:1080"))
	if want := []byte{5, 0, 0, 1, 127, 0, 0, 1, 4, 56}; !bytes.Equal(got, want) {
		t.Errorf("reply %v, want %v", got, want)
	}
	got = AppendReply(nil, RepNotAllowed, netip.AddrPort{})
	if want := []byte{5, 2, 0, 1, 0, 0, 0, 0, 0, 0}; !bytes.Equal(got, want) {
		t.Errorf("failure reply %v, want %v", got, want)
	}
	src := netip.MustParseAddrPort("[::1]:53")
	d := append(AppendUDPHeader(nil, src), "data"...)
	h, n, err := ParseUDPHeader(d)
	if err != nil || h.Frag != 0 || h.Addr.IP != src.Addr() || h.Addr.Port != 53 || string(d[n:]) != "data" {
		t.Errorf("udp header: %+v %d %v", h, n, err)
	}
	if _, _, err := ParseUDPHeader([]byte{0, 1, 0, 1, 1, 2, 3, 4, 0, 1}); err != ErrReserved {
		t.Errorf("rsv: %v", err)
	}
}

// FuzzParseRequest: no input panics; a parsed request's length is within
// the input, parsing exactly those bytes gives the same request, and
// every shorter prefix is incomplete or the same error class.
func FuzzParseRequest(f *testing.F) {
	f.Add([]byte{5, 1, 0, 1, 10, 0, 0, 1, 0, 80})
	f.Add([]byte{5, 1, 0, 3, 3, 'a', '.', 'b', 0, 53})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, n, err := ParseRequest(b)
		if err != nil {
			return
		}
		if n > len(b) || n < 8 { // the shortest: a one-byte domain
			t.Fatalf("n %d of %d", n, len(b))
		}
		r2, n2, err := ParseRequest(b[:n])
		if err != nil || r2 != r || n2 != n {
			t.Fatalf("exact bytes: %+v %d %v", r2, n2, err)
		}
		if _, _, err := ParseRequest(b[:n-1]); err != ErrShort {
			t.Fatalf("prefix: %v", err)
		}
	})
}

// FuzzParseGreeting covers the greeting and the RFC 1929 request.
func FuzzParseGreeting(f *testing.F) {
	f.Add([]byte{5, 2, 0, 2})
	f.Add([]byte{1, 3, 'b', 'o', 'b', 2, 'p', 'w'})
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, n, err := ParseGreeting(b); err == nil && (n > len(b) || len(m) != n-2 || len(m) == 0) {
			t.Fatalf("greeting %v %d", m, n)
		}
		if u, p, n, err := ParseUserPass(b); err == nil && (n > len(b) || n != 3+len(u)+len(p)) {
			t.Fatalf("userpass %q %q %d", u, p, n)
		}
	})
}

// FuzzParseUDPHeader: no datagram panics; a parsed header re-encodes to
// the same bytes when its address is an IP.
func FuzzParseUDPHeader(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 127, 0, 0, 1, 0, 53, 'q'})
	f.Add([]byte{0, 0, 1, 3, 1, 'x', 0, 53})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := ParseUDPHeader(b)
		if err != nil {
			return
		}
		if n > len(b) {
			t.Fatalf("n %d of %d", n, len(b))
		}
		if h.Frag == 0 && h.Addr.Host == "" {
			if re := AppendUDPHeader(nil, netip.AddrPortFrom(h.Addr.IP, h.Addr.Port)); !bytes.Equal(re, b[:n]) && !h.Addr.IP.Is4In6() {
				t.Fatalf("re-encoded %v, want %v", re, b[:n])
			}
		}
	})
}

func TestParseRequest4(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   []byte
		want Request
		user string
		n    int
		err  error
	}{
		{"socks4", []byte{4, 1, 0, 80, 10, 0, 0, 1, 'b', 'o', 'b', 0}, Request{CmdConnect, Addr{IP: netip.MustParseAddr("10.0.0.1"), Port: 80}}, "bob", 12, nil},
		{"socks4a", []byte{4, 1, 1, 187, 0, 0, 0, 1, 0, 'a', '.', 'b', 0}, Request{CmdConnect, Addr{Host: "a.b", Port: 443}}, "", 13, nil},
		{"no nul yet", []byte{4, 1, 0, 80, 10, 0, 0, 1, 'b'}, Request{}, "", 0, ErrShort},
		{"4a name not ended", []byte{4, 1, 0, 80, 0, 0, 0, 9, 0, 'x'}, Request{}, "", 0, ErrShort},
		{"4a empty name", []byte{4, 1, 0, 80, 0, 0, 0, 9, 0, 0}, Request{}, "", 0, ErrEmpty},
		{"version 5", []byte{5, 1, 0}, Request{}, "", 0, ErrVersion},
		{"user id too long", append([]byte{4, 1, 0, 80, 10, 0, 0, 1}, bytes.Repeat([]byte{'u'}, 300)...), Request{}, "", 0, ErrTooLong},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, user, n, err := ParseRequest4(tt.in)
			if !errors.Is(err, tt.err) || n != tt.n || got != tt.want || user != tt.user {
				t.Errorf("got %+v %q %d %v; want %+v %q %d %v", got, user, n, err, tt.want, tt.user, tt.n, tt.err)
			}
		})
	}
	if got, want := AppendReply4(nil, true, netip.MustParseAddrPort("1.2.3.4:80")), []byte{0, 90, 0, 80, 1, 2, 3, 4}; !bytes.Equal(got, want) {
		t.Errorf("reply %v, want %v", got, want)
	}
}

// FuzzParseRequest4: no input panics; a parsed request's length is within
// the input and parsing exactly those bytes gives the same request.
func FuzzParseRequest4(f *testing.F) {
	f.Add([]byte{4, 1, 0, 80, 10, 0, 0, 1, 'b', 'o', 'b', 0})
	f.Add([]byte{4, 1, 1, 187, 0, 0, 0, 1, 0, 'a', '.', 'b', 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, u, n, err := ParseRequest4(b)
		if err != nil {
			return
		}
		if n > len(b) || n < 9 {
			t.Fatalf("n %d of %d", n, len(b))
		}
		r2, u2, n2, err := ParseRequest4(b[:n])
		if err != nil || r2 != r || u2 != u || n2 != n {
			t.Fatalf("exact bytes: %+v %q %d %v", r2, u2, n2, err)
		}
	})
}
