package main

import (
	"bufio"
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
	"github.com/sluice-proxy/sluice/pkg/filter"
	"github.com/sluice-proxy/sluice/pkg/httpcache"
	"github.com/sluice-proxy/sluice/pkg/httpproxy"
	"github.com/sluice-proxy/sluice/pkg/reactor"
	"github.com/sluice-proxy/sluice/pkg/relay"
)

const httpProxyUsage = `Usage: sluice http-proxy [flags] LISTEN

An HTTP/1.1 forward proxy on LISTEN: absolute-form requests of every
method (http:// URIs) and CONNECT tunnels (https and anything else, to
port 443 unless --connect-port says more). Request heads are parsed
strictly: smuggling shapes get 400, oversize heads 414 or 431, a head not
complete within --header-timeout gets 408.

No X-Forwarded-For is added unless --forwarded-for is given.

Rules (--rule, repeatable, first match wins, default allow):
  deny dest 10.0.0.0/8,192.168.0.0/16      destination address after resolution
  allow client 192.168.1.0/24 method GET    client address, method
  deny host .ads.example,*.tracker.*        host: exact, .suffix or * pattern
  deny user guest port 25                   user, port (N, LO-HI or *)

With --transparent, connections that nftables redirected to LISTEN
(REDIRECT) are served too: a request in origin form goes to the address
and port the client connected to (SO_ORIGINAL_DST), never to where its
Host field points. With --tproxy, connections diverted by an nftables
tproxy rule are served the same way (LISTEN gets IP_TRANSPARENT, which
needs CAP_NET_ADMIN; the diverted port must differ from LISTEN's).

Examples:
  sluice http-proxy :3128
  sluice http-proxy --users /etc/sluice.htpasswd --rule 'deny dest 192.168.0.0/16' :3128

Flags:
`

type httpProxyFlags struct {
	loops          int
	connectTimeout time.Duration
	headerTimeout  time.Duration
	idleTimeout    time.Duration
	tunnelIdle     time.Duration
	readTimeout    time.Duration
	maxConns       int
	grace          time.Duration
	forwardedFor   bool
	transparent    bool
	tproxy         bool
	accessLog      bool
	usersFile      string
	logLevel       string
	rules          []string
	connectPorts   []string
	blockURLs      []string
	blockWords     []string
	cache          httpcache.Config
}

func newHTTPProxyFlags(f *httpProxyFlags, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("http-proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), httpProxyUsage)
		printFlags(fs)
	}
	fs.IntVar(&f.loops, "loops", runtime.NumCPU(), "event loops (threads moving bytes)")
	fs.DurationVar(&f.connectTimeout, "connect-timeout", httpproxy.DefaultConnectTimeout, "give up connecting to an origin after this long (504)")
	fs.DurationVar(&f.headerTimeout, "header-timeout", httpproxy.DefaultHeaderTimeout, "a request head must be complete this long after its first byte (408)")
	fs.DurationVar(&f.idleTimeout, "idle-timeout", httpproxy.DefaultIdleTimeout, "close keep-alive connections and tunnels idle this long")
	fs.DurationVar(&f.tunnelIdle, "tunnel-idle-timeout", httpproxy.DefaultTunnelIdle, "close CONNECT tunnels that moved nothing for this long")
	fs.DurationVar(&f.readTimeout, "read-timeout", httpproxy.DefaultReadTimeout, "wait this long for an origin's response (504) and each silence after")
	fs.IntVar(&f.maxConns, "max-conns", 0, "live client connections at most (0: no limit)")
	fs.DurationVar(&f.grace, "grace", 10*time.Second, "on SIGINT/SIGTERM, wait this long for live connections")
	fs.BoolVar(&f.forwardedFor, "forwarded-for", false, "add X-Forwarded-For with the client address")
	fs.BoolVar(&f.transparent, "transparent", false, "also serve connections redirected here by nftables/iptables (REDIRECT): origin-form requests go to their original destination")
	fs.BoolVar(&f.tproxy, "tproxy", false, "also serve connections diverted here by an nftables tproxy rule (implies --transparent; needs CAP_NET_ADMIN)")
	fs.BoolVar(&f.accessLog, "access-log", false, "log one line per request (client, user, method, URL, status, bytes, duration)")
	fs.StringVar(&f.usersFile, "users", "", "require Basic proxy authentication; `FILE` has NAME:BCRYPT-HASH lines (htpasswd -B)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.Func("rule", "an ACL `RULE` (see above); repeatable, first match wins", func(s string) error {
		f.rules = append(f.rules, s)
		return nil
	})
	fs.Func("block-url", "answer 403 to URLs matching `PATTERN` ('*' any run; no '*': contained anywhere); repeatable", func(s string) error {
		f.blockURLs = append(f.blockURLs, s)
		return nil
	})
	fs.Func("block-word", "block text responses containing `WORD` (any case): 403, or cut short once the head is out; repeatable", func(s string) error {
		f.blockWords = append(f.blockWords, s)
		return nil
	})
	size := func(dst *int64) func(string) error {
		return func(s string) (err error) { *dst, err = config.ParseSize(s); return err }
	}
	fs.Func("cache-size", "cache GET responses in `SIZE` of memory (such as 64M; default: no cache)", size(&f.cache.MaxBytes))
	fs.Func("cache-max-object", "cache bodies up to `SIZE` (default 1M)", size(&f.cache.MaxObject))
	fs.StringVar(&f.cache.Dir, "cache-dir", "", "also keep cached responses in `DIR` (with --cache-size)")
	fs.Func("cache-dir-size", "bound --cache-dir to `SIZE` (default 256M)", size(&f.cache.DirMaxBytes))
	fs.Func("connect-port", "a `PORT` or LO-HI that CONNECT may reach; repeatable (default: 443)", func(s string) error {
		f.connectPorts = append(f.connectPorts, s)
		return nil
	})
	return fs
}

// readUsers reads an htpasswd file of bcrypt hashes.
func readUsers(path string) ([]auth.User, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	var users []auth.User
	sc := bufio.NewScanner(fh)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, hash, ok := strings.Cut(line, ":")
		if !ok || name == "" {
			return nil, fmt.Errorf("%s:%d: want NAME:HASH", path, n)
		}
		users = append(users, auth.User{Name: name, Hash: hash})
	}
	return users, sc.Err()
}

func runHTTPProxy(args []string, stderr io.Writer) error {
	var f httpProxyFlags
	fs := newHTTPProxyFlags(&f, stderr)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: want LISTEN, got %d arguments", errUsage, len(pos))
	}
	if f.loops < 1 {
		return fmt.Errorf("%w: --loops %d: want at least 1", errUsage, f.loops)
	}
	if f.maxConns < 0 || f.connectTimeout < 0 || f.headerTimeout < 0 || f.idleTimeout < 0 || f.tunnelIdle < 0 || f.readTimeout < 0 || f.grace < 0 {
		return fmt.Errorf("%w: negative limits and durations are not allowed", errUsage)
	}
	listen, err := endpoint.Parse(pos[0])
	if err != nil {
		return fmt.Errorf("%w: LISTEN: %v", errUsage, err)
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
	var blockURLs *filter.URLs
	if len(f.blockURLs) > 0 {
		if blockURLs, err = filter.NewURLs(f.blockURLs); err != nil {
			return fmt.Errorf("%w: --block-url: %v", errUsage, err)
		}
	}
	var words *filter.Words
	if len(f.blockWords) > 0 {
		if words, err = filter.NewWords(f.blockWords); err != nil {
			return fmt.Errorf("%w: --block-word: %v", errUsage, err)
		}
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

	var cache *httpcache.Cache
	if f.cache.MaxBytes == 0 && (f.cache.Dir != "" || f.cache.MaxObject != 0 || f.cache.DirMaxBytes != 0) {
		return fmt.Errorf("%w: --cache-dir, --cache-max-object and --cache-dir-size need --cache-size", errUsage)
	}
	if f.cache.MaxBytes > 0 {
		f.cache.Log = log
		if cache, err = httpcache.New(f.cache); err != nil {
			return err
		}
	}
	r, err := reactor.New(reactor.Config{Loops: f.loops})
	if err != nil {
		return err
	}
	svc, err := httpproxy.New(context.Background(), r, httpproxy.Config{
		Listen:            listen,
		ConnectTimeout:    f.connectTimeout,
		HeaderTimeout:     f.headerTimeout,
		IdleTimeout:       f.idleTimeout,
		TunnelIdleTimeout: f.tunnelIdle,
		ReadTimeout:       f.readTimeout,
		MaxConns:          f.maxConns,
		ForwardedFor:      f.forwardedFor,
		Transparent:       f.transparent,
		TProxy:            f.tproxy,
		Users:             users,
		ACL:               list,
		BlockURLs:         blockURLs,
		BodyWords:         words,
		Cache:             cache,
		Pools:             relay.PoolSet(relay.PoolConfig{}, f.loops),
		Log:               log,
		AccessLog:         access,
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
	log.Info("listening", "addr", svc.Addr(), "service", "http-proxy", "loops", f.loops)

	drainOnSignal(log, sigs, f.grace, svc.Active, svc.Drain)
	r.Stop()
	st := svc.Stats()
	log.Info("stopped", "accepted", st.Accepted, "requests", st.Requests, "tunnels", st.Tunnels, "errors", st.Errors,
		"bytes_up", st.BytesUp, "bytes_down", st.BytesDown)
	return nil
}
