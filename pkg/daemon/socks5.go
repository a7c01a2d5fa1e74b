package daemon

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"

	"github.com/sluice-proxy/sluice/pkg/auth"
	"github.com/sluice-proxy/sluice/pkg/config"
	"github.com/sluice-proxy/sluice/pkg/endpoint"
	"github.com/sluice-proxy/sluice/pkg/socks5"
)

// socksService is one configured socks5 section and what runs it.
type socksService struct {
	key    string // interface and listen addresses (config.SOCKS5.ListenKey)
	cfg    config.SOCKS5
	users  []config.User // the users it was built with
	svc    *socks5.Service
	follow *follower // nil unless cfg.Interface is set
}

// stopAccepting closes the server's listeners and its interface watch.
func (s *socksService) stopAccepting() {
	if s.follow != nil {
		s.follow.close()
		s.follow = nil
	}
	s.svc.StopAccepting()
}

// socksServices are the daemon's SOCKS5 servers, by listen key.
type socksServices struct {
	running  map[string]*socksService
	draining sync.WaitGroup // retired servers still serving their sessions
}

// newSOCKS5 creates (and binds) the server of x without starting it.
func (d *Daemon) newSOCKS5(x config.SOCKS5, cfg *config.Config, users *auth.Users) (*socksService, error) {
	list := x.ACL
	sc := socks5.Config{
		Name:             x.Name,
		ConnectTimeout:   x.ConnectTimeout,
		HandshakeTimeout: x.HandshakeTimeout,
		IdleTimeout:      x.IdleTimeout,
		MaxConns:         x.MaxConns,
		ACL:              &list,
		Admit:            d.admit,
		Pools:            d.pools,
		Log:              d.log,
		Rates:            d.rates,
		Accounting:       d.acct,
	}
	s := &socksService{key: x.ListenKey(), cfg: x, users: cfg.Users}
	if x.Auth {
		sc.Users = users
	} else {
		sc.AddrUsers = users // clients owned by address are their user
	}
	if x.AccessLog {
		sc.AccessLog = d.log.With("log", "access", "socks5", x.Name)
	}
	svc, err := socks5.New(context.Background(), d.r, sc)
	if err != nil {
		return nil, fmt.Errorf("socks5 '%s': %w", x.Name, err)
	}
	if x.Interface == "" {
		for _, a := range x.Listen {
			if _, err := svc.AddListener(context.Background(), a); err != nil {
				svc.StopAccepting()
				return nil, fmt.Errorf("socks5 '%s': %w", x.Name, bindHint(err, a))
			}
		}
	}
	s.svc = svc
	return s, nil
}

// createSOCKS5 binds every socks5 section of cfg; startSOCKS5 starts them
// once the loops run.
func (d *Daemon) createSOCKS5(cfg *config.Config) error {
	d.socks.running = make(map[string]*socksService)
	users, err := newUsers(cfg)
	if err != nil {
		return err
	}
	for _, x := range cfg.SOCKS5 {
		s, err := d.newSOCKS5(x, cfg, users)
		if err != nil {
			return err
		}
		d.socks.running[s.key] = s
	}
	return nil
}

func (d *Daemon) startSOCKS5() error {
	for _, s := range d.socks.running {
		if err := d.startOneSOCKS5(s); err != nil {
			return err
		}
	}
	return nil
}

func (d *Daemon) startOneSOCKS5(s *socksService) error {
	if err := s.svc.Start(); err != nil {
		return fmt.Errorf("socks5 '%s': %w", s.cfg.Name, err)
	}
	if s.cfg.Interface != "" {
		listen := endpoint.Addr{Network: endpoint.TCP, Port: 1080}
		if len(s.cfg.Listen) > 0 {
			listen = s.cfg.Listen[0]
		}
		var err error
		s.follow, err = followInterface("socks5", s.cfg.Name, s.cfg.Interface, listen, s.svc, d.log)
		return err
	}
	d.log.Info("listening", "socks5", s.cfg.Name, "addr", strings.Join(s.svc.Addrs(), ","), "rules", len(s.cfg.ACL.Rules), "auth", s.cfg.Auth)
	return nil
}

// stopSOCKS5 closes every listener (start-up failed).
func (d *Daemon) stopSOCKS5() {
	for _, s := range d.socks.running {
		s.stopAccepting()
	}
}

// sameSOCKS5 reports whether a and b configure the same server, names and
// lines aside.
func sameSOCKS5(a, b config.SOCKS5) bool {
	a.Name, a.Line, b.Name, b.Line = "", 0, "", 0
	return reflect.DeepEqual(a, b)
}

// reloadSOCKS5 applies cfg's socks5 sections: an unchanged server (users
// included) keeps running; a changed or removed one stops accepting and
// serves its live sessions to their end; new and changed ones start on
// their addresses. Called with d.mu held.
func (d *Daemon) reloadSOCKS5(cfg *config.Config) error {
	users, err := newUsers(cfg)
	if err != nil {
		return err
	}
	old := d.socks.running
	next := make(map[string]*socksService)
	var start []config.SOCKS5
	for _, x := range cfg.SOCKS5 {
		s, ok := old[x.ListenKey()]
		if ok && sameSOCKS5(s.cfg, x) && sameUsers(s.users, cfg.Users) {
			delete(old, s.key)
			next[s.key] = s
			continue
		}
		start = append(start, x)
	}
	for _, s := range old {
		d.retireSOCKS5(s)
	}
	var problems []error
	for _, x := range start {
		s, err := d.newSOCKS5(x, cfg, users)
		if err == nil {
			err = d.startOneSOCKS5(s)
		}
		if err != nil {
			problems = append(problems, err)
			d.log.Error("reload: service not started", "err", err)
			continue
		}
		next[s.key] = s
	}
	d.socks.running = next
	return errors.Join(problems...)
}

func (d *Daemon) retireSOCKS5(s *socksService) {
	s.stopAccepting()
	d.log.Info("socks5 replaced or removed: draining", "socks5", s.cfg.Name, "live", s.svc.Active())
	d.socks.draining.Add(1)
	go func() {
		defer d.socks.draining.Done()
		_ = s.svc.Drain(context.Background())
		d.log.Info("socks5 stopped", "socks5", s.cfg.Name)
	}()
}

// drainSOCKS5 stops every server from accepting and waits, until ctx is
// done, for their sessions to end; wg counts it. Called on shutdown.
func (d *Daemon) drainSOCKS5(ctx context.Context, wg *sync.WaitGroup) {
	for _, s := range d.socks.running {
		s.stopAccepting()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.svc.Drain(ctx); err != nil {
				d.log.Warn("grace period over, closing live connections", "socks5", s.cfg.Name, "err", err)
			}
		}()
	}
}

// socksStats are the running SOCKS5 servers' figures for `sluice stats`:
// Accepted counts client connections, Relayed sessions, Refused failure
// replies and failed handshakes. Called with d.mu held.
func (d *Daemon) socksStats(ctx context.Context) []ServiceStats {
	var out []ServiceStats
	for _, s := range d.socks.running {
		ss := ServiceStats{Name: s.cfg.Name, Type: "socks5", Listen: s.svc.Addrs(), Interface: s.cfg.Interface, Active: s.svc.Active()}
		if st, err := s.svc.Snapshot(ctx); err == nil {
			ss.Accepted, ss.Relayed, ss.Refused = st.Accepted, st.Sessions, st.Refused
			ss.BytesUp, ss.BytesDown = st.BytesUp, st.BytesDown
		}
		out = append(out, ss)
	}
	return out
}
