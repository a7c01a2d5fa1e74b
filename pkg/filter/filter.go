// Package filter blocks proxied content: URL patterns checked before a
// request is sent, and words found in text response bodies as they stream
// through, across read and chunk boundaries, without buffering bodies.
package filter

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/sluice-proxy/sluice/pkg/acl"
	"strings"
)

// URLs is a list of URL patterns; '*' matches any run of characters and
// matching ignores ASCII case. A pattern without '*' matches any URL that
// contains it ("casino" blocks http://a.example/casino/x).
type URLs struct {
	patterns []string
}

// NewURLs checks and keeps patterns.
func NewURLs(patterns []string) (*URLs, error) {
	u := &URLs{}
	for _, p := range patterns {
		p = strings.ToLower(strings.TrimSpace(p))
		if strings.Trim(p, "*") == "" {
			return nil, fmt.Errorf("url pattern %q matches everything", p)
		}
		if !strings.Contains(p, "*") {
			p = "*" + p + "*"
		}
		u.patterns = append(u.patterns, p)
	}
	return u, nil
}

// Match returns the first pattern url matches. A nil *URLs matches
// nothing.
func (u *URLs) Match(url string) (string, bool) {
	if u == nil {
		return "", false
	}
	url = strings.ToLower(url)
	for _, p := range u.patterns {
		if acl.Glob(p, url) {
			return p, true
		}
	}
	return "", false
}

// MaxWord bounds the length of a body word; it is also the most a Scanner
// carries from one piece of a body to the next.
const MaxWord = 64

// Words is a list of words to find in bodies, ignoring ASCII case.
type Words struct {
	words  [][]byte // lower case
	maxLen int
}

// NewWords checks and keeps words.
func NewWords(words []string) (*Words, error) {
	w := &Words{}
	for _, s := range words {
		if s == "" || len(s) > MaxWord {
			return nil, fmt.Errorf("body word %q: want 1 to %d bytes", s, MaxWord)
		}
		w.words = append(w.words, lowerBytes(nil, []byte(s)))
		w.maxLen = max(w.maxLen, len(s))
	}
	if len(w.words) == 0 {
		return nil, errors.New("no body words")
	}
	return w, nil
}

// Scanner finds Words in one body fed to it in pieces. Its memory is the
// carry of the last MaxWord-1 bytes and a scratch buffer reused per piece.
type Scanner struct {
	w       *Words
	carry   []byte
	scratch []byte
}

// NewScanner starts scanning a body.
func (w *Words) NewScanner() *Scanner { return &Scanner{w: w} }

// Scan looks at the next piece of the body and returns the first word that
// ends in it (a word may start in earlier pieces).
func (s *Scanner) Scan(p []byte) (string, bool) {
	if len(p) == 0 {
		return "", false
	}
	// carry + p, lower-cased; only the carry and p itself are searched.
	s.scratch = append(s.scratch[:0], s.carry...)
	s.scratch = lowerBytes(s.scratch, p)
	for _, w := range s.w.words {
		// A match found entirely in the carry was reported before.
		from := max(0, len(s.carry)-len(w)+1)
		if bytes.Contains(s.scratch[from:], w) {
			return string(w), true
		}
	}
	keep := min(s.w.maxLen-1, len(s.scratch))
	s.carry = append(s.carry[:0], s.scratch[len(s.scratch)-keep:]...)
	return "", false
}

func lowerBytes(dst, src []byte) []byte {
	for _, c := range src {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// Scannable reports whether a response with these Content-Type and
// Content-Encoding values is text sluice can read: text/*, JSON, XML or
// JavaScript, not compressed.
func Scannable(contentType, contentEncoding string) bool {
	if e := strings.TrimSpace(strings.ToLower(contentEncoding)); e != "" && e != "identity" {
		return false
	}
	t := strings.ToLower(contentType)
	if i := strings.IndexByte(t, ';'); i >= 0 {
		t = t[:i]
	}
	t = strings.TrimSpace(t)
	return strings.HasPrefix(t, "text/") || strings.HasSuffix(t, "json") || strings.HasSuffix(t, "xml") ||
		strings.HasSuffix(t, "javascript")
}
