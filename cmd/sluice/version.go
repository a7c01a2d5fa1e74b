package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// version and commit are set at link time:
// -ldflags "-X main.version=v0.1.0 -X main.commit=abc1234".
var (
	version = "dev"
	commit  = ""
)

func runVersion(w io.Writer) error {
	c := commit
	if c == "" {
		c = "unknown"
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					c = s.Value
				}
			}
		}
	}
	_, err := fmt.Fprintf(w, "sluice %s commit %s %s/%s %s\n", version, c, runtime.GOOS, runtime.GOARCH, runtime.Version())
	return err
}
