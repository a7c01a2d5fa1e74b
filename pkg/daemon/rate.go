package daemon

import (
	"github.com/sluice-proxy/sluice/pkg/config"
	"github.com/sluice-proxy/sluice/pkg/ratelimit"
)

// setRates gives every user the limits of its class and its own overrides
// (config class sections): at start it creates the registry every HTTP
// proxy shares; on reload it updates it in place, so users whose limits
// stay keep their buckets and connection counts, and live connections of
// a user whose rate changed take the new rate at once.
func (d *Daemon) setRates(cfg *config.Config) {
	if d.rates == nil {
		d.rates = ratelimit.NewRegistry(nil)
	}
	limits := make(map[string]ratelimit.Limits, len(cfg.Users))
	for i := range cfg.Users {
		u := &cfg.Users[i]
		l := cfg.LimitsOf(u)
		if l.IsZero() {
			continue
		}
		limits[u.Name] = ratelimit.Limits{Up: l.Up, Down: l.Down, MaxConns: l.MaxConns}
		d.log.Debug("rate limits", "user", u.Name, "class", u.Class, "rate_up", rateText(l.Up),
			"rate_down", rateText(l.Down), "max_conns", l.MaxConns)
	}
	d.rates.Update(limits)
	if len(limits) > 0 {
		d.log.Info("rate limits", "classes", len(cfg.Classes), "limited_users", d.rates.Len())
	}
}

// rateText is a rate for the log: "none" for no limit.
func rateText(r int64) string {
	if r == 0 {
		return "none"
	}
	return ratelimit.FormatRate(r)
}

// RateStats is one limited user in `sluice stats`: the limits in force
// (rates in bytes per second; 0: none) and the live connections.
type RateStats struct {
	User     string `json:"user"`
	RateUp   int64  `json:"rate_up"`
	RateDown int64  `json:"rate_down"`
	MaxConns int    `json:"max_conns"`
	Conns    int    `json:"conns"`
}

// rateStats lists the limited users.
func (d *Daemon) rateStats() []RateStats {
	var out []RateStats
	for _, u := range d.rates.Snapshot() {
		out = append(out, RateStats{User: u.Name, RateUp: u.Limits.Up, RateDown: u.Limits.Down, MaxConns: u.Limits.MaxConns, Conns: u.Conns})
	}
	return out
}
