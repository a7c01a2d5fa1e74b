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
			c, err := net.Dial("tcp", p.s.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReader(c)
			fmt.Fprintf(c, "GET http://%s/ HTTP/1.1\r\nHost: %s\r\n\r\n", origin, origin)
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("GET: %v %v", resp, err)
			}
			_, _ = br.Discard(int(resp.ContentLength))
			watched := func() int {
				done := make(chan int)
				p.r.Loops()[0].Post(func() {
					p.s.counted.mu.Lock()
					defer p.s.counted.mu.Unlock()
					done <- len(p.s.counted.set)
				})
				return <-done
			}
			if n := watched(); n != tt.idle {
				t.Errorf("between requests: %d connections watched, want %d", n, tt.idle)
			}
		})
	}
}
