package accounting

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// Period is the span a quota covers. Periods start at local midnight: a day
// at 00:00, a week on Monday at 00:00, a month on its first day at 00:00,
// in the Location of the Accounting.
type Period uint8

// Periods.
const (
	Day Period = iota
	Week
	Month
	numPeriods
)

var periodNames = [numPeriods]string{"day", "week", "month"}

// String returns "day", "week" or "month".
func (p Period) String() string {
	if p < numPeriods {
		return periodNames[p]
	}
	return fmt.Sprintf("period(%d)", uint8(p))
}

// Adjective returns "daily", "weekly" or "monthly".
func (p Period) Adjective() string {
	switch p {
	case Day:
		return "daily"
	case Week:
		return "weekly"
	}
	return "monthly"
}

// ParsePeriod parses "day", "week" or "month".
func ParsePeriod(s string) (Period, error) {
	for i, n := range periodNames {
		if s == n {
			return Period(i), nil
		}
	}
	return 0, fmt.Errorf("%q: want day, week or month", s)
}

// Start returns the start of the period that contains t, in loc.
func (p Period) Start(t time.Time, loc *time.Location) time.Time {
	t = t.In(loc)
	y, m, d := t.Date()
	switch p {
	case Week:
		// Monday is day 0 of the week.
		back := (int(t.Weekday()) + 6) % 7
		return time.Date(y, m, d-back, 0, 0, 0, 0, loc)
	case Month:
		return time.Date(y, m, 1, 0, 0, 0, 0, loc)
	}
	return time.Date(y, m, d, 0, 0, 0, 0, loc)
}

// Next returns the start of the period after the one that starts at start.
func (p Period) Next(start time.Time, loc *time.Location) time.Time {
	s := start.In(loc)
	y, m, d := s.Date()
	switch p {
	case Week:
		return time.Date(y, m, d+7, 0, 0, 0, 0, loc)
	case Month:
		return time.Date(y, m+1, 1, 0, 0, 0, 0, loc)
	}
	return time.Date(y, m, d+1, 0, 0, 0, 0, loc)
}

// OpenWrtTZFile is where OpenWrt keeps the system time zone as a POSIX TZ
// string (from `uci get system.@system[0].timezone`).
const OpenWrtTZFile = "/etc/TZ"

// LoadLocation returns the time zone periods are counted in. name is an
// IANA zone name ("Europe/Berlin", needs the zoneinfo files) or a POSIX TZ
// string ("CET-1CEST,M3.5.0,M10.5.0/3", as OpenWrt writes it). An empty
// name means the process's local time (TZ, /etc/localtime), or the POSIX
// string in /etc/TZ when neither is set (OpenWrt without zoneinfo).
func LoadLocation(name string) (*time.Location, error) {
	_, tzSet := os.LookupEnv("TZ")
	return loadLocation(name, tzSet, "/etc/localtime", OpenWrtTZFile)
}

// loadLocation is LoadLocation with the environment as arguments.
func loadLocation(name string, tzSet bool, localtime, tzFile string) (*time.Location, error) {
	if name == "" {
		if tzSet {
			return time.Local, nil
		}
		if _, err := os.Stat(localtime); err == nil {
			return time.Local, nil
		}
		b, err := os.ReadFile(tzFile)
		if err != nil {
			return time.Local, nil // UTC, as the process sees it
		}
		tz := strings.TrimSpace(string(b))
		if tz == "" {
			return time.Local, nil
		}
		loc, err := posixLocation(tz)
		if err != nil {
			return nil, fmt.Errorf("time zone in %s: %w", tzFile, err)
		}
		return loc, nil
	}
	if !strings.ContainsAny(name, ",0123456789") || strings.Contains(name, "/") {
		if loc, err := time.LoadLocation(name); err == nil {
			return loc, nil
		}
	}
	return posixLocation(name)
}

// errBadTZ means a string is neither a zone name nor a POSIX TZ string.
var errBadTZ = errors.New("want a zone name such as Europe/Berlin or a POSIX TZ string such as CET-1CEST,M3.5.0,M10.5.0/3")

// posixLocation makes a Location from a POSIX TZ string by wrapping it in
// a TZif file without transitions, so that Go's own parser (the one it
// uses for the footer of every zoneinfo file) computes the rules.
func posixLocation(tz string) (*time.Location, error) {
	if tz == "" || len(tz) > 128 || strings.ContainsAny(tz, "\n\x00 ") {
		return nil, fmt.Errorf("time zone %q: %w", tz, errBadTZ)
	}
	// RFC 8536: a version 2 file has a v1 header and data block (empty
	// here apart from one local time type), then the same in 64-bit form,
	// then "\n" TZ "\n".
	var b []byte
	block := func() {
		b = append(b, "TZif2"...)
		b = append(b, make([]byte, 15)...)
		// isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt
		for _, n := range []uint32{0, 0, 0, 0, 1, 2} {
			b = binary.BigEndian.AppendUint32(b, n)
		}
		b = binary.BigEndian.AppendUint32(b, 0) // utoff of type 0
		b = append(b, 0, 0)                     // isdst, desigidx
		b = append(b, "?\x00"...)               // the name only a TZ string Go cannot read leaves
	}
	block()
	block()
	b = append(b, '\n')
	b = append(b, tz...)
	b = append(b, '\n')
	loc, err := time.LoadLocationFromTZData(tz, b)
	if err != nil {
		return nil, fmt.Errorf("time zone %q: %w", tz, errBadTZ)
	}
	// Go falls back to the file's only type for a TZ string it cannot
	// read; then every time has the placeholder name.
	for _, t := range []time.Time{time.Date(2000, 1, 15, 0, 0, 0, 0, time.UTC), time.Date(2000, 7, 15, 0, 0, 0, 0, time.UTC)} {
		if name, _ := t.In(loc).Zone(); name == "?" {
			return nil, fmt.Errorf("time zone %q: %w", tz, errBadTZ)
		}
	}
	return loc, nil
}
