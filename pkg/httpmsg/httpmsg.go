// Package httpmsg parses HTTP/1.x message heads and chunked bodies
// strictly, for a proxy that must never disagree with the servers behind it
// about where a message ends (RFC 9112).
//
// The parsers work on bytes already read: they never read, allocate only
// the strings of the parsed head, and say ErrIncomplete when more bytes are
// needed. Every shape that lets two parsers disagree is an error with the
// HTTP status to answer: Content-Length together with Transfer-Encoding,
// differing Content-Length values, obs-fold, bare LF or CR, control
// characters, whitespace before a colon, and heads past their limits.
package httpmsg

import (
	"errors"
	"fmt"
)

// ErrIncomplete is returned while the bytes given hold no complete head (or
// chunk line) and no limit has been passed yet: read more and try again.
var ErrIncomplete = errors.New("incomplete message head")

// Error is a malformed or oversized message; Status is the response code a
// server or proxy answers it with.
type Error struct {
	Status int    // 400, 414, 431, 501, 505
	Reason string // for logs and the short error body
}

func (e *Error) Error() string { return fmt.Sprintf("%d: %s", e.Status, e.Reason) }

func bad(format string, args ...any) *Error {
	return &Error{Status: 400, Reason: fmt.Sprintf(format, args...)}
}

// Limits bound a head. The zero value means the defaults below.
type Limits struct {
	// MaxLine bounds the request line (else 414) or status line, and each
	// field line (else 431). If zero, DefaultMaxLine.
	MaxLine int
	// MaxHead bounds the whole head, request line and fields (else 431).
	// If zero, DefaultMaxHead.
	MaxHead int
	// MaxFields bounds the number of field lines (else 431). If zero,
	// DefaultMaxFields.
	MaxFields int
}

// Defaults of Limits.
const (
	DefaultMaxLine   = 8192
	DefaultMaxHead   = 16384
	DefaultMaxFields = 100
)

func (l Limits) withDefaults() Limits {
	if l.MaxLine <= 0 {
		l.MaxLine = DefaultMaxLine
	}
	if l.MaxHead <= 0 {
		l.MaxHead = DefaultMaxHead
	}
	if l.MaxFields <= 0 {
		l.MaxFields = DefaultMaxFields
	}
	return l
}

// Field is one header field as received (name case kept).
type Field struct {
	Name, Value string
}

// Header is the fields of a head in order.
type Header []Field

// Get returns the value of the first field named name (case-insensitive)
// and whether there is one.
func (h Header) Get(name string) (string, bool) {
	for _, f := range h {
		if equalFold(f.Name, name) {
			return f.Value, true
		}
	}
	return "", false
}

// Values returns the values of every field named name, in order.
func (h Header) Values(name string) []string {
	var out []string
	for _, f := range h {
		if equalFold(f.Name, name) {
			out = append(out, f.Value)
		}
	}
	return out
}

// Framing says how a message body is delimited.
type Framing int

// Framing values.
const (
	NoBody     Framing = iota // no body at all
	Length                    // Content-Length bytes
	Chunked                   // chunked transfer coding
	UntilClose                // until the sender closes (responses only)
)

func (f Framing) String() string {
	switch f {
	case NoBody:
		return "none"
	case Length:
		return "length"
	case Chunked:
		return "chunked"
	}
	return "until-close"
}

// Version is an HTTP/1.x minor version: 0 or 1.
type Version int

// String returns "HTTP/1.0" or "HTTP/1.1".
func (v Version) String() string {
	if v == 0 {
		return "HTTP/1.0"
	}
	return "HTTP/1.1"
}
