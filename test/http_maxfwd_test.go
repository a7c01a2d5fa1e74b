package test

import (
	"strings"
	"testing"
)

// TestHTTPProxyMaxForwards checks RFC 9110 section 7.6.2: OPTIONS and
// TRACE with Max-Forwards 0 are answered by sluice without reaching the
// origin (TRACE echoes the head without credentials); a larger value is
// decremented on the way; other methods pass it through untouched.
func TestHTTPProxyMaxForwards(t *testing.T) {
	o := startOrigin(t, false)
	p := startHTTPProxy(t)
	url := "http://" + o.hostPort() + "/echo"

	r := runCurl(t, p, "-X", "OPTIONS", "-H", "Max-Forwards: 0", url)
	if r.err != nil || r.status != 200 || r.header("Allow") == "" || r.header("X-Method") != "" {
		t.Errorf("OPTIONS Max-Forwards 0: status %d, Allow %q, X-Method %q, err %v %s", r.status, r.header("Allow"), r.header("X-Method"), r.err, r.stderr)
	}
	r = runCurl(t, p, "-X", "TRACE", "-H", "Max-Forwards: 0", "-H", "Cookie: id=secret", "-H", "X-Probe: 1", url)
	if r.err != nil || r.status != 200 || r.header("Content-Type") != "message/http" {
		t.Errorf("TRACE Max-Forwards 0: status %d, Content-Type %q, err %v", r.status, r.header("Content-Type"), r.err)
	}
	if body := string(r.body); !strings.HasPrefix(body, "TRACE "+url+" HTTP/1.1\r\n") || !strings.Contains(body, "X-Probe: 1") || strings.Contains(body, "secret") {
		t.Errorf("TRACE echo %q", body)
	}
	if n := o.requests.Load(); n != 0 {
		t.Errorf("the origin saw %d requests, want 0", n)
	}

	r = runCurl(t, p, "-X", "OPTIONS", "-H", "Max-Forwards: 3", url)
	if r.status != 200 || r.header("X-Seen-Max-Forwards") != "2" || r.header("X-Method") != "OPTIONS" {
		t.Errorf("OPTIONS Max-Forwards 3: status %d, origin saw Max-Forwards %q", r.status, r.header("X-Seen-Max-Forwards"))
	}
	r = runCurl(t, p, "-H", "Max-Forwards: 0", url)
	if r.status != 200 || r.header("X-Seen-Max-Forwards") != "0" {
		t.Errorf("GET Max-Forwards 0: status %d, origin saw Max-Forwards %q", r.status, r.header("X-Seen-Max-Forwards"))
	}
}
