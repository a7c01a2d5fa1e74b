// Package ratelimit holds the token buckets that rate classes are enforced
// with: rate parsing, [Bucket] (a reservation token bucket safe for every
// loop at once) and [Registry], the per-user buckets and connection counts
// built from the configuration and rebuilt on reload.
//
// A user's connections, on whatever loop, draw from one bucket per
// direction. A reader asks for at most one grant (a few milliseconds of the
// rate), is told how long to wait before it may read those bytes, and gives
// back what it did not read. Grants queue in time, so waiting connections
// resume in turn and none takes the whole burst.
package ratelimit

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// MaxRate is the largest rate accepted, in bytes per second (100 Gbit/s).
const MaxRate = 100e9 / 8

// ParseRate parses a rate into bytes per second. The forms are a number
// (digits with an optional fraction), an optional prefix and an optional
// unit, case-insensitive, optionally followed by "/s":
//
//	prefix: k, m, g  (powers of 1000, as in networking)
//	        ki, mi, gi (powers of 1024)
//	unit:   bit  (bits per second: 10mbit is 1,250,000 bytes/s)
//	        byte (bytes per second; also the meaning of no unit)
//
// So "10mbit", "512kbyte", "512k", "1.5MiByte/s" and "65536" are rates. The
// result is at least 1 and at most MaxRate; 0 and negative rates are
// errors (a rate that is not set means no limit).
func ParseRate(s string) (int64, error) {
	bad := func(why string) error {
		return fmt.Errorf("%q: %s; want a rate such as 10mbit, 512kbyte or 65536 (bytes/s)", s, why)
	}
	v := strings.ToLower(strings.TrimSpace(s))
	v = strings.TrimSuffix(v, "/s")
	i := 0
	for i < len(v) && (v[i] >= '0' && v[i] <= '9' || v[i] == '.') {
		i++
	}
	num, rest := v[:i], v[i:]
	if num == "" {
		return 0, bad("no number")
	}
	n, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, bad("bad number")
	}
	unit := 1.0 // bytes
	switch {
	case strings.HasSuffix(rest, "bit"):
		unit, rest = 1.0/8, strings.TrimSuffix(rest, "bit")
	case strings.HasSuffix(rest, "byte"):
		rest = strings.TrimSuffix(rest, "byte")
	}
	mult := 1.0
	switch rest {
	case "":
	case "k":
		mult = 1e3
	case "m":
		mult = 1e6
	case "g":
		mult = 1e9
	case "ki":
		mult = 1 << 10
	case "mi":
		mult = 1 << 20
	case "gi":
		mult = 1 << 30
	default:
		return 0, bad(fmt.Sprintf("unknown unit %q", rest))
	}
	r := n * mult * unit
	switch {
	case r > MaxRate || math.IsInf(r, 0):
		return 0, bad("more than 100gbit")
	case r < 1:
		return 0, bad("less than 1 byte per second")
	}
	return int64(math.Round(r)), nil
}

// FormatRate writes a rate in bytes per second the way ParseRate reads it
// back, in bits per second with the largest exact SI prefix ("10mbit"),
// or in bytes when it is not a whole number of bits of such a unit.
func FormatRate(r int64) string {
	bits := r * 8
	for _, p := range []struct {
		div  int64
		name string
	}{{1e9, "gbit"}, {1e6, "mbit"}, {1e3, "kbit"}} {
		if bits%p.div == 0 {
			return strconv.FormatInt(bits/p.div, 10) + p.name
		}
	}
	return strconv.FormatInt(r, 10) + "byte"
}
