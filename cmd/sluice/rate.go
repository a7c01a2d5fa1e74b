package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/sluice-proxy/sluice/pkg/daemon"
	"github.com/sluice-proxy/sluice/pkg/ratelimit"
)

// printRates shows the limited users of `sluice stats`: their rates (as
// the config writes them) and connections.
func printRates(w io.Writer, rates []daemon.RateStats) {
	if len(rates) == 0 {
		return
	}
	rate := func(r int64) string {
		if r == 0 {
			return "-"
		}
		return ratelimit.FormatRate(r)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tRATE UP\tRATE DOWN\tCONNS")
	for _, r := range rates {
		conns := fmt.Sprint(r.Conns)
		if r.MaxConns > 0 {
			conns += fmt.Sprintf(" of %d", r.MaxConns)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.User, rate(r.RateUp), rate(r.RateDown), conns)
	}
	tw.Flush()
}
