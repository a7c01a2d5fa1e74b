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
	"syscall"
	"time"

	"github.com/sluice-proxy/sluice/pkg/allow"
	"github.com/sluice-proxy/sluice/pkg/endpoint"
	"github.com/sluice-proxy/sluice/pkg/forward"
	"github.com/sluice-proxy/sluice/pkg/reactor"
	"github.com/sluice-proxy/sluice/pkg/relay"
)

const forwardUsage = `Usage: sluice forward [flags] LISTEN UPSTREAM

Relay every connection accepted on LISTEN to UPSTREAM, both ways, until
either side closes. Bytes move with splice() through pooled pipes; a FIN
or a reset on one side is passed to the other.

Addresses:
  HOST:PORT or tcp:HOST:PORT   TCP, IPv4 or IPv6 (HOST may be a name)
  tcp4:HOST:PORT               TCP over IPv4 only
  tcp6:[ADDR]:PORT             TCP over IPv6 only
  unix:/path, unix:@name       unix stream socket (path or abstract name)
  vsock:CID:PORT               AF_VSOCK (CID a number, host or local)
  vsock:any:PORT               AF_VSOCK, to listen on this machine's CID
An empty HOST listens on every address (":8080"). Port 0 picks a free port;
the address in use is logged.

Examples:
  sluice forward :8080 192.168.1.10:80
  sluice forward --idle-timeout 10m tcp6:[::]:2222 10.0.0.5:22
  sluice forward unix:/run/app.sock 127.0.0.1:9000
  sluice forward :2222 vsock:3:22                     # a VM's sshd on a host port
  sluice forward --allow 10.0.0.0/8:443 vsock:any:8000 gw.lan:443

On SIGINT or SIGTERM sluice stops accepting, lets live connections finish
for the grace period, then exits 0.

Flags:
`

type forwardFlags struct {
	loops          int
	connectTimeout time.Duration
	idleTimeout    time.Duration
	maxConns       int
	grace          time.Duration
	maxPipes       int
	pipeSize       int
	logLevel       string
	allow          []string
}

// newForwardFlags defines the flags of `sluice forward` into f.
func newForwardFlags(f *forwardFlags, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("forward", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), forwardUsage)
		printFlags(fs)
	}
	fs.IntVar(&f.loops, "loops", runtime.NumCPU(), "event loops (threads moving bytes)")
	fs.DurationVar(&f.connectTimeout, "connect-timeout", forward.DefaultConnectTimeout, "give up connecting to UPSTREAM after this long")
	fs.DurationVar(&f.idleTimeout, "idle-timeout", 0, "close a connection idle for this long (0: never)")
	fs.IntVar(&f.maxConns, "max-conns", 0, "live connections at most; more are closed at once (0: no limit)")
	fs.DurationVar(&f.grace, "grace", 10*time.Second, "on SIGINT/SIGTERM, wait this long for live connections")
	fs.IntVar(&f.maxPipes, "max-pipes", relay.DefaultMaxPipes, "kernel pipes in use at once for splice (-1: never splice)")
	fs.IntVar(&f.pipeSize, "pipe-size", relay.DefaultPipeSize, "bytes a splice pipe holds; the kernel may cap it (pipe-max-size)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.Func("allow", "relay only to upstream addresses matching `RULE`: HOST:PORT, CIDR:PORT, [IPv6]:PORT, PORT a number, LO-HI or *; repeatable (default: all)", func(s string) error {
		f.allow = append(f.allow, s)
		return nil
	})
	return fs
}

func runForward(args []string, stderr io.Writer) error {
	var f forwardFlags
	fs := newForwardFlags(&f, stderr)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return fmt.Errorf("%w: want LISTEN and UPSTREAM, got %d arguments", errUsage, len(pos))
	}
	if f.loops < 1 {
		return fmt.Errorf("%w: --loops %d: want at least 1", errUsage, f.loops)
	}
	if f.maxConns < 0 || f.connectTimeout < 0 || f.idleTimeout < 0 || f.grace < 0 || f.pipeSize < 0 {
		return fmt.Errorf("%w: negative limits and durations are not allowed", errUsage)
	}
	listen, err := endpoint.Parse(pos[0])
	if err != nil {
		return fmt.Errorf("%w: LISTEN: %v", errUsage, err)
	}
	upstream, err := endpoint.Parse(pos[1])
	if err != nil {
		return fmt.Errorf("%w: UPSTREAM: %v", errUsage, err)
	}
	var allowed *allow.List
	if len(f.allow) > 0 {
		if allowed, err = allow.Parse(f.allow...); err != nil {
			return fmt.Errorf("%w: --allow: %v", errUsage, err)
		}
	}
	log, err := newLogger(stderr, f.logLevel)
	if err != nil {
		return err
	}

	// Catch signals before anything listens: a SIGTERM that arrives as soon
	// as "listening" is logged must still mean a graceful shutdown.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	r, err := reactor.New(reactor.Config{Loops: f.loops})
	if err != nil {
		return err
	}
	pools := relay.PoolSet(relay.PoolConfig{PipeSize: f.pipeSize, MaxPipes: f.maxPipes}, f.loops)
	svc, err := forward.New(context.Background(), r, forward.Config{
		Listen:         listen,
		Upstream:       upstream,
		ConnectTimeout: f.connectTimeout,
		IdleTimeout:    f.idleTimeout,
		MaxConns:       f.maxConns,
		Allow:          allowed,
		Pools:          pools,
		Log:            log,
	})
	if err != nil {
		r.Stop()
		return err
	}
	r.Start()
	if err := svc.Start(); err != nil {
		r.Stop()
		return err
	}
	log.Info("listening", "addr", svc.Addr(), "upstream", upstream.String(), "loops", f.loops)

	drainOnSignal(log, sigs, f.grace, svc.Active, svc.Drain)
	r.Stop()
	st := svc.Stats()
	log.Info("stopped", "accepted", st.Accepted, "refused", st.Refused, "relayed", st.Relayed, "bytes_up", st.BytesUp, "bytes_down", st.BytesDown)
	return nil
}

// drainOnSignal waits for SIGINT/SIGTERM on sigs, then drains the service
// for at most grace; a second signal cuts the grace period short. It is the
// shutdown of the ad-hoc commands (forward, http-proxy).
func drainOnSignal(log *slog.Logger, sigs <-chan os.Signal, grace time.Duration, active func() int, drain func(context.Context) error) {
	sig := <-sigs
	log.Info("shutting down: no longer accepting", "signal", sig.String(), "live", active(), "grace", grace)
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := drain(ctx); err != nil {
		log.Warn("grace period over, closing live connections", "err", err)
	}
}
