package accounting

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a fake clock for tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

func berlin(t *testing.T) *time.Location {
	t.Helper()
	loc, err := LoadLocation("CET-1CEST,M3.5.0,M10.5.0/3")
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func newTest(t *testing.T, c *clock, dir string) *Accounting {
	t.Helper()
	a, err := New(Config{Dir: dir, Location: berlin(t), Now: c.now, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func TestKey(t *testing.T) {
	for _, tc := range []struct {
		user, addr, want string
	}{
		{"alice", "192.168.1.7", "alice"},
		{"", "192.168.1.7", "addr:192.168.1.7"},
		{"", "::ffff:10.0.0.1", "addr:10.0.0.1"},
		{"", "2001:db8:1:2:aaaa:bbbb:cccc:dddd", "addr:2001:db8:1:2::/64"},
		{"", "fe80::1%eth0", "addr:fe80::/64"},
	} {
		if got := Key(tc.user, netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("Key(%q, %s) = %q, want %q", tc.user, tc.addr, got, tc.want)
		}
	}
}

func TestCounting(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	c := &clock{t: t0}
	a := newTest(t, c, "")
	r := a.Record("alice")
	if a.Record("alice") != r {
		t.Fatal("Record returned a second record for one key")
	}
	r.Open(c.now())
	r.Add(1, 100, 2000, c.now())
	c.advance(10 * time.Second)
	r.Open(c.now()) // overlapping: online time is not doubled
	c.advance(20 * time.Second)
	r.Add(2, 5, 7, c.now())
	r.Close(c.now())
	c.advance(30 * time.Second)
	r.Close(c.now())
	c.advance(time.Hour) // offline: not counted
	r.Open(c.now())
	c.advance(5 * time.Second)
	r.Close(c.now())

	es := a.Snapshot("alice")
	if len(es) != 1 {
		t.Fatalf("Snapshot: %d entries, want 1", len(es))
	}
	e := es[0]
	want := Entry{Key: "alice", BytesUp: 105, BytesDown: 2007, Requests: 3, Conns: 3, OnlineS: 65}
	if e.BytesUp != want.BytesUp || e.BytesDown != want.BytesDown || e.Requests != want.Requests ||
		e.Conns != want.Conns || e.OnlineS != want.OnlineS || e.Live != 0 {
		t.Errorf("got %+v, want counts of %+v", e, want)
	}
	if !e.First.Equal(t0) || !e.Last.Equal(c.now()) {
		t.Errorf("first %v last %v, want %v and %v", e.First, e.Last, t0, c.now())
	}
	if e.Day.BytesUp != 105 || e.Month.BytesDown != 2007 || e.Week.OnlineS != 65 {
		t.Errorf("periods: %+v %+v %+v", e.Day, e.Week, e.Month)
	}
	if got := a.Snapshot(""); len(got) != 1 {
		t.Errorf("Snapshot of all: %d entries, want 1", len(got))
	}
	if got := a.Snapshot("bob"); len(got) != 0 {
		t.Errorf("Snapshot(bob) = %v, want nothing", got)
	}
}

func TestConcurrentAdds(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)}
	a := newTest(t, c, "")
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := a.Record(Key("", netip.MustParseAddr("192.168.1.9")))
			for range 1000 {
				r.Add(1, 3, 5, c.now())
			}
		}()
	}
	wg.Wait()
	e := a.Snapshot("192.168.1.9")
	if len(e) != 1 || e[0].Requests != 8000 || e[0].BytesUp != 24000 || e[0].BytesDown != 40000 {
		t.Fatalf("got %+v, want 8000 requests, 24000 up, 40000 down", e)
	}
}

func TestPeriodStart(t *testing.T) {
	loc := berlin(t)
	at := func(s string) time.Time {
		tm, err := time.ParseInLocation("2006-01-02 15:04", s, loc)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	for _, tc := range []struct {
		name      string
		p         Period
		t         string
		start     string
		next      string
		nextHours float64
	}{
		{"day", Day, "2026-11-22 10:00", "2026-11-22 00:00", "2026-11-23 00:00", 24},
		{"day just before midnight", Day, "2026-11-22 23:59", "2026-11-22 00:00", "2026-11-23 00:00", 24},
		{"day of spring DST change is 23h", Day, "2026-03-29 12:00", "2026-03-29 00:00", "2026-03-30 00:00", 23},
		{"day of autumn DST change is 25h", Day, "2026-10-25 12:00", "2026-10-25 00:00", "2026-10-26 00:00", 25},
		{"week from Sunday", Week, "2026-11-22 10:00", "2026-11-16 00:00", "2026-11-23 00:00", 168},
		{"week from Monday midnight", Week, "2026-11-23 00:00", "2026-11-23 00:00", "2026-11-30 00:00", 168},
		{"week across the year", Week, "2027-01-01 08:00", "2026-12-28 00:00", "2027-01-04 00:00", 168},
		{"week with DST change", Week, "2026-10-25 12:00", "2026-10-19 00:00", "2026-10-26 00:00", 169},
		{"month", Month, "2026-01-31 23:00", "2026-01-01 00:00", "2026-02-01 00:00", 31 * 24},
		{"february of a leap year", Month, "2028-02-29 12:00", "2028-02-01 00:00", "2028-03-01 00:00", 29 * 24},
		{"december", Month, "2026-12-31 23:59", "2026-12-01 00:00", "2027-01-01 00:00", 31 * 24},
		{"march loses an hour", Month, "2026-03-15 00:00", "2026-03-01 00:00", "2026-04-01 00:00", 31*24 - 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := tc.p.Start(at(tc.t), loc)
			if !start.Equal(at(tc.start)) {
				t.Errorf("Start = %v, want %s", start, tc.start)
			}
			next := tc.p.Next(start, loc)
			if !next.Equal(at(tc.next)) {
				t.Errorf("Next = %v, want %s", next, tc.next)
			}
			if h := next.Sub(start).Hours(); h != tc.nextHours {
				t.Errorf("period is %vh long, want %vh", h, tc.nextHours)
			}
		})
	}
}

func TestLoadLocationPOSIXMatchesZoneinfo(t *testing.T) {
	zi, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skipf("no zoneinfo to compare with: %v", err)
	}
	posix := berlin(t)
	for tm := time.Date(2026, 1, 1, 0, 30, 0, 0, time.UTC); tm.Year() < 2029; tm = tm.Add(7 * time.Hour) {
		_, o1 := tm.In(zi).Zone()
		_, o2 := tm.In(posix).Zone()
		if o1 != o2 {
			t.Fatalf("%v: Europe/Berlin offset %d, POSIX string %d", tm, o1, o2)
		}
	}
}

func TestLoadLocation(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ok      bool
		summerH int // UTC offset in July, hours
	}{
		{"CET-1CEST,M3.5.0,M10.5.0/3", true, 2},
		{"EST5EDT,M3.2.0,M11.1.0", true, -4},
		{"<+0530>-5:30", true, 5},
		{"UTC0", true, 0},
		{"JST-9", true, 9},
		{"Europe/Berlin", true, 2},
		{"not a zone", false, 0},
		{"CET", true, 2}, // a zoneinfo name too
		{"XYZ", false, 0},
		{"", true, -100},
		{"Mars/Olympus_Mons", false, 0},
		{"-1", false, 0},
	} {
		loc, err := LoadLocation(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("LoadLocation(%q): err %v, want ok %v", tc.name, err, tc.ok)
			continue
		}
		if err != nil || tc.summerH == -100 {
			continue
		}
		_, off := time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC).In(loc).Zone()
		if tc.name == "<+0530>-5:30" {
			if off != 5*3600+1800 {
				t.Errorf("%q: offset %d, want 19800", tc.name, off)
			}
			continue
		}
		if off != tc.summerH*3600 {
			t.Errorf("%q: July offset %ds, want %dh", tc.name, off, tc.summerH)
		}
	}
}

func TestBytesQuotaRollsOverAtLocalMidnight(t *testing.T) {
	loc := berlin(t)
	// 23:00 in Berlin (UTC+1 in November).
	c := &clock{t: time.Date(2026, 11, 22, 23, 0, 0, 0, loc)}
	a := newTest(t, c, "")
	a.SetQuotas(map[string]Quota{"kid": {Period: Day, Bytes: 1000}})
	r := a.Record("kid")
	if err := r.Check(c.now()); err != nil {
		t.Fatalf("fresh user over quota: %v", err)
	}
	r.Add(1, 400, 599, c.now())
	if err := r.Check(c.now()); err != nil {
		t.Fatalf("999 of 1000 bytes: %v", err)
	}
	r.Add(1, 0, 1, c.now())
	err := r.Check(c.now())
	var qe *QuotaError
	if !errors.As(err, &qe) {
		t.Fatalf("1000 of 1000 bytes: err %v, want a QuotaError", err)
	}
	if qe.Bytes != 1000 || !qe.Resets.Equal(time.Date(2026, 11, 23, 0, 0, 0, 0, loc)) {
		t.Errorf("QuotaError %+v", qe)
	}
	if msg := err.Error(); !strings.Contains(msg, "daily quota of 1000 B of traffic used up") || !strings.Contains(msg, "2026-11-23 00:00 CET") {
		t.Errorf("message %q", msg)
	}
	c.advance(59*time.Minute + 59*time.Second) // 23:59:59: still today
	if r.Check(c.now()) == nil {
		t.Error("quota reset before midnight")
	}
	c.advance(time.Second) // 00:00 local, 23:00 UTC
	if err := r.Check(c.now()); err != nil {
		t.Errorf("after local midnight: %v", err)
	}
	e := a.Snapshot("kid")[0]
	if e.BytesUp+e.BytesDown != 1000 || e.Day.BytesUp+e.Day.BytesDown != 0 || e.Month.BytesUp+e.Month.BytesDown != 1000 {
		t.Errorf("after rollover: total %d, day %+v, month %+v", e.BytesUp+e.BytesDown, e.Day, e.Month)
	}
	if e.Quota == nil || e.Quota.Exceeded || e.Quota.UsedBytes != 0 {
		t.Errorf("quota entry %+v", e.Quota)
	}
	// Quotas of other identities do not apply; a reload can remove them.
	if err := a.Record("bob").Check(c.now()); err != nil {
		t.Errorf("bob has no quota: %v", err)
	}
}

func TestTimeQuotaAcrossWeekBoundary(t *testing.T) {
	loc := berlin(t)
	// Sunday 2026-11-29 22:00 local.
	c := &clock{t: time.Date(2026, 11, 29, 22, 0, 0, 0, loc)}
	a := newTest(t, c, "")
	a.SetQuotas(map[string]Quota{"kid": {Period: Week, Time: 3 * time.Hour}})
	r := a.Record("kid")
	r.Open(c.now())
	c.advance(90 * time.Minute)
	if err := r.Check(c.now()); err != nil {
		t.Fatalf("1h30 of 3h: %v", err)
	}
	c.advance(30 * time.Minute) // Monday 00:00: a new week
	if err := r.Check(c.now()); err != nil {
		t.Fatalf("new week: %v", err)
	}
	c.advance(3 * time.Hour) // Monday 03:00, still connected
	err := r.Check(c.now())
	var qe *QuotaError
	if !errors.As(err, &qe) || qe.Time != 3*time.Hour {
		t.Fatalf("3h into the week: err %v (%+v), want 3h used", err, qe)
	}
	r.Close(c.now())
	e := a.Snapshot("kid")[0]
	if e.OnlineS != 5*3600 || e.Week.OnlineS != 3*3600 {
		t.Errorf("online %ds, this week %ds; want 18000 and 10800", e.OnlineS, e.Week.OnlineS)
	}
	if e.Month.OnlineS != 5*3600 { // Sunday 22:00 to Monday 03:00 is all November
		t.Errorf("month online %ds, want 18000", e.Month.OnlineS)
	}
}

func TestMonthQuotaRollsOverAcrossDST(t *testing.T) {
	loc := berlin(t)
	c := &clock{t: time.Date(2026, 3, 31, 23, 30, 0, 0, loc)} // CEST since Mar 29
	a := newTest(t, c, "")
	a.SetQuotas(map[string]Quota{"u": {Period: Month, Bytes: 10}})
	r := a.Record("u")
	r.Add(1, 10, 0, c.now())
	if r.Check(c.now()) == nil {
		t.Fatal("10 of 10 bytes in March: not over quota")
	}
	c.advance(29 * time.Minute)
	if r.Check(c.now()) == nil {
		t.Fatal("March 31 23:59: quota reset early")
	}
	c.advance(time.Minute)
	if err := r.Check(c.now()); err != nil {
		t.Fatalf("April 1 00:00 CEST: %v", err)
	}
}

func TestReset(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)}
	dir := t.TempDir()
	a := newTest(t, c, dir)
	a.Record("alice").Add(1, 1, 1, c.now())
	a.Record(Key("", netip.MustParseAddr("10.0.0.5"))).Add(1, 2, 2, c.now())
	ok, err := a.Reset("10.0.0.5")
	if !ok || err != nil {
		t.Fatalf("Reset(10.0.0.5) = %v, %v", ok, err)
	}
	if ok, _ := a.Reset("nobody"); ok {
		t.Error("Reset(nobody) found a record")
	}
	es := a.Snapshot("")
	if len(es) != 1 || es[0].Key != "alice" {
		t.Fatalf("after reset: %+v, want alice only", es)
	}
	b, err := New(Config{Dir: dir, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	if es := b.Snapshot(""); len(es) != 1 || es[0].Key != "alice" {
		t.Fatalf("file after reset: %+v, want alice only", es)
	}
}

func TestMaxRecords(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)}
	a, err := New(Config{MaxRecords: 2, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"} {
		a.Record(Key("", netip.MustParseAddr(ip))).Add(1, 1, 0, c.now())
	}
	a.Record("alice").Add(1, 1, 0, c.now()) // users are never folded
	var keys []string
	for _, e := range a.Snapshot("") {
		keys = append(keys, e.Key+"="+string(rune('0'+e.Requests)))
	}
	if got := strings.Join(keys, " "); got != "addr:10.0.0.1=1 addr:10.0.0.2=1 addr:other=2 alice=1" {
		t.Errorf("records %s", got)
	}
}

func TestFileRoundTrip(t *testing.T) {
	loc := berlin(t)
	c := &clock{t: time.Date(2026, 11, 22, 10, 0, 0, 0, loc)}
	dir := t.TempDir()
	a := newTest(t, c, dir)
	a.SetQuotas(map[string]Quota{"alice": {Period: Day, Bytes: 1 << 20}})
	r := a.Record("alice")
	r.Open(c.now())
	r.Add(3, 1234, 56789, c.now())
	c.advance(42 * time.Second)
	r.Close(c.now())
	a.Record(Key("", netip.MustParseAddr("2001:db8::1"))).Add(1, 1, 2, c.now())
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	want := a.Snapshot("")

	c.advance(time.Hour) // same day: the day's usage comes back too
	b, err := New(Config{Dir: dir, Location: loc, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	b.SetQuotas(map[string]Quota{"alice": {Period: Day, Bytes: 1 << 20}})
	got := b.Snapshot("")
	if len(got) != len(want) {
		t.Fatalf("%d entries back, want %d", len(got), len(want))
	}
	for i := range want {
		w, g := want[i], got[i]
		if g.Key != w.Key || g.BytesUp != w.BytesUp || g.BytesDown != w.BytesDown || g.Requests != w.Requests ||
			g.Conns != w.Conns || g.OnlineS != w.OnlineS || !g.First.Equal(w.First) || !g.Last.Equal(w.Last) ||
			!samePeriod(g.Day, w.Day) || !samePeriod(g.Week, w.Week) || !samePeriod(g.Month, w.Month) {
			t.Errorf("entry %d:\n got  %+v\n want %+v", i, g, w)
		}
	}
	// The next day the day's usage starts from zero; the month's stays.
	c.advance(24 * time.Hour)
	d, err := New(Config{Dir: dir, Location: loc, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	e := d.Snapshot("alice")[0]
	if e.Day.BytesDown != 0 || e.Month.BytesDown != 56789 || e.BytesDown != 56789 {
		t.Errorf("next day: day %+v month %+v total %d", e.Day, e.Month, e.BytesDown)
	}
}

func samePeriod(a, b PeriodEntry) bool {
	return a.Start.Equal(b.Start) && a.BytesUp == b.BytesUp && a.BytesDown == b.BytesDown && a.OnlineS == b.OnlineS
}

func TestFlushOnlyWhenChanged(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)}
	dir := t.TempDir()
	a := newTest(t, c, dir)
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, FileName)); !os.IsNotExist(err) {
		t.Fatalf("a flush with nothing counted wrote the file (%v)", err)
	}
	a.Record("x").Add(1, 1, 1, c.now())
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	os.Chtimes(filepath.Join(dir, FileName), time.Unix(1, 0), time.Unix(1, 0))
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	fi2, _ := os.Stat(filepath.Join(dir, FileName))
	if !fi2.ModTime().Equal(time.Unix(1, 0)) {
		t.Errorf("an unchanged flush rewrote the file (size %d)", fi.Size())
	}
}

func TestFlushTimer(t *testing.T) {
	dir := t.TempDir()
	a, err := New(Config{Dir: dir, Interval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	a.Record("x").Add(1, 1, 1, time.Now())
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, FileName)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the flush timer did not write the file within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	a.tmu.Lock()
	armed := a.timer != nil
	a.tmu.Unlock()
	if armed {
		t.Error("the flush timer stays armed with nothing to write")
	}
}

func TestCorruptFileIsSetAside(t *testing.T) {
	good := encode([]state{{key: "alice", total: Counters{BytesUp: 5, Requests: 1, First: time.Unix(1700000000, 0), Last: time.Unix(1700000000, 0)}}})
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"truncated", good[:len(good)-10]},
		{"truncated in the end line", good[:len(good)-1]},
		{"empty", nil},
		{"flipped digit", []byte(strings.Replace(string(good), " 5 ", " 6 ", 1))},
		{"other version", []byte(strings.Replace(string(good), "sluice-accounting 1", "sluice-accounting 9", 1))},
		{"garbage", []byte("\x00\x01binary\nend 0 00000000\n")},
		{"trailing bytes", append(append([]byte{}, good...), "x"...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, FileName)
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			a, err := New(Config{Dir: dir})
			var ce *CorruptError
			if !errors.As(err, &ce) || a == nil {
				t.Fatalf("New: %v (accounting %v), want a CorruptError and an empty accounting", err, a)
			}
			if len(a.Snapshot("")) != 0 {
				t.Error("records read from a corrupt file")
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Errorf("corrupt file still in place (%v)", err)
			}
			kept, err := os.ReadFile(ce.Aside)
			if err != nil || string(kept) != string(tc.data) || !strings.HasSuffix(ce.Aside, ".corrupt") {
				t.Errorf("set aside as %s: %v, content kept %v", ce.Aside, err, string(kept) == string(tc.data))
			}
		})
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, FileName), good, 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Dir: dir})
	if err != nil || len(a.Snapshot("alice")) != 1 {
		t.Fatalf("intact file: %v", err)
	}
}

func TestFormat(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 30: "5.0 GiB"} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
	for d, want := range map[time.Duration]string{12 * time.Second: "12s", 187 * time.Second: "3m07s",
		2*time.Hour + 5*time.Minute: "2h05m", 28 * time.Hour: "1d04h"} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(encode(nil))
	f.Add(encode([]state{{key: "alice", total: Counters{BytesUp: 1, Online: time.Second}}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		states, err := parse(data)
		if err != nil {
			return
		}
		// Whatever parses encodes back to the same bytes.
		if again := encode(states); string(again) != string(data) {
			t.Fatalf("parse/encode round trip differs:\n%q\n%q", data, again)
		}
	})
}

func TestVerify(t *testing.T) {
	dir := t.TempDir()
	if n, err := Verify(dir); n != 0 || err != nil {
		t.Errorf("no file: %d, %v", n, err)
	}
	good := encode([]state{{key: "a", total: Counters{Requests: 1}}, {key: "b", total: Counters{Requests: 2}}})
	os.WriteFile(filepath.Join(dir, FileName), good, 0o600)
	if n, err := Verify(dir); n != 2 || err != nil {
		t.Errorf("good file: %d, %v", n, err)
	}
	os.WriteFile(filepath.Join(dir, FileName), good[:len(good)-3], 0o600)
	if _, err := Verify(dir); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("truncated file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, FileName)); err != nil {
		t.Errorf("Verify moved the file: %v", err)
	}
}

// fakeSource adds a fixed count to a record on every sync, like a live
// tunnel that keeps moving bytes.
type fakeSource struct {
	r     *Record
	now   func() time.Time
	syncs int
}

func (s *fakeSource) Sync(ctx context.Context) {
	s.syncs++
	s.r.Add(0, 10, 100, s.now())
}

func TestSourcesSyncBeforeFlushAndSnapshot(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)}
	dir := t.TempDir()
	a := newTest(t, c, dir)
	src := &fakeSource{r: a.Record("tunneller"), now: c.now}
	a.AddSource(src)
	if e := a.Snapshot("tunneller"); len(e) != 1 || e[0].BytesDown != 100 {
		t.Fatalf("snapshot did not sync the source: %+v", e)
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{Dir: dir, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	if e := b.Snapshot("tunneller"); len(e) != 1 || e[0].BytesDown != 200 || e[0].BytesUp != 20 {
		t.Fatalf("file after a flush with a source: %+v, want 20 up and 200 down", e)
	}
	a.RemoveSource(src)
	a.Snapshot("")
	if src.syncs != 2 {
		t.Errorf("a removed source was synced: %d syncs, want 2", src.syncs)
	}
}

// BenchmarkRequest is what one request costs the proxy: quota check and
// add, on a user with a quota.
func BenchmarkRequest(b *testing.B) {
	a, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	a.SetQuotas(map[string]Quota{"u": {Period: Day, Bytes: 1 << 50}})
	r := a.Record("u")
	now := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if r.Check(now) != nil {
				b.Fatal("over quota")
			}
			r.Add(1, 100, 1000, now)
		}
	})
}

func TestLoadLocationOpenWrtTZFile(t *testing.T) {
	dir := t.TempDir()
	tzFile := filepath.Join(dir, "TZ")
	missing := filepath.Join(dir, "localtime")
	if err := os.WriteFile(tzFile, []byte("EST5EDT,M3.2.0,M11.1.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	loc, err := loadLocation("", false, missing, tzFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, off := time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC).In(loc).Zone(); off != -4*3600 {
		t.Errorf("from /etc/TZ: July offset %d, want -14400", off)
	}
	// TZ in the environment or /etc/localtime win over /etc/TZ.
	if loc, _ := loadLocation("", true, missing, tzFile); loc != time.Local {
		t.Error("TZ set: not the process's local time")
	}
	if loc, _ := loadLocation("", false, tzFile, tzFile); loc != time.Local {
		t.Error("/etc/localtime present: not the process's local time")
	}
	if loc, err := loadLocation("", false, missing, filepath.Join(dir, "none")); err != nil || loc != time.Local {
		t.Errorf("no /etc/TZ: %v, %v", loc, err)
	}
	if err := os.WriteFile(tzFile, []byte("garbage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadLocation("", false, missing, tzFile); err == nil || !strings.Contains(err.Error(), tzFile) {
		t.Errorf("bad /etc/TZ: %v, want an error naming the file", err)
	}
}

func FuzzLoadLocation(f *testing.F) {
	for _, s := range []string{"CET-1CEST,M3.5.0,M10.5.0/3", "<+0530>-5:30", "EST5EDT,M3.2.0,M11.1.0", "UTC0", "JST-9", "garbage", "Europe/Berlin"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		loc, err := LoadLocation(name)
		if err != nil {
			return
		}
		// Whatever is accepted gives periods that start before they end.
		now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
		for p := range numPeriods {
			start := p.Start(now, loc)
			if next := p.Next(start, loc); now.Before(start) || !now.Before(next) {
				t.Fatalf("%q: %v period %v .. %v around %v", name, p, start, next, now)
			}
		}
	})
}

// TestFlushRetriesAfterAFailedWrite pins a bug: a failed write left the
// counters marked unwritten but the timer disarmed, so nothing was
// written again until a signal.
func TestFlushRetriesAfterAFailedWrite(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "acct")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Dir: dir, Interval: 30 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	// The directory becomes a file: writes fail.
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	a.Record("x").Add(1, 1, 1, time.Now())
	time.Sleep(200 * time.Millisecond) // a few failed ticks
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, FileName)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no write after the directory could be created again")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStaleTempFilesRemoved(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, FileName+".123.tmp")
	fresh := filepath.Join(dir, FileName+".456.tmp")
	for _, p := range []string{old, fresh} {
		if err := os.WriteFile(p, []byte("half a write"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("an hour-old temp file is still there (%v)", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("a fresh temp file (a write in progress) was removed: %v", err)
	}
}
