package endpoint

import (
	"strings"
	"testing"

	"github.com/sluice-proxy/sluice/pkg/sys"
)

func TestVsockSockaddr(t *testing.T) {
	tests := []struct {
		name    string
		addr    string
		listen  bool
		want    sys.SockaddrVM
		wantErr string
	}{
		{"listen any", "vsock:any:5000", true, sys.SockaddrVM{CID: sys.VsockCIDAny, Port: 5000}, ""},
		{"listen any port picks one", "vsock:any:0", true, sys.SockaddrVM{CID: sys.VsockCIDAny, Port: sys.VsockPortAny}, ""},
		{"listen on a CID", "vsock:3:5000", true, sys.SockaddrVM{CID: 3, Port: 5000}, ""},
		{"connect to the host", "vsock:host:8000", false, sys.SockaddrVM{CID: 2, Port: 8000}, ""},
		{"connect locally", "vsock:local:52", false, sys.SockaddrVM{CID: 1, Port: 52}, ""},
		{"connect keeps port 0", "vsock:3:0", false, sys.SockaddrVM{CID: 3, Port: 0}, ""},
		{"connect to any", "vsock:any:5000", false, sys.SockaddrVM{}, "vsock:any can only listen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := Parse(tt.addr)
			if err != nil {
				t.Fatal(err)
			}
			got, err := vsockSockaddr(a, tt.listen)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("vsockSockaddr(%s, listen=%v) = %v, %v; want error %q", tt.addr, tt.listen, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got.CID != tt.want.CID || got.Port != tt.want.Port {
				t.Fatalf("vsockSockaddr(%s, listen=%v) = %+v, %v; want %+v", tt.addr, tt.listen, got, err, tt.want)
			}
		})
	}
}

func TestFormatSockaddrVsock(t *testing.T) {
	tests := []struct {
		sa   *sys.SockaddrVM
		want string
	}{
		{&sys.SockaddrVM{CID: 3, Port: 1024}, "vsock:3:1024"},
		{&sys.SockaddrVM{CID: sys.VsockCIDAny, Port: 5000}, "vsock:any:5000"},
		{&sys.SockaddrVM{CID: 2, Port: 4294967294}, "vsock:2:4294967294"},
	}
	for _, tt := range tests {
		if got := FormatSockaddr(tt.sa); got != tt.want {
			t.Errorf("FormatSockaddr(%+v) = %q, want %q", tt.sa, got, tt.want)
		}
		if got := family(tt.sa); got != sys.AFVsock {
			t.Errorf("family(%+v) = %d, want AF_VSOCK (%d)", tt.sa, got, sys.AFVsock)
		}
		if _, err := Parse(FormatSockaddr(tt.sa)); err != nil {
			t.Errorf("FormatSockaddr(%+v) does not parse back: %v", tt.sa, err)
		}
	}
}

func TestVsockNeedsNoLookup(t *testing.T) {
	a, err := Parse("vsock:host:1")
	if err != nil {
		t.Fatal(err)
	}
	if a.NeedsLookup() {
		t.Fatalf("%s: NeedsLookup() = true, want false", a)
	}
}
