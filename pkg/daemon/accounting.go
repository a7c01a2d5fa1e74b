package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/sluice-proxy/sluice/pkg/accounting"
	"github.com/sluice-proxy/sluice/pkg/config"
	"github.com/sluice-proxy/sluice/pkg/control"
)

// AccountingReport is the answer to `accounting show`.
type AccountingReport struct {
	// TimeZone names the zone quota periods start in.
	TimeZone string `json:"time_zone"`
	// Dir is where the counters are saved.
	Dir     string             `json:"dir"`
	Entries []accounting.Entry `json:"entries"`
}

// openAccounting creates the accounting of cfg (nil when it is off, or
// while no service counts: forwards do not, HTTP proxies do): the
// directory is created (and handed to the user sluice drops to), the
// counters file read back; a corrupt file is logged and set aside.
func (d *Daemon) openAccounting(cfg *config.Config) error {
	ac := cfg.Global.Accounting
	if !ac.Enabled || len(cfg.HTTPProxies) == 0 {
		return nil
	}
	loc, err := accounting.LoadLocation(ac.Timezone)
	if err != nil {
		return fmt.Errorf("accounting: %w", err)
	}
	if err := os.MkdirAll(ac.Dir, 0o700); err != nil {
		return fmt.Errorf("accounting: %w", err)
	}
	if g := cfg.Global; g.User != "" || g.Group != "" {
		uid, gid, err := lookupIDs(g.User, g.Group)
		if err != nil {
			return err
		}
		if err := os.Chown(ac.Dir, uid, gid); err != nil {
			return fmt.Errorf("accounting: %w", err)
		}
	}
	a, err := accounting.New(accounting.Config{Dir: ac.Dir, Interval: ac.Interval, Location: loc, Log: d.log})
	var corrupt *accounting.CorruptError
	switch {
	case errors.As(err, &corrupt):
		d.log.Error("accounting: "+corrupt.Error(), "file", corrupt.Path, "aside", corrupt.Aside)
	case err != nil:
		return err
	}
	d.acct = a
	d.setQuotas(cfg)
	zone, _ := time.Now().In(loc).Zone()
	d.log.Info("accounting", "dir", ac.Dir, "interval", ac.Interval, "time_zone", zone, "identities", len(a.Snapshot("")))
	return nil
}

// setQuotas gives every user its quota (class and user options).
func (d *Daemon) setQuotas(cfg *config.Config) {
	q := make(map[string]accounting.Quota)
	for i := range cfg.Users {
		u := &cfg.Users[i]
		cq := cfg.QuotaOf(u)
		p, _ := accounting.ParsePeriod(cq.Period) // checked by the config
		q[u.Name] = accounting.Quota{Period: p, Bytes: uint64(cq.Bytes), Time: cq.Time}
	}
	d.acct.SetQuotas(q)
}

// reloadAccounting applies new quotas and writes the counters (SIGHUP
// flushes); the other accounting options take effect on restart. Called
// with d.mu held.
func (d *Daemon) reloadAccounting(cfg *config.Config) {
	if cur, next := d.cfg.Global.Accounting, cfg.Global.Accounting; cur != next {
		d.log.Warn("reload: this change takes effect on restart", "option", "accounting")
	}
	if d.acct == nil {
		// The first HTTP proxy of a running daemon starts the counting.
		if err := d.openAccounting(cfg); err != nil {
			d.log.Error("reload: accounting not started", "err", err)
		}
		return
	}
	d.setQuotas(cfg)
	if err := d.acct.Flush(); err != nil {
		d.log.Error("accounting: flush failed", "err", err)
	}
}

// closeAccounting writes the counters a last time (shutdown, after the
// connections have ended).
func (d *Daemon) closeAccounting() {
	if d.acct == nil {
		return
	}
	if err := d.acct.Close(); err != nil {
		d.log.Error("accounting: flush failed", "err", err)
	}
}

// handleAccounting answers "accounting show [KEY]" and "accounting reset
// KEY".
func (d *Daemon) handleAccounting(cmd string) control.Response {
	args := strings.Fields(cmd)[1:]
	if d.acct == nil {
		return control.Response{Errors: []string{"accounting is off (option accounting '0')"}}
	}
	switch {
	case len(args) >= 1 && len(args) <= 2 && args[0] == "show":
		key := ""
		if len(args) == 2 {
			key = args[1]
		}
		d.mu.Lock()
		dir := d.cfg.Global.Accounting.Dir
		d.mu.Unlock()
		rep := AccountingReport{Dir: dir, Entries: d.acct.Snapshot(key)}
		rep.TimeZone, _ = time.Now().In(d.acct.Location()).Zone()
		if key != "" && len(rep.Entries) == 0 {
			return control.Response{Errors: []string{fmt.Sprintf("no counters for %s", key)}}
		}
		b, err := json.Marshal(rep)
		if err != nil {
			return control.Response{Errors: []string{err.Error()}}
		}
		return control.Response{OK: true, Accounting: b}
	case len(args) == 2 && args[0] == "reset":
		found, err := d.acct.Reset(args[1])
		if !found {
			return control.Response{Errors: []string{fmt.Sprintf("no counters for %s", args[1])}}
		}
		if err != nil {
			return control.Response{Errors: []string{err.Error()}}
		}
		d.log.Info("accounting: counters reset", "key", args[1])
		return control.Response{OK: true}
	}
	return control.Response{Errors: []string{"want: accounting show [USER] or accounting reset USER"}}
}

// sameUsers reports whether a and b are the same users, quotas aside: a
// quota change applies through setQuotas and needs no new proxy.
func sameUsers(a, b []config.User) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		x.Quota, y.Quota = config.Quota{}, config.Quota{}
		if !reflect.DeepEqual(x, y) {
			return false
		}
	}
	return true
}
