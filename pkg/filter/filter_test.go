package filter

import (
	"strings"
	"testing"
)

func TestURLs(t *testing.T) {
	u, err := NewURLs([]string{"casino", "*.ads.example/*", "http://x.example/private*"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		url  string
		want bool
	}{
		{"http://a.example/CASINO/x", true},
		{"http://cdn.ads.example/banner.gif", true},
		{"http://x.example/private/1", true},
		{"http://x.example/public", false},
		{"http://ads.example/", false},
		{"example.com:443", false},
	}
	for _, tt := range tests {
		if _, got := u.Match(tt.url); got != tt.want {
			t.Errorf("Match(%q) = %v, want %v", tt.url, got, tt.want)
		}
	}
	if _, err := NewURLs([]string{"**"}); err == nil {
		t.Error("a pattern matching everything was accepted")
	}
	var none *URLs
	if _, ok := none.Match("http://a/"); ok {
		t.Error("nil URLs matched")
	}
}

// TestScannerBoundaries feeds a body in pieces of every size: a word split
// across pieces is found, once, in the piece where it ends.
func TestScannerBoundaries(t *testing.T) {
	w, err := NewWords([]string{"Forbidden", "xyz"})
	if err != nil {
		t.Fatal(err)
	}
	body := strings.Repeat("innocent text ", 50) + "this is FORBIDDEN content" + strings.Repeat(" more", 50)
	end := strings.Index(strings.ToLower(body), "forbidden") + len("forbidden")
	for size := 1; size <= len(body); size++ {
		s := w.NewScanner()
		found := -1
		for off := 0; off < len(body); off += size {
			piece := body[off:min(off+size, len(body))]
			if word, ok := s.Scan([]byte(piece)); ok {
				if word != "forbidden" {
					t.Fatalf("size %d: found %q", size, word)
				}
				found = off + len(piece)
				break
			}
		}
		if found < end || found > end+size {
			t.Fatalf("size %d: found at %d, word ends at %d", size, found, end)
		}
	}
	s := w.NewScanner()
	for _, piece := range []string{"forbid", "de", "rope"} {
		if _, ok := s.Scan([]byte(piece)); ok {
			t.Fatalf("false match at %q", piece)
		}
	}
}

func TestScannable(t *testing.T) {
	tests := []struct {
		ct, ce string
		want   bool
	}{
		{"text/html; charset=utf-8", "", true},
		{"application/json", "identity", true},
		{"application/javascript", "", true},
		{"image/png", "", false},
		{"text/html", "gzip", false},
		{"", "", false},
	}
	for _, tt := range tests {
		if got := Scannable(tt.ct, tt.ce); got != tt.want {
			t.Errorf("Scannable(%q, %q) = %v", tt.ct, tt.ce, got)
		}
	}
}

func FuzzScanner(f *testing.F) {
	f.Add("hello forbidden world", "forbidden", uint8(3))
	f.Fuzz(func(t *testing.T, body, word string, step uint8) {
		w, err := NewWords([]string{word})
		if err != nil {
			return
		}
		// ASCII case only: strings.ToLower would rewrite invalid UTF-8.
		want := strings.Contains(string(lowerBytes(nil, []byte(body))), string(lowerBytes(nil, []byte(word))))
		n := int(step%32) + 1
		s := w.NewScanner()
		got := false
		for off := 0; off < len(body) && !got; off += n {
			_, got = s.Scan([]byte(body[off:min(off+n, len(body))]))
		}
		if got != want {
			t.Fatalf("body %q word %q step %d: found %v, want %v", body, word, n, got, want)
		}
	})
}
