package httpcache

import (
	"testing"
)

// FuzzParseDirectives checks that any Cache-Control value parses without
// panicking into a consistent set of directives.
func FuzzParseDirectives(f *testing.F) {
	for _, s := range []string{"max-age=60", `no-cache="Set-Cookie", max-age=0`, "s-maxage=99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d := ParseDirectives(v)
		for _, n := range []int64{d.MaxAge, d.SMaxAge, d.MaxStale, d.MinFresh} {
			if n < -1 || n > MaxDelta {
				t.Fatalf("%q: delta %d out of range", v, n)
			}
		}
	})
}
