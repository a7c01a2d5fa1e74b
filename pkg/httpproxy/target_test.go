package httpproxy

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/sluice-proxy/sluice/pkg/httpmsg"
)

func TestParseAbsolute(t *testing.T) {
	tests := []struct {
		in, host string
		port     int
		path     string
	}{
		{"http://example.com", "example.com", 80, "/"},
		{"HTTP://Example.COM./a/b?c=d", "example.com", 80, "/a/b?c=d"},
		{"http://example.com?q", "example.com", 80, "/?q"},
		{"http://127.0.0.1:8080/x", "127.0.0.1", 8080, "/x"},
		{"http://[::1]:81/", "::1", 81, "/"},
		{"http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1", 80, "/"},
	}
	for _, tt := range tests {
		got, err := parseAbsolute(tt.in)
		if err != nil || got.host != tt.host || got.port != tt.port || got.path != tt.path {
			t.Errorf("parseAbsolute(%q) = %+v, %v", tt.in, got, err)
		}
	}
	for _, bad := range []string{
		"/relative", "https://a/", "ftp://a/", "http://u@a/", "http://a:0/", "http://a:65536/", "http://a:+80/",
		"http://a/#frag", "http://[::1/", "http://a b/", "http://:80/", "http://[zz::1]/", "http://a%2fb/",
	} {
		if _, err := parseAbsolute(bad); err == nil {
			t.Errorf("parseAbsolute(%q): no error", bad)
		}
	}
}

func TestParseAuthorityConnect(t *testing.T) {
	got, err := parseAuthority("Example.com:443", 0)
	if err != nil || got.host != "example.com" || got.port != 443 || got.authority() != "example.com:443" {
		t.Errorf("got %+v %v", got, err)
	}
	for _, bad := range []string{"example.com", "[::1]", "a:b", ""} {
		if _, err := parseAuthority(bad, 0); err == nil {
			t.Errorf("parseAuthority(%q, 0): no error", bad)
		}
	}
}

func TestBodyClaim(t *testing.T) {
	wire := []byte("3\r\nabc\r\n2;x=1\r\nde\r\n0\r\nT: 1\r\n\r\nNEXT")
	for _, dechunk := range []bool{false, true} {
		b := newBody(httpmsg.Chunked, 0)
		b.dechunk = dechunk
		var out []byte
		p := append([]byte(nil), wire...)
		for off := 0; off < len(p) && !b.done; {
			end := min(off+4, len(p))
			n, used, err := b.claim(p[off:end])
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, p[off:off+n]...)
			off += used
			if b.done && string(p[off:]) != "NEXT" {
				t.Errorf("rest %q, want NEXT", p[off:])
			}
		}
		want := string(wire[:len(wire)-4])
		if dechunk {
			want = "abcde"
		}
		if string(out) != want || !b.done {
			t.Errorf("dechunk %v: out %q done %v, want %q", dechunk, out, b.done, want)
		}
	}
	b := newBody(httpmsg.Length, 5)
	n, used, _ := b.claim([]byte("1234567"))
	if n != 5 || used != 5 || !b.done {
		t.Errorf("length: %d %d %v", n, used, b.done)
	}
}

func TestErrorResponse(t *testing.T) {
	r := string(errorResponse(407, "proxy authentication required"))
	want := "HTTP/1.1 407 Proxy Authentication Required\r\n"
	if r[:len(want)] != want {
		t.Errorf("status line of %q", r)
	}
	if _, _, err := httpmsg.ParseResponse([]byte(r), httpmsg.Limits{}, "GET"); err != nil {
		t.Errorf("our own error response does not parse: %v", err)
	}
}

func TestDNSCache(t *testing.T) {
	var d dnsCache
	a := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("::ffff:192.0.2.2")}
	d.put("a.example", a, 0)
	got, ok := d.get("a.example", dnsTTL-1)
	if !ok || len(got) != 2 || got[0] != a[0] {
		t.Fatalf("get = %v, %v", got, ok)
	}
	got[0] = netip.Addr{} // callers may change their copy
	if again, _ := d.get("a.example", 1); again[0] != a[0] {
		t.Error("the cached answer changed through a copy")
	}
	if _, ok := d.get("a.example", dnsTTL); ok {
		t.Error("expired entry returned")
	}
	for i := range dnsCacheMax + 10 {
		d.put(fmt.Sprintf("h%d.example", i), a, 0)
	}
	if len(d.m) > dnsCacheMax {
		t.Errorf("%d entries, bound %d", len(d.m), dnsCacheMax)
	}
}
