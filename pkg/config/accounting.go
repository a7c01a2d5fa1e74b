package config

import (
	"fmt"
	"strings"
	"time"

	"github.com/sluice-proxy/sluice/pkg/accounting"
)

// Defaults of the accounting options.
const (
	DefaultAccountingDir      = "/var/run/sluice"
	DefaultAccountingInterval = 5 * time.Minute
)

// Accounting is the global section's accounting options.
type Accounting struct {
	// Enabled counts traffic and time per user (on by default).
	Enabled bool
	// Dir holds the counters file; default DefaultAccountingDir (tmpfs on
	// OpenWrt and most systems: point it at flash to keep counters across
	// reboots).
	Dir string
	// Interval is how often changed counters are written; default
	// DefaultAccountingInterval.
	Interval time.Duration
	// Timezone is where quota periods start: an IANA name or a POSIX TZ
	// string; empty means the process's local time (or /etc/TZ).
	Timezone string
}

// Quota is the quota of a class or user: `quota_bytes`, `quota_time`,
// `quota_period`. Zero fields: no limit (in a class) or the class's value
// (in a user).
type Quota struct {
	// Period is "day", "week" or "month"; empty means the class's, or
	// "month".
	Period string
	// Bytes bounds the bytes up and down together per period.
	Bytes int64
	// Time bounds the connected time per period.
	Time time.Duration
}

// Over returns q with the non-zero fields of o in place of its own.
func (q Quota) Over(o Quota) Quota {
	if o.Period != "" {
		q.Period = o.Period
	}
	if o.Bytes != 0 {
		q.Bytes = o.Bytes
	}
	if o.Time != 0 {
		q.Time = o.Time
	}
	return q
}

// QuotaOf returns the quota of user u: its class's, with u's own options
// on top; the period defaults to a month. Zero Bytes and Time: no quota.
func (c *Config) QuotaOf(u *User) Quota {
	var q Quota
	for i := range c.Classes {
		if c.Classes[i].Name == u.Class {
			q = c.Classes[i].Quota
			break
		}
	}
	q = q.Over(u.Quota)
	if q.Period == "" {
		q.Period = "month"
	}
	return q
}

func setAccountingDir(g *Global, v string) error {
	if !strings.HasPrefix(v, "/") {
		return fmt.Errorf("%q: want an absolute directory path", v)
	}
	g.Accounting.Dir = v
	return nil
}

func setAccountingInterval(g *Global, v string) (err error) {
	g.Accounting.Interval, err = parseDuration(v)
	if err == nil && g.Accounting.Interval < time.Second {
		err = fmt.Errorf("%q: want at least 1s", v)
	}
	return err
}

func setTimezone(g *Global, v string) error {
	if _, err := accounting.LoadLocation(v); err != nil || v == "" {
		return fmt.Errorf("%q: want a zone name such as Europe/Berlin or a POSIX TZ string such as CET-1CEST,M3.5.0,M10.5.0/3", v)
	}
	g.Accounting.Timezone = v
	return nil
}

func setQuotaPeriod(q *Quota, v string) error {
	if _, err := accounting.ParsePeriod(v); err != nil {
		return err
	}
	q.Period = v
	return nil
}

func setQuotaBytes(q *Quota, v string) (err error) {
	q.Bytes, err = parseSize(v)
	if err == nil && q.Bytes == 0 {
		err = fmt.Errorf("%q: must be more than 0 (leave the option out for no quota)", v)
	}
	return err
}

func setQuotaTime(q *Quota, v string) (err error) {
	q.Time, err = parseDuration(v)
	if err == nil && q.Time < time.Minute {
		err = fmt.Errorf("%q: want at least 1m (leave the option out for no quota)", v)
	}
	return err
}
