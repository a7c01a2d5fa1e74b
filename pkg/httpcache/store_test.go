package httpcache

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func entry(t *testing.T, url string, body []byte, resp ...string) *Entry {
	t.Helper()
	return entryFor(t, Request{Method: "GET", URL: url}, body, resp...)
}

func entryFor(t *testing.T, req Request, body []byte, resp ...string) *Entry {
	t.Helper()
	e, why := Analyze(req, 200, "OK", hdr(append([]string{"Cache-Control: max-age=60"}, resp...)...), t0, t0)
	if e == nil {
		t.Fatal(why)
	}
	e.Body, e.BodyLen = body, int64(len(body))
	return e
}

// write stores e on disk as the proxy does: a slot, then WriteDisk.
func write(t *testing.T, c *Cache, e *Entry) error {
	t.Helper()
	if !c.ReserveWrite() {
		t.Fatal("no write slot")
	}
	return c.WriteDisk(e)
}

func TestLRUEviction(t *testing.T) {
	c, err := New(Config{MaxBytes: 3 * (10000 + 1000)})
	if err != nil {
		t.Fatal(err)
	}
	url := func(i int) string { return fmt.Sprintf("http://h/%d", i) }
	for i := range 3 {
		c.Put(entry(t, url(i), make([]byte, 10000)))
	}
	if c.Lookup(Request{URL: url(0)}) == nil { // 0 is now the most recent
		t.Fatal("entry 0 missing before the limit was reached")
	}
	c.Put(entry(t, url(3), make([]byte, 10000)))
	for i, want := range []bool{true, false, true, true} {
		if got := c.Lookup(Request{URL: url(i)}) != nil; got != want {
			t.Errorf("entry %d stored = %v, want %v (least recently used goes first)", i, got, want)
		}
	}
	st := c.Stats()
	if st.MemEntries != 3 || st.MemBytes > 3*(10000+1000) || st.Evicted != 1 {
		t.Errorf("stats %+v", st)
	}
	// Larger than MaxObject or the whole store: not stored.
	c.Put(entry(t, url(9), make([]byte, DefaultMaxObject+1)))
	if c.Lookup(Request{URL: url(9)}) != nil {
		t.Error("an object over MaxObject was stored")
	}
}

func TestVariantsAndInvalidate(t *testing.T) {
	c, _ := New(Config{MaxBytes: 1 << 20})
	en := Request{Method: "GET", URL: "http://h/v", Header: hdr("Accept-Language: en")}
	de := Request{Method: "GET", URL: "http://h/v", Header: hdr("Accept-Language: de")}
	c.Put(entryFor(t, en, []byte("hello"), "Vary: Accept-Language"))
	c.Put(entryFor(t, de, []byte("hallo"), "Vary: Accept-Language"))
	c.Put(entryFor(t, en, []byte("hello again"), "Vary: Accept-Language"))
	if e := c.Lookup(en); e == nil || string(e.Body) != "hello again" {
		t.Errorf("en variant: %v", e)
	}
	if e := c.Lookup(de); e == nil || string(e.Body) != "hallo" {
		t.Errorf("de variant: %v", e)
	}
	if st := c.Stats(); st.MemEntries != 2 {
		t.Errorf("%d entries, want 2 variants", st.MemEntries)
	}
	c.Invalidate("http://h/v")
	if c.Lookup(en) != nil || c.Lookup(de) != nil || c.Stats().MemBytes != 0 {
		t.Error("variants left after Invalidate")
	}
}

func TestJoinRelease(t *testing.T) {
	c, _ := New(Config{MaxBytes: 1 << 20})
	woken := 0
	if !c.Join("u", func() { woken++ }) {
		t.Fatal("first Join is not the leader")
	}
	for range 3 {
		if c.Join("u", func() { woken++ }) {
			t.Fatal("a later Join became a leader")
		}
	}
	c.Release("u")
	if woken != 3 {
		t.Errorf("woken %d, want 3", woken)
	}
	if !c.Join("u", func() {}) {
		t.Error("after Release, Join does not lead")
	}
}

func TestDiskStore(t *testing.T) {
	dir := t.TempDir()
	c, err := New(Config{MaxBytes: 1 << 20, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte("0123456789"), 5000)
	e := entry(t, "http://h/disk", body, `ETag: "d"`)
	if err := write(t, c, e); err != nil {
		t.Fatal(err)
	}
	if err := write(t, c, entry(t, "http://h/other", []byte("x"))); err != nil {
		t.Fatal(err)
	}
	// An interrupted write leaves a temporary file; the next start
	// removes it.
	if err := os.WriteFile(filepath.Join(dir, tmpPrefix+"123"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	c2, err := New(Config{MaxBytes: 1 << 20, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	d := c2.Lookup(Request{URL: "http://h/disk"})
	if d == nil || d.Body != nil || d.File == "" || d.ETag != `"d"` || d.Lifetime() != time.Minute {
		t.Fatalf("disk entry after a restart: %+v", d)
	}
	fd, err := c2.OpenBody(d)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, d.BodyLen)
	f := os.NewFile(uintptr(fd), d.File)
	if _, err := f.ReadAt(got, d.BodyOff); err != nil || !bytes.Equal(got, body) {
		t.Errorf("body read back: %v, equal %v", err, bytes.Equal(got, body))
	}
	if err := c2.Promote(d, fd); err != nil {
		t.Fatal(err)
	}
	if m := c2.Lookup(Request{URL: "http://h/disk"}); m == nil || m.File != "" || !bytes.Equal(m.Body, body) || m.ETag != `"d"` {
		t.Errorf("after Promote, the entry is not served from memory: %+v", m)
	}
	f.Close()
	if _, err := os.Stat(filepath.Join(dir, tmpPrefix+"123")); !os.IsNotExist(err) {
		t.Errorf("temporary file not removed: %v", err)
	}

	// A truncated entry is discarded at start, the other kept.
	if err := os.Truncate(d.File, d.BodyOff+10); err != nil {
		t.Fatal(err)
	}
	c3, err := New(Config{MaxBytes: 1 << 20, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if c3.Lookup(Request{URL: "http://h/disk"}) != nil {
		t.Error("truncated entry indexed")
	}
	if _, err := os.Stat(d.File); !os.IsNotExist(err) {
		t.Errorf("truncated file kept: %v", err)
	}
	if c3.Lookup(Request{URL: "http://h/other"}) == nil {
		t.Error("intact entry lost")
	}

	// Truncated after indexing: OpenBody finds it and drops it.
	o := c3.Lookup(Request{URL: "http://h/other"})
	if err := os.Truncate(o.File, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := c3.OpenBody(o); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("OpenBody of a truncated file: %v", err)
	}
	if c3.Lookup(Request{URL: "http://h/other"}) != nil {
		t.Error("damaged entry still indexed")
	}
}

func TestDiskEviction(t *testing.T) {
	dir := t.TempDir()
	c, _ := New(Config{MaxBytes: 1 << 20, Dir: dir, DirMaxBytes: 25000})
	for i := range 3 {
		if err := write(t, c, entry(t, fmt.Sprintf("http://h/%d", i), make([]byte, 10000))); err != nil {
			t.Fatal(err)
		}
	}
	if c.Lookup(Request{URL: "http://h/0"}) != nil || c.Lookup(Request{URL: "http://h/2"}) == nil {
		t.Error("disk LRU did not evict the oldest entry")
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*"+fileSuffix))
	if len(files) != 2 {
		t.Errorf("%d files on disk, want 2", len(files))
	}
}

func TestRewriteDisk(t *testing.T) {
	dir := t.TempDir()
	c, _ := New(Config{MaxBytes: 1 << 20, Dir: dir})
	body := bytes.Repeat([]byte("abc"), 1000)
	if err := write(t, c, entry(t, "http://h/r", body, `ETag: "r"`, "X-Old: 1")); err != nil {
		t.Fatal(err)
	}
	d := c.Lookup(Request{URL: "http://h/r"})
	fd, err := c.OpenBody(d) // a hit holding the old file
	if err != nil {
		t.Fatal(err)
	}
	held := os.NewFile(uintptr(fd), d.File)
	defer held.Close()
	u := d.Updated(hdr("Cache-Control: max-age=600", "X-New: 2"), t0.Add(time.Hour), t0.Add(time.Hour))
	if !c.ReserveWrite() {
		t.Fatal("no write slot")
	}
	if err := c.RewriteDisk(u); err != nil {
		t.Fatal(err)
	}
	// The held file still has its old layout.
	got := make([]byte, d.BodyLen)
	if _, err := held.ReadAt(got, d.BodyOff); err != nil || !bytes.Equal(got, body) {
		t.Errorf("held file after the rewrite: %v", err)
	}
	c2, err := New(Config{MaxBytes: 1 << 20, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	n := c2.Lookup(Request{URL: "http://h/r"})
	if n == nil || n.Lifetime() != 10*time.Minute || !strings.Contains(n.Fields, "X-New: 2") || !strings.Contains(n.Fields, "X-Old: 1") || !n.ResponseTime.Equal(t0.Add(time.Hour)) {
		t.Fatalf("rewritten entry after a restart: %+v", n)
	}
	fd, err = c2.OpenBody(n)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), n.File)
	defer f.Close()
	if _, err := f.ReadAt(got, n.BodyOff); err != nil || !bytes.Equal(got, body) {
		t.Errorf("rewritten body: %v", err)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "*")); len(files) != 1 {
		t.Errorf("files after the rewrite: %v", files)
	}
}

func TestWriteSlots(t *testing.T) {
	c, _ := New(Config{MaxBytes: 1 << 20, Dir: t.TempDir()})
	for i := range maxWrites {
		if !c.ReserveWrite() {
			t.Fatalf("slot %d refused", i)
		}
	}
	if c.ReserveWrite() {
		t.Fatal("more slots than maxWrites")
	}
	c.CancelWrite()
	if !c.ReserveWrite() {
		t.Fatal("a cancelled slot was not given back")
	}
	if m, _ := New(Config{MaxBytes: 1 << 20}); m.ReserveWrite() {
		t.Error("a write slot without a disk store")
	}
}

// TestMemoryAccounting checks that the bytes the memory store counts are
// close to what its entries hold on the heap, for small objects (where
// the per-entry overhead matters most) with a typical head.
func TestMemoryAccounting(t *testing.T) {
	const n = 20000
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	c, _ := New(Config{MaxBytes: 1 << 30})
	for i := range n {
		req := Request{Method: "GET", URL: fmt.Sprintf("http://example.com/static/img/%d.png", i), Header: hdr("Accept-Encoding: gzip")}
		head := fmt.Sprintf("Date: Sun, 22 Nov 2026 08:00:00 GMT\r\nCache-Control: public, max-age=3600\r\nContent-Type: image/png\r\n"+
			"Last-Modified: Sun, 01 Nov 2026 00:00:00 GMT\r\nETag: \"abc%d\"\r\nServer: nginx\r\nVary: Accept-Encoding\r\n", i)
		e, why := Analyze(req, 200, "OK", parseFields(head), t0, t0)
		if e == nil {
			t.Fatal(why)
		}
		e.Body, e.BodyLen = make([]byte, 100), 100
		c.Put(e)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	counted := float64(c.Stats().MemBytes)
	heap := float64(after.HeapAlloc) - float64(before.HeapAlloc)
	t.Logf("%d entries: %.0f bytes counted, %.0f on the heap (%.2f)", n, counted, heap, counted/heap)
	if r := counted / heap; r < 0.8 || r > 1.3 {
		t.Errorf("the store counts %.2f of the heap its entries hold, want 0.8 to 1.3", r)
	}
	runtime.KeepAlive(c)
}
