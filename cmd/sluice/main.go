// Command sluice is a small, fast TCP relay and proxy for routers and IoT
// gateways. See `sluice help`.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

const usage = `sluice - a fast, frugal relay and proxy for routers and gateways

Usage:
  sluice <command> [flags] [arguments]

Commands:
  run       start every service of the config file (the daemon)
  check     check the config file and print what would run
  reload    make the running daemon re-read its config file
  stats     services, connections, bytes, pipes and memory of the daemon
  accounting  traffic, time and quotas per user: show [USER], reset USER
  forward   relay every connection on one address to another (socat-style)
  http-proxy  an HTTP/1.1 forward proxy with CONNECT, users and ACLs
  socks5    a SOCKS5 server (RFC 1928/1929) with the HTTP proxy's users and rules
  tunnel-server  the public side of a reverse tunnel: clients publish ports here
  tunnel-client  publish local services on a tunnel server's ports, from behind NAT
  version   print the version, commit and platform
  help      show help for a command: sluice help forward

Addresses:
  tcp:HOST:PORT  tcp4:HOST:PORT  tcp6:[ADDR]:PORT  unix:/path  HOST:PORT

Config: -c FILE, default /etc/config/sluice if it exists, else
/etc/sluice.conf (UCI syntax; see docs/CONFIG.md).

Examples:
  sluice forward 0.0.0.0:8080 192.168.1.10:80
  sluice check -c /etc/sluice.conf && sluice run -c /etc/sluice.conf

Run 'sluice <command> --help' for the flags of a command.
`

// errUsage marks errors that should be followed by a hint to --help.
var errUsage = errors.New("usage")

func main() {
	frugalGC()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command line and returns the process exit status:
// 0 on success, 1 when the command failed, 2 on a usage error.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "forward":
		err = runForward(rest, stderr)
	case "http-proxy":
		err = runHTTPProxy(rest, stderr)
	case "socks5":
		err = runSOCKS5(rest, stderr)
	case "tunnel-server":
		err = runTunnelServer(rest, stderr)
	case "tunnel-client":
		err = runTunnelClient(rest, stderr)
	case "run":
		err = runRun(rest, stderr)
	case "check":
		err = runCheck(rest, stdout, stderr)
	case "reload":
		err = runReload(rest, stdout, stderr)
	case "stats":
		err = runStats(rest, stdout, stderr)
	case "accounting":
		err = runAccounting(rest, stdout, stderr)
	case "version", "--version", "-version":
		err = runVersion(stdout)
	case "help", "-h", "-help", "--help":
		if len(rest) > 0 && rest[0] != "help" {
			return run([]string{rest[0], "--help"}, stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "sluice: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	switch {
	case err == nil || errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errReported):
		return 1
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "sluice %s: %v\nRun 'sluice %s --help' for usage.\n", cmd, strings.TrimPrefix(err.Error(), "usage: "), cmd)
		return 2
	default:
		fmt.Fprintf(stderr, "sluice %s: %v\n", cmd, err)
		return 1
	}
}

// parseArgs parses flags that may come before, between or after the
// positional arguments, and returns the positional ones.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// newLogger returns a text logger on w at the named level.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("%w: --log-level %q: want debug, info, warn or error", errUsage, level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// printFlags lists fs's flags GNU-style (--name VALUE, -c VALUE for one
// letter) with their defaults.
func printFlags(fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		name, help := flag.UnquoteUsage(f)
		arg := "--" + f.Name
		if len(f.Name) == 1 {
			arg = "-" + f.Name
		}
		if name != "" {
			arg += " " + strings.ToUpper(name)
		}
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "0s" && f.DefValue != "false" {
			help += " (default " + f.DefValue + ")"
		}
		fmt.Fprintf(fs.Output(), "  %-28s %s\n", arg, help)
	})
}
