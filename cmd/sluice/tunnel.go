package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-proxy/sluice/pkg/endpoint"
	"github.com/sluice-proxy/sluice/pkg/reactor"
	"github.com/sluice-proxy/sluice/pkg/relay"
	"github.com/sluice-proxy/sluice/pkg/tunnel"
)

const tunnelServerUsage = `Usage: sluice tunnel-server [flags] LISTEN

The public side of a reverse tunnel: tunnel clients (sluice tunnel-client,
behind NAT) log in on LISTEN and publish their local services on public
ports of this machine; a connection to such a port is relayed to the
client's local service. Logins are HMAC challenge-response: the token never
crosses the wire. The tunnel is plain TCP, spliced end to end (run it
inside WireGuard or a VM's vsock, or wait for TLS). docs/TUNNEL.md.

Examples:
  sluice tunnel-server --token "$(cat /etc/sluice.token)" --ports 20000-20100 :7000

Flags:
`

const tunnelClientUsage = `Usage: sluice tunnel-client [flags] SERVER PUBLIC_PORT=LOCAL_ADDR...

The private side of a reverse tunnel: log in to the tunnel server at
SERVER and publish each LOCAL_ADDR (tcp, unix or vsock) on PUBLIC_PORT of
the server. It retries forever with jittered exponential backoff, also
when the server is not up yet, and publishes everything again after every
reconnect. docs/TUNNEL.md.

Examples:
  sluice tunnel-client --name home --token "$(cat /etc/sluice.token)" vps.example.com:7000 20022=127.0.0.1:22 20080=192.168.1.10:80

Flags:
`

func tunnelFlags(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		printFlags(fs)
	}
	return fs
}

// tokenArg reads a --token value: the token, or @FILE for one kept in a file.
func tokenArg(s string) (string, error) {
	if file, ok := strings.CutPrefix(s, "@"); ok {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--token: %w", err)
		}
		s = strings.TrimSpace(string(b))
	}
	if s == "" {
		return "", fmt.Errorf("%w: --token is required", errUsage)
	}
	return s, nil
}

// parsePortRanges parses LO-HI[,LO-HI...] (a single port is a range of one).
func parsePortRanges(s string) ([]tunnel.PortRange, error) {
	var rs []tunnel.PortRange
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		if !isRange {
			hi = lo
		}
		l, err1 := strconv.ParseUint(lo, 10, 16)
		h, err2 := strconv.ParseUint(hi, 10, 16)
		if err1 != nil || err2 != nil || l == 0 || l > h {
			return nil, fmt.Errorf("port range %q: want LO-HI with 1 <= LO <= HI <= 65535", part)
		}
		rs = append(rs, tunnel.PortRange{Lo: uint16(l), Hi: uint16(h)})
	}
	return rs, nil
}

func runTunnelServer(args []string, stderr io.Writer) error {
	fs := tunnelFlags("tunnel-server", tunnelServerUsage, stderr)
	loops := fs.Int("loops", runtime.NumCPU(), "event loops (threads moving bytes)")
	token := fs.String("token", "", "the `TOKEN` clients prove (or @FILE to read it from a file); required")
	ports := fs.String("ports", "1024-65535", "public `PORTS` clients may claim: LO-HI[,LO-HI...]")
	bind := fs.String("bind", "", "`HOST` public ports listen on (default: every address)")
	heartbeat := fs.Duration("heartbeat", tunnel.DefaultHeartbeat, "clients ping this often; one silent for 3 of them is dropped and its ports freed")
	maxClients := fs.Int("max-clients", tunnel.DefaultMaxClients, "logged-in clients at most")
	maxConns := fs.Int("max-conns", 0, "live public connections per client (0: no limit)")
	idle := fs.Duration("idle-timeout", 0, "close tunnelled connections idle this long (0: never)")
	grace := fs.Duration("grace", 10*time.Second, "on SIGINT/SIGTERM, time for live connections to finish")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: want LISTEN", errUsage)
	}
	listen, err := endpoint.Parse(pos[0])
	if err != nil {
		return fmt.Errorf("%w: LISTEN: %v", errUsage, err)
	}
	tok, err := tokenArg(*token)
	if err != nil {
		return err
	}
	rs, err := parsePortRanges(*ports)
	if err != nil {
		return fmt.Errorf("%w: --ports: %v", errUsage, err)
	}
	if *loops < 1 || *maxClients < 1 || *maxConns < 0 || *heartbeat < time.Second {
		return fmt.Errorf("%w: --loops and --max-clients want at least 1, --heartbeat at least 1s", errUsage)
	}
	log, err := newLogger(stderr, *level)
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	r, err := reactor.New(reactor.Config{Loops: *loops})
	if err != nil {
		return err
	}
	srv, err := tunnel.NewServer(context.Background(), r, tunnel.ServerConfig{
		Listen: listen, Bind: *bind, Ports: rs, Token: tok, Heartbeat: *heartbeat,
		MaxClients: *maxClients, MaxConns: *maxConns, IdleTimeout: *idle,
		Pools: relay.PoolSet(relay.PoolConfig{}, *loops), Log: log,
	})
	if err != nil {
		r.Stop()
		return err
	}
	r.Start()
	if err := srv.Start(); err != nil {
		r.Stop()
		return err
	}
	log.Info("listening", "addr", srv.Addr(), "service", "tunnel-server", "ports", *ports, "loops", *loops)
	drainOnSignal(log, sigs, *grace, srv.Active, srv.Drain)
	st, _, _ := srv.Snapshot(context.Background())
	r.Stop()
	log.Info("stopped", "logins", st.Logins, "auth_failures", st.AuthFailures, "accepted", st.Accepted,
		"refused", st.Refused, "bytes_up", st.BytesUp, "bytes_down", st.BytesDown)
	return nil
}

func runTunnelClient(args []string, stderr io.Writer) error {
	fs := tunnelFlags("tunnel-client", tunnelClientUsage, stderr)
	loops := fs.Int("loops", runtime.NumCPU(), "event loops (threads moving bytes)")
	token := fs.String("token", "", "the `TOKEN` to prove (or @FILE to read it from a file); required")
	name := fs.String("name", "", "this client's `NAME` on the server (default: the host name)")
	pool := fs.Int("pool", tunnel.DefaultPool, "idle data connections kept open so public connections start at once (0: none)")
	connect := fs.Duration("connect-timeout", tunnel.DefaultConnectTimeout, "give up connecting to the server or a local service")
	backoff := fs.Duration("max-backoff", tunnel.DefaultMaxBackoff, "longest wait between attempts to reach the server")
	idle := fs.Duration("idle-timeout", 0, "close tunnelled connections idle this long (0: never)")
	grace := fs.Duration("grace", 10*time.Second, "on SIGINT/SIGTERM, time for live connections to finish")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 2 {
		return fmt.Errorf("%w: want SERVER PUBLIC_PORT=LOCAL_ADDR...", errUsage)
	}
	server, err := endpoint.Parse(pos[0])
	if err != nil {
		return fmt.Errorf("%w: SERVER: %v", errUsage, err)
	}
	var svcs []tunnel.Service
	for _, p := range pos[1:] {
		port, local, ok := strings.Cut(p, "=")
		n, perr := strconv.ParseUint(port, 10, 16)
		if !ok || perr != nil || n == 0 {
			return fmt.Errorf("%w: %q: want PUBLIC_PORT=LOCAL_ADDR", errUsage, p)
		}
		a, err := endpoint.Parse(local)
		if err != nil {
			return fmt.Errorf("%w: %q: %v", errUsage, p, err)
		}
		svcs = append(svcs, tunnel.Service{Name: "port" + port, RemotePort: uint16(n), Local: a})
	}
	tok, err := tokenArg(*token)
	if err != nil {
		return err
	}
	if *name == "" {
		h, _ := os.Hostname()
		*name = h
	}
	if *pool == 0 {
		*pool = -1 // the flag's 0 means none; the config's zero means the default
	}
	if *loops < 1 {
		return fmt.Errorf("%w: --loops %d: want at least 1", errUsage, *loops)
	}
	log, err := newLogger(stderr, *level)
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	r, err := reactor.New(reactor.Config{Loops: *loops})
	if err != nil {
		return err
	}
	cli, err := tunnel.NewClient(r, tunnel.ClientConfig{
		Name: *name, Server: server, Token: tok, Services: svcs, Pool: *pool,
		ConnectTimeout: *connect, MaxBackoff: *backoff, IdleTimeout: *idle,
		Pools: relay.PoolSet(relay.PoolConfig{}, *loops), Log: log,
	})
	if err != nil {
		r.Stop()
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	r.Start()
	cli.Start()
	log.Info("started", "service", "tunnel-client", "server", server.String(), "name", *name, "services", len(svcs))
	drainOnSignal(log, sigs, *grace, cli.Active, cli.Drain)
	st, _ := cli.Snapshot(context.Background())
	r.Stop()
	log.Info("stopped", "logins", st.Logins, "relayed", st.Relayed, "failed", st.Failed,
		"bytes_up", st.BytesUp, "bytes_down", st.BytesDown)
	return nil
}
