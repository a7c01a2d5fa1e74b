package httpcache

import (
	"fmt"
	"testing"
	"time"
)

func TestParseRange(t *testing.T) {
	tests := []struct {
		v    string
		size int64
		want ByteRange
		out  RangeOutcome
	}{
		{"bytes=0-99", 1000, ByteRange{0, 100}, PartOfBody},
		{"bytes=100-", 1000, ByteRange{100, 900}, PartOfBody},
		{"bytes=-100", 1000, ByteRange{900, 100}, PartOfBody},
		{"bytes=-5000", 1000, ByteRange{0, 1000}, PartOfBody},
		{"bytes=990-5000", 1000, ByteRange{990, 10}, PartOfBody},
		{"BYTES = 5-5", 1000, ByteRange{5, 1}, PartOfBody},
		{"bytes=999-", 1000, ByteRange{999, 1}, PartOfBody},
		{"bytes=1000-", 1000, ByteRange{}, Unsatisfiable},
		{"bytes=1000-2000", 1000, ByteRange{}, Unsatisfiable},
		{"bytes=-0", 1000, ByteRange{}, Unsatisfiable},
		{"bytes=0-", 0, ByteRange{}, Unsatisfiable},
		{"bytes=-1", 0, ByteRange{}, Unsatisfiable},
		{"bytes=0-1,5-6", 1000, ByteRange{}, WholeBody},
		{"bytes=9-1", 1000, ByteRange{}, WholeBody},
		{"items=0-1", 1000, ByteRange{}, WholeBody},
		{"bytes=a-b", 1000, ByteRange{}, WholeBody},
		{"bytes=+1-2", 1000, ByteRange{}, WholeBody},
		{"bytes=-", 1000, ByteRange{}, WholeBody},
		{"bytes", 1000, ByteRange{}, WholeBody},
		{"bytes=1234567890123456789-", 1000, ByteRange{}, WholeBody},
		{"bytes=999999999999999999-", 1000, ByteRange{}, Unsatisfiable},
	}
	for _, tt := range tests {
		got, out := ParseRange(tt.v, tt.size)
		if got != tt.want || out != tt.out {
			t.Errorf("ParseRange(%q, %d) = %v, %d; want %v, %d", tt.v, tt.size, got, out, tt.want, tt.out)
		}
	}
}

func TestRangeFor(t *testing.T) {
	lm := date(t0.Add(-time.Hour))
	fields := []string{"Cache-Control: max-age=60", "Date: " + date(t0), "Last-Modified: " + lm}
	strong, _ := Analyze(Request{Method: "GET", URL: "u"}, 200, "OK", hdr(append(fields, `ETag: "v1"`)...), t0, t0)
	weak, _ := Analyze(Request{Method: "GET", URL: "u"}, 200, "OK", hdr(append(fields, `ETag: W/"v1"`)...), t0, t0)
	notFound, _ := Analyze(Request{Method: "GET", URL: "u"}, 404, "Not Found", hdr(fields...), t0, t0)
	for _, e := range []*Entry{strong, weak, notFound} {
		if e == nil {
			t.Fatal("not stored")
		}
		e.BodyLen = 1000
	}
	part := ByteRange{10, 10}
	tests := []struct {
		e    *Entry
		req  []string
		want RangeOutcome
	}{
		{strong, []string{"Range: bytes=10-19"}, PartOfBody},
		{strong, nil, WholeBody},
		{strong, []string{"Range: bytes=10-19", `If-Range: "v1"`}, PartOfBody},
		{strong, []string{"Range: bytes=10-19", `If-Range: "v0"`}, WholeBody},
		{strong, []string{"Range: bytes=10-19", `If-Range: W/"v1"`}, WholeBody},
		{weak, []string{"Range: bytes=10-19", `If-Range: W/"v1"`}, WholeBody},
		{weak, []string{"Range: bytes=10-19", `If-Range: "v1"`}, WholeBody},
		{strong, []string{"Range: bytes=10-19", "If-Range: " + lm}, PartOfBody},
		{strong, []string{"Range: bytes=10-19", "If-Range: " + date(t0.Add(-2*time.Hour))}, WholeBody},
		{strong, []string{"Range: bytes=10-19", "If-Range: not a date"}, WholeBody},
		{strong, []string{"Range: bytes=2000-"}, Unsatisfiable},
		{notFound, []string{"Range: bytes=10-19"}, WholeBody},
	}
	for _, tt := range tests {
		got, out := tt.e.RangeFor(hdr(tt.req...))
		if out != tt.want || out == PartOfBody && got != part || out == WholeBody && got != (ByteRange{Length: 1000}) {
			t.Errorf("status %d ETag %q, %q: %v %d, want outcome %d", tt.e.Status, tt.e.ETag, tt.req, got, out, tt.want)
		}
	}
}

// FuzzParseRange: any Range value against any size gives a range inside
// the body, or no range.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-99", "bytes=-5", "bytes=7-", "bytes=1-2,3-4", "bytes=999999999999999999-"} {
		f.Add(s, int64(1000))
	}
	f.Fuzz(func(t *testing.T, v string, size int64) {
		if size < 0 {
			size = -(size + 1)
		}
		r, out := ParseRange(v, size)
		switch out {
		case PartOfBody:
			if r.Start < 0 || r.Length <= 0 || r.Start+r.Length > size {
				t.Fatalf("%q size %d: range %v outside the body", v, size, r)
			}
		case WholeBody, Unsatisfiable:
			if r != (ByteRange{}) {
				t.Fatalf("%q: outcome %d with range %v", v, out, r)
			}
		default:
			t.Fatal(fmt.Sprint("outcome ", out))
		}
	})
}
