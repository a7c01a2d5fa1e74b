package ratelimit

import (
	"strings"
	"testing"
)

func TestParseRate(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  string // in the error, if any
	}{
		{"65536", 65536, ""},
		{"10mbit", 1250000, ""},
		{"10Mbit/s", 1250000, ""},
		{"512kbyte", 512000, ""},
		{"512k", 512000, ""},
		{"512KiByte", 512 << 10, ""},
		{"1.5mbyte", 1500000, ""},
		{"2gbit", 250000000, ""},
		{"1mibit", 131072, ""},
		{"8bit", 1, ""},
		{"100gbit", 12500000000, ""},
		{" 1kbit ", 125, ""},
		{"", 0, "no number"},
		{"mbit", 0, "no number"},
		{"1.2.3k", 0, "bad number"},
		{"10 mbit", 0, `unknown unit " m"`},
		{"10mbps", 0, `unknown unit "mbps"`},
		{"10tbit", 0, "unknown unit"},
		{"0", 0, "less than 1 byte"},
		{"4bit", 0, "less than 1 byte"},
		{"101gbit", 0, "more than 100gbit"},
		{"-5k", 0, "no number"},
		{"1e9", 0, "unknown unit"},
	}
	for _, tt := range tests {
		got, err := ParseRate(tt.in)
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("ParseRate(%q): %v", tt.in, err)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("ParseRate(%q) = %d, %v; want an error with %q", tt.in, got, err, tt.err)
		case got != tt.want:
			t.Errorf("ParseRate(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestFormatRate(t *testing.T) {
	for _, tt := range []struct {
		in   int64
		want string
	}{{1250000, "10mbit"}, {125, "1kbit"}, {250000000, "2gbit"}, {65536, "65536byte"}, {1, "1byte"}} {
		got := FormatRate(tt.in)
		if got != tt.want {
			t.Errorf("FormatRate(%d) = %q, want %q", tt.in, got, tt.want)
		}
		if back, err := ParseRate(got); err != nil || back != tt.in {
			t.Errorf("ParseRate(FormatRate(%d)) = %d, %v", tt.in, back, err)
		}
	}
}

// FuzzParseRate checks that a rate either parses within bounds or is an
// error that quotes the input, never a panic.
func FuzzParseRate(f *testing.F) {
	f.Fuzz(func(t *testing.T, in string) {
		r, err := ParseRate(in)
		if err != nil {
			if r != 0 {
				t.Fatalf("ParseRate(%q) = %d with error %v", in, r, err)
			}
			return
		}
		if r < 1 || r > MaxRate {
			t.Fatalf("ParseRate(%q) = %d, outside 1..%d", in, r, int64(MaxRate))
		}
	})
}
