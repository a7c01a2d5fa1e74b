package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluice-proxy/sluice/pkg/config"
	"github.com/sluice-proxy/sluice/pkg/control"
	"github.com/sluice-proxy/sluice/pkg/daemon"
	"github.com/sluice-proxy/sluice/pkg/endpoint"
)

// errReported marks a failure whose details were already printed.
var errReported = errors.New("reported")

const configFlagHelp = "config `FILE` (default /etc/config/sluice if it exists, else /etc/sluice.conf)"

// configCommand parses the flags of a command that takes only -c FILE
// (and, for stats, --json) and returns the config path.
func configCommand(name, usageText string, args []string, stderr io.Writer, jsonOut *bool) (string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageText)
		printFlags(fs)
	}
	var path string
	fs.StringVar(&path, "c", "", configFlagHelp)
	if jsonOut != nil {
		fs.BoolVar(jsonOut, "json", false, "print JSON, for scripts")
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return "", err
	}
	if len(pos) != 0 {
		return "", fmt.Errorf("%w: unexpected argument %q", errUsage, pos[0])
	}
	if path == "" {
		path = config.DefaultPath()
	}
	return path, nil
}

const runUsage = `Usage: sluice run [-c FILE]

Start every service of the config file and run until SIGINT or SIGTERM
(then drain for the grace period and exit 0). SIGHUP or 'sluice reload'
re-reads the file: unchanged listeners stay open and no connection is
dropped; an invalid file is rejected and the running config kept.

Flags:
`

func runRun(args []string, stderr io.Writer) error {
	path, err := configCommand("run", runUsage, args, stderr, nil)
	if err != nil {
		return err
	}
	if err := daemon.Run(daemon.Options{ConfigPath: path, Stderr: stderr, Version: version}); err != nil {
		return reportConfigErrors(err, stderr)
	}
	return nil
}

const checkUsage = `Usage: sluice check [-c FILE]

Check the config file: print every error (FILE:LINE: section: option:
problem) and exit 1, or print what would run and exit 0.

Flags:
`

func runCheck(args []string, stdout, stderr io.Writer) error {
	path, err := configCommand("check", checkUsage, args, stderr, nil)
	if err != nil {
		return err
	}
	cfg, err := config.Load(path)
	if err != nil {
		return reportConfigErrors(err, stderr)
	}
	if errs := kernelChecks(cfg); len(errs) > 0 {
		return reportConfigErrors(errs, stderr)
	}
	printSummary(stdout, cfg)
	printSOCKS5Summary(stdout, cfg)
	checkAccounting(stdout, cfg)
	checkRates(stdout, cfg)
	return nil
}

// kernelChecks finds what the config asks of this kernel that it cannot
// do: today, vsock addresses on a kernel without AF_VSOCK. It opens no
// connection (a vsock address is checked by creating one unbound socket).
func kernelChecks(cfg *config.Config) config.Errors {
	var errs config.Errors
	check := func(f config.Forward, opt string, a endpoint.Addr, listen bool) {
		if a.Network != endpoint.Vsock {
			return
		}
		if _, err := a.Sockaddrs(context.Background(), listen); err != nil {
			errs = append(errs, &config.Error{File: cfg.File, Line: f.Line, Section: "forward '" + f.Name + "'", Option: opt, Msg: err.Error()})
		}
	}
	for _, f := range cfg.Forwards {
		check(f, "listen", f.Listen, true)
		for _, u := range f.Upstreams {
			check(f, "upstream", u, false)
		}
	}
	return errs
}

// reportConfigErrors prints config errors one per line with a count; other
// errors are returned as they are.
func reportConfigErrors(err error, stderr io.Writer) error {
	var errs config.Errors
	if !errors.As(err, &errs) {
		return err
	}
	for _, e := range errs {
		fmt.Fprintln(stderr, e)
	}
	fmt.Fprintf(stderr, "%d error(s) in the config\n", len(errs))
	return errReported
}

func printSummary(w io.Writer, cfg *config.Config) {
	g := cfg.Global
	loops := "one per CPU"
	if g.Loops > 0 {
		loops = fmt.Sprint(g.Loops)
	}
	fmt.Fprintf(w, "%s: OK\n", cfg.File)
	fmt.Fprintf(w, "global: loops %s, log %s at %s, control socket %s", loops, g.Log, strings.ToLower(g.LogLevel.String()), g.ControlSocket)
	if g.MaxMemory > 0 {
		fmt.Fprintf(w, ", max_memory %d bytes", g.MaxMemory)
	}
	if g.User != "" || g.Group != "" {
		fmt.Fprintf(w, ", runs as %s:%s", g.User, g.Group)
	}
	fmt.Fprintln(w)
	for _, f := range cfg.Forwards {
		ups := make([]string, len(f.Upstreams))
		for i, u := range f.Upstreams {
			ups[i] = u.String()
		}
		where := f.Listen.String()
		if f.Interface != "" {
			where = fmt.Sprintf("port %d on the addresses of %s", f.Listen.Port, f.Interface)
		}
		fmt.Fprintf(w, "forward '%s': %s -> %s (%s), connect_timeout %s, idle_timeout %s, max_conns %s\n",
			f.Name, where, strings.Join(ups, ", "), f.Balance, f.ConnectTimeout, orNever(f.IdleTimeout), orNone(f.MaxConns))
	}
	for _, name := range cfg.Disabled {
		fmt.Fprintf(w, "forward '%s': disabled\n", name)
	}
	printHTTPSummary(w, cfg)
}

func orNever(d time.Duration) string {
	if d == 0 {
		return "never"
	}
	return d.String()
}

func orNone(n int) string {
	if n == 0 {
		return "none"
	}
	return fmt.Sprint(n)
}

const reloadUsage = `Usage: sluice reload [-c FILE]

Ask the sluice running with FILE to re-read it (as SIGHUP does) and wait
for the outcome: exit 0 when applied, 1 with the errors when rejected.

Flags:
`

func runReload(args []string, stdout, stderr io.Writer) error {
	path, err := configCommand("reload", reloadUsage, args, stderr, nil)
	if err != nil {
		return err
	}
	resp, err := control.Request(config.ControlSocketOf(path), control.CmdReload)
	if err != nil {
		return err
	}
	if !resp.OK {
		for _, e := range resp.Errors {
			fmt.Fprintln(stderr, e)
		}
		fmt.Fprintln(stderr, "reload rejected: sluice keeps running the previous config")
		return errReported
	}
	fmt.Fprintln(stdout, "reloaded")
	return nil
}

const statsUsage = `Usage: sluice stats [-c FILE] [--json]

Print the running sluice's services, live connections, bytes in and out
(live connections included), pipe pool use, memory and loops.

Flags:
`

func runStats(args []string, stdout, stderr io.Writer) error {
	var jsonOut bool
	path, err := configCommand("stats", statsUsage, args, stderr, &jsonOut)
	if err != nil {
		return err
	}
	resp, err := control.Request(config.ControlSocketOf(path), control.CmdStats)
	if err != nil {
		return err
	}
	if !resp.OK {
		return fmt.Errorf("stats: %s", strings.Join(resp.Errors, "; "))
	}
	if jsonOut {
		_, err := fmt.Fprintf(stdout, "%s\n", resp.Stats)
		return err
	}
	var st daemon.Stats
	if err := json.Unmarshal(resp.Stats, &st); err != nil {
		return fmt.Errorf("stats: %w", err)
	}
	printStats(stdout, st)
	return nil
}

func printStats(w io.Writer, st daemon.Stats) {
	mem := "no cap"
	if st.MemoryMax > 0 {
		mem = fmt.Sprintf("cap %d", st.MemoryMax)
	}
	pipes := "splice off"
	if st.PipesMax > 0 {
		pipes = fmt.Sprintf("%d of %d", st.PipesInUse, st.PipesMax)
	}
	fmt.Fprintf(w, "sluice %s, up %s, %d loops, pipes %s, memory %d bytes (%s), reloads %d (%d rejected)\n",
		st.Version, time.Duration(st.UptimeSeconds)*time.Second, st.Loops, pipes, st.MemoryInUse, mem, st.Reloads, st.RejectedReloads)
	if st.Telemetry != "" {
		fmt.Fprintf(w, "telemetry: %s\n", st.Telemetry)
	}
	if st.VsockCID != 0 {
		fmt.Fprintf(w, "vsock: local CID %d\n", st.VsockCID)
	}
	if a := st.Autotune; a != nil {
		state := "tuning"
		if a.SleepingNoTraffic {
			state = "asleep (no traffic)"
		}
		fmt.Fprintf(w, "autotune: %s, %d of %d loops accepting, bulk pipe %d, copy buffer %d, socket buffers %s, %d decisions in %d steps\n",
			state, a.ActiveLoops, st.Loops, a.PipeBulk, a.BufInteractive, sockBuf(a.SockBufBulk), a.Decisions, a.Steps)
	} else {
		fmt.Fprintln(w, "autotune: off")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tLISTEN\tUPSTREAMS\tLIVE\tACCEPTED\tREFUSED\tBYTES UP\tBYTES DOWN")
	for _, s := range st.Services {
		name := s.Type + " " + s.Name
		if s.Draining {
			name += " (draining)"
		}
		listen := strings.Join(s.Listen, ",")
		if listen == "" {
			listen = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\n", name, listen, strings.Join(s.Upstreams, ","),
			s.Active, s.Accepted, s.Refused, s.BytesUp, s.BytesDown)
	}
	tw.Flush()
	for _, s := range st.Services {
		if c := s.Cache; c != nil {
			fmt.Fprintf(w, "cache %s: %d hits, %d revalidated, %d misses; memory %d entries %d bytes, disk %d entries %d bytes, %d evicted\n",
				s.Name, c.Hits, c.Revalidated, c.Misses, c.MemEntries, c.MemBytes, c.DiskEntries, c.DiskBytes, c.Evicted)
		}
	}
	printRates(w, st.Rates)
}

// sockBuf describes the tuner's socket buffer knob.
func sockBuf(n int) string {
	if n == 0 {
		return "kernel-tuned"
	}
	return fmt.Sprint(n)
}
