package httpproxy

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/sluice-proxy/sluice/pkg/accounting"
)

// TestQuotaWatchOnlyWhileItCounts: a keep-alive connection of a client
// with a byte quota is synced every few seconds only while a request is
// in flight (an idle one cannot use bytes up); with a quota on connected
// time it stays watched between requests too.
func TestQuotaWatchOnlyWhileItCounts(t *testing.T) {
	origin := startRawOrigin(t, smallResponse(""), nil)
	for _, tt := range []struct {
		name  string
		quota accounting.Quota
		idle  int // connections watched between requests
	}{
		{"bytes", accounting.Quota{Period: accounting.Day, Bytes: 1 << 40}, 0},
		{"time", accounting.Quota{Period: accounting.Day, Time: 24 * time.Hour}, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			acc, err := accounting.New(accounting.Config{})
			if err != nil {
				t.Fatal(err)
			}
			acc.SetQuotas(map[string]accounting.Quota{"addr:127.0.0.1": tt.quota})
			p := startProxy(t, Config{Accounting: acc})
			keepAliveGET(t, p.s.Addr(), origin)
			watched := func() int {
				done := make(chan int)
				p.r.Loops()[0].Post(func() { done <- p.s.counted.Len() })
				return <-done
			}
			if n := watched(); n != tt.idle {
				t.Errorf("between requests: %d connections watched, want %d", n, tt.idle)
			}
		})
	}
}

// TestTimeQuotaClosesIdleConnection: a keep-alive connection whose client
// has a quota on connected time is closed by the quota watch once the
// time is used up, idle or not.
func TestTimeQuotaClosesIdleConnection(t *testing.T) {
	origin := startRawOrigin(t, smallResponse(""), nil)
	acc, err := accounting.New(accounting.Config{QuotaCheck: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	acc.SetQuotas(map[string]accounting.Quota{"addr:127.0.0.1": {Period: accounting.Day, Time: 300 * time.Millisecond}})
	p := startProxy(t, Config{Accounting: acc})
	start := time.Now()
	c, br := keepAliveGET(t, p.s.Addr(), origin)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := br.ReadByte(); err == nil {
		t.Fatalf("the idle connection sent %q", n)
	}
	if took := time.Since(start); took < 300*time.Millisecond || took > 2*time.Second {
		t.Errorf("closed after %v, want soon after the 300 ms quota", took)
	}
	// The next connection is refused with the quota's 403.
	c2, err := net.Dial("tcp", p.s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	fmt.Fprintf(c2, "GET http://%s/ HTTP/1.1\r\nHost: %s\r\n\r\n", origin, origin)
	if resp, err := http.ReadResponse(bufio.NewReader(c2), nil); err != nil || resp.StatusCode != 403 {
		t.Errorf("after the quota: %v %v, want 403", resp, err)
	}
}

// keepAliveGET sends one GET for origin's / through the proxy at addr on
// a keep-alive connection, reads the 200 and returns the connection (open
// until the test ends) and its reader.
func keepAliveGET(t *testing.T, addr, origin string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	br := bufio.NewReader(c)
	fmt.Fprintf(c, "GET http://%s/ HTTP/1.1\r\nHost: %s\r\n\r\n", origin, origin)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET: %v %v", resp, err)
	}
	_, _ = br.Discard(int(resp.ContentLength))
	return c, br
}
