package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/sluice-proxy/sluice/pkg/config"
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

// checkRates adds each limited user's limits, as the class and user
// options combine, to `sluice check`'s summary, and names the limited
// users no proxy can recognise (no auth anywhere, and no address).
func checkRates(w io.Writer, cfg *config.Config) {
	var unknown []string // limited users a proxy without auth cannot recognise
	for i := range cfg.Users {
		u := &cfg.Users[i]
		l := cfg.LimitsOf(u)
		if l.IsZero() {
			continue
		}
		if len(u.Addresses) == 0 {
			unknown = append(unknown, "'"+u.Name+"'")
		}
		var parts []string
		if l.Up > 0 {
			parts = append(parts, "rate_up "+ratelimit.FormatRate(l.Up))
		}
		if l.Down > 0 {
			parts = append(parts, "rate_down "+ratelimit.FormatRate(l.Down))
		}
		if l.MaxConns > 0 {
			parts = append(parts, fmt.Sprintf("max_conns %d", l.MaxConns))
		}
		from := ""
		if u.Class != "" {
			from = fmt.Sprintf(" (class '%s')", u.Class)
		}
		fmt.Fprintf(w, "user '%s': %s%s\n", u.Name, strings.Join(parts, ", "), from)
	}
	if len(unknown) == 0 {
		return
	}
	for _, h := range cfg.HTTPProxies {
		if h.Auth {
			return
		}
	}
	fmt.Fprintf(w, "note: no http_proxy has `option auth '1'`, so only users with `list address` are recognised: the limits of %s never apply\n",
		strings.Join(unknown, ", "))
}
