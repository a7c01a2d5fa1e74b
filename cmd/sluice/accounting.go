package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluice-proxy/sluice/pkg/accounting"
	"github.com/sluice-proxy/sluice/pkg/config"
	"github.com/sluice-proxy/sluice/pkg/control"
	"github.com/sluice-proxy/sluice/pkg/daemon"
)

const accountingUsage = `Usage: sluice accounting show [USER] [-c FILE] [--json]
       sluice accounting reset USER [-c FILE]

Traffic and time counted by the running sluice, per user, or per client
address for clients that are no user (addr:192.168.1.7; IPv6 clients by
their /64): bytes up and down (request and response bodies, tunnel bytes),
requests, connections, connected time (time with at least one connection
open), first and last seen, and the use of this day, week and month with
the quota, if any. USER is a user name, addr:ADDRESS or a bare address.

'reset' zeroes the counters of USER (quotas start over) and writes the
counters file at once.

Flags:
`

func runAccounting(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("accounting", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), accountingUsage)
		printFlags(fs)
	}
	var path string
	var jsonOut bool
	fs.StringVar(&path, "c", "", configFlagHelp)
	fs.BoolVar(&jsonOut, "json", false, "print JSON, for scripts (show)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if path == "" {
		path = config.DefaultPath()
	}
	if len(pos) == 0 {
		return fmt.Errorf("%w: want show or reset", errUsage)
	}
	switch {
	case pos[0] == "show" && len(pos) <= 2:
	case pos[0] == "reset" && len(pos) == 2:
	case pos[0] == "reset":
		return fmt.Errorf("%w: reset needs one USER", errUsage)
	case pos[0] == "show":
		return fmt.Errorf("%w: show takes at most one USER", errUsage)
	default:
		return fmt.Errorf("%w: unknown subcommand %q: want show or reset", errUsage, pos[0])
	}
	resp, err := control.Request(config.ControlSocketOf(path), control.CmdAccounting+" "+strings.Join(pos, " "))
	if err != nil {
		return err
	}
	if !resp.OK {
		return fmt.Errorf("%s", strings.Join(resp.Errors, "; "))
	}
	if pos[0] == "reset" {
		fmt.Fprintf(stdout, "counters of %s reset\n", pos[1])
		return nil
	}
	if jsonOut {
		_, err := fmt.Fprintf(stdout, "%s\n", resp.Accounting)
		return err
	}
	var rep daemon.AccountingReport
	if err := json.Unmarshal(resp.Accounting, &rep); err != nil {
		return fmt.Errorf("accounting: %w", err)
	}
	printAccounting(stdout, rep)
	return nil
}

// printAccounting writes the report as an aligned table.
func printAccounting(w io.Writer, rep daemon.AccountingReport) {
	fmt.Fprintf(w, "counters in %s, periods in %s time\n", rep.Dir, rep.TimeZone)
	if len(rep.Entries) == 0 {
		fmt.Fprintln(w, "nothing counted yet")
		return
	}
	// Numbers are right-aligned; the text columns are padded to one width
	// first, which keeps them left-aligned.
	quotas := make([]string, len(rep.Entries))
	keyW, quotaW := len("USER"), len("QUOTA")
	for i, e := range rep.Entries {
		quotas[i] = quotaText(e.Quota)
		keyW, quotaW = max(keyW, len(e.Key)), max(quotaW, len(quotas[i]))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%-*s\tUP\tDOWN\tREQUESTS\tCONNS\tLIVE\tCONNECTED\tTODAY\tTHIS MONTH\t%-*s\tFIRST SEEN\tLAST SEEN\t\n", keyW, "USER", quotaW, "QUOTA")
	for i, e := range rep.Entries {
		fmt.Fprintf(tw, "%-*s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\t%-*s\t%s\t%s\t\n", keyW, e.Key,
			accounting.FormatBytes(e.BytesUp), accounting.FormatBytes(e.BytesDown), e.Requests, e.Conns, e.Live,
			fmtSeconds(e.OnlineS), accounting.FormatBytes(e.Day.BytesUp+e.Day.BytesDown),
			accounting.FormatBytes(e.Month.BytesUp+e.Month.BytesDown), quotaW, quotas[i], fmtSeen(e.First), fmtSeen(e.Last))
	}
	tw.Flush()
}

// quotaText describes a quota and its use: "1.2 GiB of 2.0 GiB a day".
func quotaText(q *accounting.QuotaEntry) string {
	if q == nil {
		return "-"
	}
	var parts []string
	if q.Bytes > 0 {
		parts = append(parts, fmt.Sprintf("%s of %s", accounting.FormatBytes(q.UsedBytes), accounting.FormatBytes(q.Bytes)))
	}
	if q.TimeS > 0 {
		parts = append(parts, fmt.Sprintf("%s of %s", fmtSeconds(q.UsedTimeS), fmtSeconds(q.TimeS)))
	}
	text := strings.Join(parts, ", ") + " a " + q.Period
	if q.Exceeded {
		text += " (USED UP)"
	}
	return text
}

func fmtSeconds(s int64) string { return accounting.FormatDuration(time.Duration(s) * time.Second) }

func fmtSeen(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format("2006-01-02 15:04")
}

// checkAccounting adds the counters file to `sluice check`'s summary; a
// file `sluice run` would set aside is reported (the config itself is
// fine, so the exit status stays 0).
func checkAccounting(w io.Writer, cfg *config.Config) {
	ac := cfg.Global.Accounting
	if !ac.Enabled {
		fmt.Fprintln(w, "accounting: off")
		return
	}
	if n, err := accounting.Verify(ac.Dir); err != nil {
		fmt.Fprintf(w, "accounting: WARNING: %v; sluice run will set it aside and count from zero\n", err)
	} else {
		fmt.Fprintf(w, "accounting: %s, written every %s, %d identities\n", filepath.Join(ac.Dir, accounting.FileName), ac.Interval, n)
	}
	for i := range cfg.Users {
		q := cfg.QuotaOf(&cfg.Users[i])
		if q.Bytes == 0 && q.Time == 0 {
			continue
		}
		var parts []string
		if q.Bytes > 0 {
			parts = append(parts, accounting.FormatBytes(uint64(q.Bytes)))
		}
		if q.Time > 0 {
			parts = append(parts, accounting.FormatDuration(q.Time))
		}
		fmt.Fprintf(w, "user '%s': quota %s a %s\n", cfg.Users[i].Name, strings.Join(parts, " and "), q.Period)
	}
}
