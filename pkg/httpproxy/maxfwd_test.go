package httpproxy

import (
	"strings"
	"testing"

	"github.com/sluice-proxy/sluice/pkg/httpmsg"
)

func TestMaxForwards(t *testing.T) {
	tests := []struct {
		method, value string
		want          int64
		ok            bool
	}{
		{"OPTIONS", "0", 0, true},
		{"TRACE", "7", 7, true},
		{"GET", "0", 0, false},
		{"OPTIONS", "", 0, false},
		{"OPTIONS", "-1", 0, false},
		{"OPTIONS", "+1", 0, false},
		{"OPTIONS", "1x", 0, false},
		{"OPTIONS", "99999999999999999999999", 0, false},
	}
	for _, tt := range tests {
		req := &httpmsg.Request{Method: tt.method, Header: httpmsg.Header{{Name: "max-forwards", Value: tt.value}}}
		n, ok := maxForwards(req)
		if n != tt.want || ok != tt.ok {
			t.Errorf("%s Max-Forwards %q: got %d %v, want %d %v", tt.method, tt.value, n, ok, tt.want, tt.ok)
		}
	}
}

func TestLocalAnswer(t *testing.T) {
	trace := &httpmsg.Request{Method: "TRACE", Target: "http://a.example/x", Header: httpmsg.Header{
		{Name: "Host", Value: "a.example"}, {Name: "Proxy-Authorization", Value: "Basic secret"},
		{Name: "Cookie", Value: "id=1"}, {Name: "Max-Forwards", Value: "0"},
	}}
	got := string(localAnswer(trace))
	head, body, _ := strings.Cut(got, "\r\n\r\n")
	if !strings.HasPrefix(head, "HTTP/1.1 200 OK\r\n") || !strings.Contains(head, "Content-Type: message/http") {
		t.Errorf("TRACE head %q", head)
	}
	if want := "TRACE http://a.example/x HTTP/1.1\r\nHost: a.example\r\nMax-Forwards: 0\r\n\r\n"; body != want {
		t.Errorf("TRACE body %q, want %q", body, want)
	}
	opts := string(localAnswer(&httpmsg.Request{Method: "OPTIONS", Target: "*"}))
	if !strings.Contains(opts, "Allow: "+allowedMethods+"\r\n") || !strings.Contains(opts, "Content-Length: 0\r\n") {
		t.Errorf("OPTIONS answer %q", opts)
	}
}
