package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/sluice-proxy/sluice/pkg/accounting"
	"github.com/sluice-proxy/sluice/pkg/daemon"
)

func TestPrintAccounting(t *testing.T) {
	seen := time.Date(2026, 11, 22, 10, 30, 0, 0, time.UTC)
	rep := daemon.AccountingReport{TimeZone: "CET", Dir: "/var/run/sluice", Entries: []accounting.Entry{
		{Key: "addr:192.168.1.7", BytesDown: 999, Requests: 1, Conns: 1, First: seen, Last: seen},
		{Key: "kid", BytesUp: 1536, BytesDown: 3 << 30, Requests: 12, Conns: 4, Live: 1, OnlineS: 7260, First: seen, Last: seen,
			Quota: &accounting.QuotaEntry{Period: "day", Bytes: 2 << 30, TimeS: 3 * 3600, UsedBytes: 3 << 30, UsedTimeS: 7260, Exceeded: true}},
	}}
	var b bytes.Buffer
	printAccounting(&b, rep)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines:\n%s", len(lines), b.String())
	}
	for i, want := range []string{
		"counters in /var/run/sluice, periods in CET time",
		"  USER              ",
		"  addr:192.168.1.7  ",
		"  kid               ",
	} {
		if !strings.HasPrefix(lines[i], want) {
			t.Errorf("line %d = %q, want it to start with %q", i, lines[i], want)
		}
	}
	for _, want := range []string{"1.5 KiB", "3.0 GiB", "2h01m", "3.0 GiB of 2.0 GiB, 2h01m of 3h00m a day (USED UP)", "2026-11-22 10:30", "999 B"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
	// Columns line up: every row is as long as the header.
	for _, l := range lines[2:] {
		if len(l) != len(lines[1]) {
			t.Errorf("row %q is %d wide, header %d", l, len(l), len(lines[1]))
		}
	}
	b.Reset()
	printAccounting(&b, daemon.AccountingReport{TimeZone: "UTC", Dir: "/x"})
	if !strings.Contains(b.String(), "nothing counted yet") {
		t.Errorf("empty report: %q", b.String())
	}
}
