package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-proxy/sluice/pkg/acl"
	"github.com/sluice-proxy/sluice/pkg/auth"
	"github.com/sluice-proxy/sluice/pkg/config"
	"github.com/sluice-proxy/sluice/pkg/endpoint"
	"github.com/sluice-proxy/sluice/pkg/reactor"
	"github.com/sluice-proxy/sluice/pkg/relay"
	"github.com/sluice-proxy/sluice/pkg/socks5"
)

const socks5Usage = `Usage: sluice socks5 [flags] LISTEN...

A SOCKS5 server (RFC 1928) on each LISTEN address: CONNECT to IPv4, IPv6
and domain-name targets (names resolved by sluice), every port; UDP
ASSOCIATE (datagrams relayed while the TCP connection lasts, fragments
dropped); BIND (one inbound connection, within --connect-timeout).
SOCKS4 and SOCKS4a CONNECT are served on the same port.

Without --users nobody logs in. With --users every client must log in
with RFC 1929 username/password (bcrypt hashes, as for http-proxy).

Rules (--rule, repeatable, first match wins, default allow) are the HTTP
proxy's; the method a rule sees is the command (CONNECT, UDP for each
datagram's destination, BIND), and a name is checked again after it
resolves:
  deny dest 10.0.0.0/8,192.168.0.0/16      destination address after resolution
  deny host .ads.example,*.tracker.*        host: exact, .suffix or * pattern
  deny user guest port 25                   user, port (N, LO-HI or *)

Examples:
  sluice socks5 :1080
  sluice socks5 --users /etc/sluice.htpasswd --rule 'deny dest 192.168.0.0/16' 0.0.0.0:1080 [::]:1080

Flags:
`

type socks5Flags struct {
	loops            int
	connectTimeout   time.Duration
	handshakeTimeout time.Duration
	idleTimeout      time.Duration
	maxConns         int
	grace            time.Duration
	accessLog        bool
	usersFile        string
	logLevel         string
	rules            []string
	connectPorts     []string
}

func newSOCKS5Flags(f *socks5Flags, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("socks5", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), socks5Usage)
		printFlags(fs)
	}
	fs.IntVar(&f.loops, "loops", runtime.NumCPU(), "event loops (threads moving bytes)")
	fs.DurationVar(&f.connectTimeout, "connect-timeout", socks5.DefaultConnectTimeout, "give up connecting to a target after this long (host unreachable)")
	fs.DurationVar(&f.handshakeTimeout, "handshake-timeout", socks5.DefaultHandshakeTimeout, "close clients whose greeting, login and request take longer")
	fs.DurationVar(&f.idleTimeout, "idle-timeout", socks5.DefaultIdleTimeout, "close sessions that moved nothing for this long")
	fs.IntVar(&f.maxConns, "max-conns", 0, "live client connections at most (0: no limit)")
	fs.DurationVar(&f.grace, "grace", 10*time.Second, "on SIGINT/SIGTERM, wait this long for live sessions")
	fs.BoolVar(&f.accessLog, "access-log", false, "log one line per session (client, user, command, target, reply, bytes, duration)")
	fs.StringVar(&f.usersFile, "users", "", "require RFC 1929 login; `FILE` has NAME:BCRYPT-HASH lines (htpasswd -B)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.Func("rule", "an ACL `RULE` (see above); repeatable, first match wins", func(s string) error {
		f.rules = append(f.rules, s)
		return nil
	})
	fs.Func("connect-port", "a `PORT` or LO-HI that CONNECT may reach; repeatable (default: every port)", func(s string) error {
		f.connectPorts = append(f.connectPorts, s)
		return nil
	})
	return fs
}

func runSOCKS5(args []string, stderr io.Writer) error {
	var f socks5Flags
	fs := newSOCKS5Flags(&f, stderr)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return fmt.Errorf("%w: want LISTEN", errUsage)
	}
	if f.loops < 1 {
		return fmt.Errorf("%w: --loops %d: want at least 1", errUsage, f.loops)
	}
	if f.maxConns < 0 || f.connectTimeout < 0 || f.handshakeTimeout < 0 || f.idleTimeout < 0 || f.grace < 0 {
		return fmt.Errorf("%w: negative limits and durations are not allowed", errUsage)
	}
	var listens []endpoint.Addr
	for _, p := range pos {
		a, err := endpoint.Parse(p)
		if err != nil {
			return fmt.Errorf("%w: LISTEN: %v", errUsage, err)
		}
		if a.Network != endpoint.TCP && a.Network != endpoint.TCP4 && a.Network != endpoint.TCP6 {
			return fmt.Errorf("%w: LISTEN %s: a SOCKS5 server listens on TCP", errUsage, p)
		}
		listens = append(listens, a)
	}
	list := &acl.List{}
	for _, s := range f.rules {
		r, err := acl.ParseRule(s)
		if err != nil {
			return fmt.Errorf("%w: --rule: %v", errUsage, err)
		}
		list.Rules = append(list.Rules, r)
	}
	for _, s := range f.connectPorts {
		p, err := acl.ParsePorts(s)
		if err != nil {
			return fmt.Errorf("%w: --connect-port: %v", errUsage, err)
		}
		list.ConnectPorts = append(list.ConnectPorts, p)
	}
	var users *auth.Users
	if f.usersFile != "" {
		us, err := readUsers(f.usersFile)
		if err != nil {
			return fmt.Errorf("--users: %w", err)
		}
		if users, err = auth.New(auth.Config{Users: us}); err != nil {
			return fmt.Errorf("--users %s: %w", f.usersFile, err)
		}
	}
	log, err := newLogger(stderr, f.logLevel)
	if err != nil {
		return err
	}
	var access *slog.Logger
	if f.accessLog {
		access = log.With("log", "access")
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	r, err := reactor.New(reactor.Config{Loops: f.loops})
	if err != nil {
		return err
	}
	svc, err := socks5.New(context.Background(), r, socks5.Config{
		Name:             pos[0],
		ConnectTimeout:   f.connectTimeout,
		HandshakeTimeout: f.handshakeTimeout,
		IdleTimeout:      f.idleTimeout,
		MaxConns:         f.maxConns,
		Users:            users,
		ACL:              list,
		Pools:            relay.PoolSet(relay.PoolConfig{}, f.loops),
		Log:              log,
		AccessLog:        access,
	})
	if err != nil {
		r.Stop()
		return err
	}
	for _, a := range listens {
		if _, err := svc.AddListener(context.Background(), a); err != nil {
			svc.StopAccepting()
			r.Stop()
			return err
		}
	}
	r.Start()
	if err := svc.Start(); err != nil {
		r.Stop()
		return err
	}
	log.Info("listening", "addr", strings.Join(svc.Addrs(), ","), "service", "socks5", "loops", f.loops)

	drainOnSignal(log, sigs, f.grace, svc.Active, svc.Drain)
	r.Stop()
	st := svc.Stats()
	log.Info("stopped", "accepted", st.Accepted, "requests", st.Requests, "sessions", st.Sessions, "refused", st.Refused,
		"bytes_up", st.BytesUp, "bytes_down", st.BytesDown)
	return nil
}

// printSOCKS5Summary prints the socks5 sections for `sluice check`.
func printSOCKS5Summary(w io.Writer, cfg *config.Config) {
	for _, x := range cfg.SOCKS5 {
		auth := "off (users by address)"
		if x.Auth {
			auth = "on"
		}
		where := make([]string, len(x.Listen))
		for i, a := range x.Listen {
			where[i] = a.String()
		}
		if x.Interface != "" {
			where = append(where, "on interface "+x.Interface)
		}
		fmt.Fprintf(w, "socks5 '%s': %s, auth %s, %d rules (default %s)\n", x.Name, strings.Join(where, " "), auth,
			len(x.ACL.Rules), x.ACL.Default)
	}
	for _, name := range cfg.SOCKS5Disabled {
		fmt.Fprintf(w, "socks5 '%s': disabled\n", name)
	}
}
