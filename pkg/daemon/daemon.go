// Package daemon is `sluice run`: it starts every service of a config file
// on one reactor, serves the control socket, reloads on SIGHUP or `sluice
// reload`, and drains on SIGINT/SIGTERM.
//
// Reload never drops a connection: a service is identified by where it
// listens (interface and address), so a service whose listen address did
// not change keeps its listening socket and only swaps its upstreams,
// timeouts and limits; a removed service stops accepting and its live
// connections run to their end; a new one starts. An invalid config is
// rejected as a whole and the running one is kept.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"sync"
	"syscall"
	"time"

	"github.com/sluice-proxy/sluice/pkg/accounting"
	"github.com/sluice-proxy/sluice/pkg/allow"
	"github.com/sluice-proxy/sluice/pkg/autotune"
	"github.com/sluice-proxy/sluice/pkg/config"
	"github.com/sluice-proxy/sluice/pkg/control"
	"github.com/sluice-proxy/sluice/pkg/endpoint"
	"github.com/sluice-proxy/sluice/pkg/forward"
	"github.com/sluice-proxy/sluice/pkg/ratelimit"
	"github.com/sluice-proxy/sluice/pkg/reactor"
	"github.com/sluice-proxy/sluice/pkg/relay"
	"github.com/sluice-proxy/sluice/pkg/telemetry"
)

// Options configure Run.
type Options struct {
	// ConfigPath is the config file, read at start and on every reload.
	ConfigPath string
	// Stderr receives the log when the config says "stderr". If nil,
	// os.Stderr.
	Stderr io.Writer
	// Version is reported by stats.
	Version string
}

// Daemon is a running `sluice run`.
type Daemon struct {
	opts        Options
	level       slog.LevelVar
	log         *slog.Logger
	logFile     io.Closer
	mem         *memGuard
	envMemLimit bool // GOMEMLIMIT was set in the environment
	r           *reactor.Reactor
	pools       []*relay.Pool
	budget      *relay.Budget // nil when splice is off (max_pipes -1)
	maxPipes    int
	ctl         *control.Server
	started     time.Time
	tel         *telemetry.Telemetry   // nil when it could not open
	tuner       *autotune.Tuner        // nil with autotune off
	http        httpServices           // see http.go
	socks       socksServices          // see socks5.go
	acct        *accounting.Accounting // nil with accounting off (accounting.go)
	rates       *ratelimit.Registry    // users' rate and connection limits (rate.go)

	mu       sync.Mutex // serializes reloads, stats and shutdown
	cfg      *config.Config
	services map[string]*service // by listenKey
	draining map[*service]bool
	stopping bool
	reloads  int
	rejected int
}

// service is one configured forward and what runs it.
type service struct {
	key    string
	cfg    config.Forward
	fwd    *forward.Service
	follow *follower // nil unless cfg.Interface is set
}

// Run starts the daemon with the config at opts.ConfigPath and returns
// when it has stopped after SIGINT or SIGTERM.
func Run(opts Options) error {
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	cfg, err := config.Load(opts.ConfigPath)
	if err != nil {
		return err
	}
	// Caught before anything listens: a signal that arrives as soon as
	// the services are up must be handled, not kill the process.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	d, err := Start(opts, cfg)
	if err != nil {
		return err
	}
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			_ = d.Reload()
			continue
		}
		d.Shutdown(sig.String(), sigs)
		return nil
	}
	return nil
}

// Start runs cfg (read from opts.ConfigPath): it builds the reactor, binds
// every listener and the control socket, drops privileges and starts
// accepting. Run is Start plus signal handling; Shutdown stops it.
func Start(opts Options, cfg *config.Config) (d *Daemon, err error) {
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	g := cfg.Global
	d = &Daemon{
		opts:     opts,
		mem:      newMemGuard(),
		cfg:      cfg,
		services: make(map[string]*service),
		draining: make(map[*service]bool),
		started:  time.Now(),
	}
	d.level.Set(g.LogLevel)
	d.log, d.logFile, err = openLog(g.Log, g.LogSize, opts.Stderr, &d.level)
	if err != nil {
		return nil, err
	}
	_, d.envMemLimit = os.LookupEnv("GOMEMLIMIT")
	d.mem.setLimit(g.MaxMemory, d.envMemLimit)
	d.r, err = reactor.New(reactor.Config{Loops: g.Loops})
	if err != nil {
		d.logFile.Close()
		return nil, err
	}
	d.buildPools(g)
	if err := d.openAccounting(cfg); err != nil {
		d.r.Stop()
		d.logFile.Close()
		return nil, err
	}
	fail := func(err error) (*Daemon, error) {
		for _, s := range d.services {
			s.stop()
		}
		d.stopHTTP()
		d.stopSOCKS5()
		d.stopTuning()
		d.r.Stop()
		d.logFile.Close()
		return nil, err
	}
	for _, f := range cfg.Forwards {
		s, err := d.newService(f)
		if err != nil {
			return fail(err)
		}
		d.services[s.key] = s
	}
	d.setRates(cfg)
	if err := d.createHTTP(cfg); err != nil {
		return fail(err)
	}
	if err := d.createSOCKS5(cfg); err != nil {
		return fail(err)
	}
	d.ctl, err = control.Listen(g.ControlSocket)
	if err != nil {
		return fail(err)
	}
	// Telemetry loads eBPF programs, which needs privileges: before the drop.
	d.startTuning(g)
	if err := dropPrivileges(g.User, g.Group); err != nil {
		d.ctl.Close()
		return fail(err)
	}
	d.r.Start()
	for _, s := range d.services {
		if err := d.startService(s); err != nil {
			d.ctl.Close()
			return fail(err)
		}
	}
	if err := d.startHTTP(); err != nil {
		d.ctl.Close()
		return fail(err)
	}
	if err := d.startSOCKS5(); err != nil {
		d.ctl.Close()
		return fail(err)
	}
	d.ctl.Serve(d.handle)
	d.log.Info("running", "config", opts.ConfigPath, "services", len(d.services), "loops", len(d.r.Loops()),
		"control_socket", g.ControlSocket, "version", opts.Version)
	return d, nil
}

func (d *Daemon) buildPools(g config.Global) {
	n := len(d.r.Loops())
	pc := relay.PoolConfig{PipeSize: g.PipeSize, MaxPipes: g.MaxPipes}
	d.maxPipes = g.MaxPipes
	if d.maxPipes == 0 {
		d.maxPipes = relay.DefaultMaxPipes
	}
	if d.maxPipes > 0 {
		d.budget = relay.NewBudget(d.maxPipes)
	} else {
		d.maxPipes = 0
	}
	d.pools = make([]*relay.Pool, n)
	for i := range d.pools {
		d.pools[i] = relay.NewPool(pc, d.budget)
	}
}

// listenKey identifies a service across reloads: where it listens.
func listenKey(f config.Forward) string {
	return f.Interface + "|" + f.Listen.String()
}

// forwardConfig turns a config section into the forward service's config.
func (d *Daemon) forwardConfig(f config.Forward) forward.Config {
	fc := forward.Config{
		Name:           f.Name,
		Upstreams:      f.Upstreams,
		Balance:        forward.Balance(f.Balance),
		ConnectTimeout: f.ConnectTimeout,
		IdleTimeout:    f.IdleTimeout,
		MaxConns:       f.MaxConns,
		Admit:          d.admit,
		Pools:          d.pools,
		Log:            d.log,
	}
	if f.Interface == "" {
		fc.Listen = f.Listen
	}
	if len(f.Allow) > 0 {
		// Each rule was checked when the config was parsed.
		fc.Allow, _ = allow.Parse(f.Allow...)
	}
	return fc
}

// newService creates (and binds) the service of f without starting it.
func (d *Daemon) newService(f config.Forward) (*service, error) {
	fwd, err := forward.New(context.Background(), d.r, d.forwardConfig(f))
	if err != nil {
		return nil, fmt.Errorf("forward '%s': %w", f.Name, bindHint(err, f.Listen))
	}
	return &service{key: listenKey(f), cfg: f, fwd: fwd}, nil
}

// startService starts accepting, and following the interface if any.
func (d *Daemon) startService(s *service) error {
	if err := s.fwd.Start(); err != nil {
		return fmt.Errorf("forward '%s': %w", s.cfg.Name, err)
	}
	if s.cfg.Interface != "" {
		var err error
		s.follow, err = followInterface("forward", s.cfg.Name, s.cfg.Interface, s.cfg.Listen, s.fwd, d.log)
		return err
	}
	d.log.Info("listening", "forward", s.cfg.Name, "addr", s.fwd.Addr(), "upstreams", len(s.cfg.Upstreams))
	return nil
}

// stop closes the service's listeners and its interface watch.
func (s *service) stop() {
	if s.follow != nil {
		s.follow.close()
	}
	s.fwd.StopAccepting()
}

// bindHint explains a refused bind of a privileged port.
func bindHint(err error, a endpoint.Addr) error {
	if errors.Is(err, syscall.EACCES) && a.Network != endpoint.Unix && a.Port < 1024 {
		return fmt.Errorf("%w (ports below 1024 need root or CAP_NET_BIND_SERVICE; once sluice has dropped to another user, binding them needs a restart)", err)
	}
	return err
}

// Reload re-reads the config file and applies it; see the package comment.
// The error lists what was wrong; with an invalid file nothing changed.
func (d *Daemon) Reload() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopping {
		return errors.New("reload: shutting down")
	}
	cfg, err := config.Load(d.opts.ConfigPath)
	if err != nil {
		d.rejected++
		var errs config.Errors
		if errors.As(err, &errs) {
			for _, e := range errs {
				d.log.Error("config error", "err", e.Error())
			}
		} else {
			d.log.Error("reload: read config", "err", err)
		}
		d.log.Error("reload rejected: the running config is kept", "config", d.opts.ConfigPath)
		return err
	}
	d.applyGlobal(cfg.Global)

	old := d.services
	next := make(map[string]*service)
	var added []config.Forward
	var problems []error
	changed := 0
	for _, f := range cfg.Forwards {
		key := listenKey(f)
		s, ok := old[key]
		if !ok {
			added = append(added, f)
			continue
		}
		delete(old, key)
		next[key] = s
		if sameForward(s.cfg, f) {
			s.cfg.Name = f.Name
			continue
		}
		if err := s.fwd.Update(d.forwardConfig(f)); err != nil {
			problems = append(problems, fmt.Errorf("forward '%s': %w", f.Name, err))
			continue
		}
		changed++
		s.cfg = f
		d.log.Info("forward changed", "forward", f.Name, "upstreams", len(f.Upstreams))
	}
	// Removed services stop accepting before new ones bind, in case a new
	// address overlaps an old one; their connections live on.
	for _, s := range old {
		d.retire(s)
	}
	for _, f := range added {
		s, err := d.newService(f)
		if err == nil {
			err = d.startService(s)
			if err != nil {
				s.stop()
			}
		}
		if err != nil {
			problems = append(problems, err)
			d.log.Error("reload: service not started", "err", err)
			continue
		}
		next[s.key] = s
	}
	d.setRates(cfg)
	d.reloadAccounting(cfg) // first: a proxy built below counts from its start
	if err := d.reloadHTTP(cfg); err != nil {
		problems = append(problems, err)
	}
	if err := d.reloadSOCKS5(cfg); err != nil {
		problems = append(problems, err)
	}
	d.services = next
	d.cfg = cfg
	d.reloads++
	d.log.Info("reloaded", "config", d.opts.ConfigPath, "services", len(next), "added", len(added), "changed", changed,
		"removed", len(old), "problems", len(problems))
	return errors.Join(problems...)
}

// applyGlobal applies what of the global section can change live, and
// says what needs a restart.
func (d *Daemon) applyGlobal(g config.Global) {
	cur := d.cfg.Global
	d.level.Set(g.LogLevel)
	if g.MaxMemory != cur.MaxMemory {
		d.mem.setLimit(g.MaxMemory, d.envMemLimit)
	}
	restart := map[string]bool{
		"loops":          g.Loops != cur.Loops,
		"log":            g.Log != cur.Log || g.LogSize != cur.LogSize,
		"control_socket": g.ControlSocket != cur.ControlSocket,
		"user":           g.User != cur.User || g.Group != cur.Group,
		"max_pipes":      g.MaxPipes != cur.MaxPipes || g.PipeSize != cur.PipeSize,
	}
	for opt, diff := range restart {
		if diff {
			d.log.Warn("reload: this change takes effect on restart", "option", opt)
		}
	}
}

// sameForward reports whether a and b configure the same service, names
// and line numbers aside.
func sameForward(a, b config.Forward) bool {
	a.Name, a.Line, b.Name, b.Line = "", 0, "", 0
	return reflect.DeepEqual(a, b)
}

// retire stops a removed service from accepting and lets its connections
// run to their end in the background. Called with d.mu held.
func (d *Daemon) retire(s *service) {
	s.stop()
	d.draining[s] = true
	d.log.Info("forward removed: draining", "forward", s.cfg.Name, "live", s.fwd.Active())
	go func() {
		_ = s.fwd.Drain(context.Background())
		d.mu.Lock()
		delete(d.draining, s)
		d.mu.Unlock()
		d.log.Info("forward stopped", "forward", s.cfg.Name)
	}()
}

// Shutdown stops accepting, drains every service for the grace period (or
// until cut delivers something: a second signal), then stops the loops and
// the control socket. reason is logged.
func (d *Daemon) Shutdown(reason string, cut <-chan os.Signal) {
	d.mu.Lock()
	d.stopping = true
	all := make([]*service, 0, len(d.services)+len(d.draining))
	live := 0
	for _, s := range d.services {
		all = append(all, s)
	}
	for s := range d.draining {
		all = append(all, s)
	}
	for _, s := range all {
		live += s.fwd.Active()
	}
	grace := d.cfg.Global.Grace
	d.mu.Unlock()
	d.log.Info("shutting down: no longer accepting", "signal", reason, "live", live, "grace", grace)
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	go func() {
		select {
		case <-cut:
			cancel()
		case <-ctx.Done():
		}
	}()
	for _, s := range all {
		s.stop()
	}
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.fwd.Drain(ctx); err != nil {
				d.log.Warn("grace period over, closing live connections", "forward", s.cfg.Name, "err", err)
			}
		}()
	}
	d.drainHTTP(ctx, &wg)
	d.drainSOCKS5(ctx, &wg)
	wg.Wait()
	d.stopTuning()
	d.ctl.Close()
	d.closeAccounting() // while the loops run: tunnels still open add their bytes
	d.r.Stop()
	var total forward.Stats
	for _, s := range all {
		st := s.fwd.Stats()
		total.Accepted += st.Accepted
		total.Refused += st.Refused
		total.Relayed += st.Relayed
		total.BytesUp += st.BytesUp
		total.BytesDown += st.BytesDown
	}
	d.log.Info("stopped", "accepted", total.Accepted, "refused", total.Refused, "relayed", total.Relayed,
		"bytes_up", total.BytesUp, "bytes_down", total.BytesDown)
	d.logFile.Close()
}
