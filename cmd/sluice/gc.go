package main

import (
	"os"
	"runtime/debug"
)

// gcPercent is sluice's GOGC when the environment sets none. Go's default
// (100) lets the heap grow to twice what is live, and at least to 4 MB,
// before collecting: with a live heap of a few hundred bytes per
// connection, the garbage of the last requests then costs more RSS than
// the connections themselves (2,000 idle keep-alive clients of the HTTP
// proxy: 2.5-2.8 KiB each at 100, 1.5 at 25; see docs/benchmarks.md). At
// 25 the floor is 1 MB; the extra collections of a heap this small cost no
// CPU that the GET benchmark could measure.
const gcPercent = 25

// frugalGC applies gcPercent unless GOGC is set.
func frugalGC() {
	if _, ok := os.LookupEnv("GOGC"); !ok {
		debug.SetGCPercent(gcPercent)
	}
}
