package daemon

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"

	"github.com/sluice-proxy/sluice/pkg/auth"
	"github.com/sluice-proxy/sluice/pkg/config"
	"github.com/sluice-proxy/sluice/pkg/endpoint"
	"github.com/sluice-proxy/sluice/pkg/filter"
	"github.com/sluice-proxy/sluice/pkg/httpcache"
	"github.com/sluice-proxy/sluice/pkg/httpproxy"
)

// httpService is one configured http_proxy and what runs it.
type httpService struct {
	key    string // interface and listen address (httpKey)
	cfg    config.HTTPProxy
	users  []config.User    // the users it was built with, when it uses them
	cache  *httpcache.Cache // nil without cache_size
	svc    *httpproxy.Service
	follow *follower // nil unless cfg.Interface is set
}

// httpKey is where h listens: services with the same key replace each
// other on reload.
func httpKey(h config.HTTPProxy) string { return h.Interface + "|" + h.Listen.String() }

// stopAccepting closes the proxy's listeners and its interface watch.
func (s *httpService) stopAccepting() {
	if s.follow != nil {
		s.follow.close()
		s.follow = nil
	}
	s.svc.StopAccepting()
}

// httpServices are the daemon's HTTP proxies, by listen address.
type httpServices struct {
	running  map[string]*httpService
	draining sync.WaitGroup // retired proxies still serving their connections
}

// newUsers builds the user table of cfg, or nil when there are no users.
func newUsers(cfg *config.Config) (*auth.Users, error) {
	if len(cfg.Users) == 0 {
		return nil, nil
	}
	ac := auth.Config{}
	for _, u := range cfg.Users {
		ac.Users = append(ac.Users, auth.User{Name: u.Name, Hash: u.Hash, Class: u.Class})
		for _, p := range u.Addresses {
			ac.ByAddr = append(ac.ByAddr, auth.AddrUser{Prefix: p, User: u.Name})
		}
	}
	return auth.New(ac)
}

// newHTTP creates (and binds) the proxy of h without starting it. keep,
// if not nil, is the cache of the proxy it replaces, which goes on
// serving (sameCache).
func (d *Daemon) newHTTP(h config.HTTPProxy, cfg *config.Config, users *auth.Users, keep *httpcache.Cache) (*httpService, error) {
	list := h.ACL
	hc := httpproxy.Config{
		Name:              h.Name,
		Listen:            h.Listen,
		ConnectTimeout:    h.ConnectTimeout,
		HeaderTimeout:     h.HeaderTimeout,
		IdleTimeout:       h.IdleTimeout,
		ReadTimeout:       h.ReadTimeout,
		TunnelIdleTimeout: h.TunnelIdleTimeout,
		MaxConns:          h.MaxConns,
		ForwardedFor:      h.ForwardedFor,
		Transparent:       h.Transparent,
		TProxy:            h.TProxy,
		ACL:               &list,
		Admit:             d.admit,
		Pools:             d.pools,
		Log:               d.log,
		Rates:             d.rates,
		Accounting:        d.acct,
	}
	if len(h.BlockURLs) > 0 {
		u, err := filter.NewURLs(h.BlockURLs)
		if err != nil {
			return nil, fmt.Errorf("http_proxy '%s': %w", h.Name, err)
		}
		hc.BlockURLs = u
	}
	if len(h.BlockWords) > 0 {
		w, err := filter.NewWords(h.BlockWords)
		if err != nil {
			return nil, fmt.Errorf("http_proxy '%s': %w", h.Name, err)
		}
		hc.BodyWords = w
	}
	if h.CacheSize > 0 {
		hc.Cache = keep
		if keep == nil {
			c, err := d.newCache(h, cfg.Global)
			if err != nil {
				return nil, fmt.Errorf("http_proxy '%s': %w", h.Name, err)
			}
			hc.Cache = c
		}
	}
	if h.Interface != "" {
		hc.Listen = endpoint.Addr{} // the interface's addresses, once started
	}
	s := &httpService{key: httpKey(h), cfg: h, cache: hc.Cache}
	if h.Auth {
		hc.Users = users
		s.users = cfg.Users
	} else if users != nil {
		hc.AddrUsers = users // clients owned by address are their user
		s.users = cfg.Users
	}
	if h.AccessLog {
		hc.AccessLog = d.log.With("log", "access", "http_proxy", h.Name)
	}
	svc, err := httpproxy.New(context.Background(), d.r, hc)
	if err != nil {
		return nil, fmt.Errorf("http_proxy '%s': %w", h.Name, bindHint(err, h.Listen))
	}
	s.svc = svc
	return s, nil
}

// createHTTP binds every http_proxy of cfg; startHTTP starts them once the
// loops run.
func (d *Daemon) createHTTP(cfg *config.Config) error {
	d.http.running = make(map[string]*httpService)
	users, err := newUsers(cfg)
	if err != nil {
		return err
	}
	for _, h := range cfg.HTTPProxies {
		s, err := d.newHTTP(h, cfg, users, nil)
		if err != nil {
			return err
		}
		d.http.running[s.key] = s
	}
	return nil
}

func (d *Daemon) startHTTP() error {
	for _, s := range d.http.running {
		if err := d.startOneHTTP(s); err != nil {
			return err
		}
	}
	return nil
}

func (d *Daemon) startOneHTTP(s *httpService) error {
	if err := s.svc.Start(); err != nil {
		return fmt.Errorf("http_proxy '%s': %w", s.cfg.Name, err)
	}
	if s.cfg.Interface != "" {
		var err error
		s.follow, err = followInterface("http_proxy", s.cfg.Name, s.cfg.Interface, s.cfg.Listen, s.svc, d.log)
		return err
	}
	d.log.Info("listening", "http_proxy", s.cfg.Name, "addr", s.svc.Addr(), "rules", len(s.cfg.ACL.Rules), "auth", s.cfg.Auth)
	return nil
}

// stopHTTP closes every listener (start-up failed).
func (d *Daemon) stopHTTP() {
	for _, s := range d.http.running {
		s.stopAccepting()
	}
}

// sameCache reports whether the proxy b, replacing a on reload, keeps a's
// cache: same name and cache options. The stored objects stay (a rule or
// filter that changed applies to them as they are served: the cache is
// asked after the policy, and stored text is scanned again), and one
// cache_dir never has two caches writing to it.
func sameCache(a, b config.HTTPProxy) bool {
	return a.CacheSize > 0 && a.Name == b.Name && a.CacheSize == b.CacheSize && a.CacheMaxObject == b.CacheMaxObject &&
		a.CacheDir == b.CacheDir && a.CacheDirSize == b.CacheDirSize
}

// sameHTTP reports whether a and b configure the same proxy, names and
// lines aside.
func sameHTTP(a, b config.HTTPProxy) bool {
	a.Name, a.Line, b.Name, b.Line = "", 0, "", 0
	return reflect.DeepEqual(a, b)
}

// reloadHTTP applies cfg's http_proxy sections: an unchanged proxy (users
// included, when it uses them) keeps running; a changed or removed one
// stops accepting and serves its live connections to their end; new and
// changed ones start on their address. Called with d.mu held.
func (d *Daemon) reloadHTTP(cfg *config.Config) error {
	users, err := newUsers(cfg)
	if err != nil {
		return err
	}
	old := d.http.running
	next := make(map[string]*httpService)
	var start []config.HTTPProxy
	for _, h := range cfg.HTTPProxies {
		s, ok := old[httpKey(h)]
		// Every proxy uses the users: without auth a client whose
		// address belongs to a user is that user.
		if ok && sameHTTP(s.cfg, h) && sameUsers(s.users, cfg.Users) {
			delete(old, s.key)
			next[s.key] = s
			continue
		}
		start = append(start, h)
	}
	for _, s := range old {
		d.retireHTTP(s)
	}
	var problems []error
	for _, h := range start {
		var keep *httpcache.Cache
		for _, s := range old {
			if sameCache(s.cfg, h) {
				keep = s.cache
			}
		}
		s, err := d.newHTTP(h, cfg, users, keep)
		if err == nil {
			err = d.startOneHTTP(s)
		}
		if err != nil {
			problems = append(problems, err)
			d.log.Error("reload: service not started", "err", err)
			continue
		}
		next[s.key] = s
	}
	d.http.running = next
	return errors.Join(problems...)
}

func (d *Daemon) retireHTTP(s *httpService) {
	s.stopAccepting()
	d.log.Info("http_proxy replaced or removed: draining", "http_proxy", s.cfg.Name, "live", s.svc.Active())
	d.http.draining.Add(1)
	go func() {
		defer d.http.draining.Done()
		_ = s.svc.Drain(context.Background())
		d.log.Info("http_proxy stopped", "http_proxy", s.cfg.Name)
	}()
}

// drainHTTP stops every proxy from accepting and waits, until ctx is done,
// for their connections to end; wg counts it. Called on shutdown.
func (d *Daemon) drainHTTP(ctx context.Context, wg *sync.WaitGroup) {
	for _, s := range d.http.running {
		s.stopAccepting()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.svc.Drain(ctx); err != nil {
				d.log.Warn("grace period over, closing live connections", "http_proxy", s.cfg.Name, "err", err)
			}
		}()
	}
}

// httpStats are the running http proxies' figures for `sluice stats`:
// Accepted counts client connections, Relayed requests and tunnels
// answered, Refused the requests sluice answered with an error itself.
// Called with d.mu held.
func (d *Daemon) httpStats(ctx context.Context) []ServiceStats {
	var out []ServiceStats
	for _, s := range d.http.running {
		ss := ServiceStats{Name: s.cfg.Name, Type: "http_proxy", Listen: s.svc.Addrs(), Active: s.svc.Active()}
		if hs, err := s.svc.Snapshot(ctx); err == nil {
			ss.Accepted, ss.Relayed, ss.Refused = hs.Accepted, hs.Requests, hs.Errors
			ss.BytesUp, ss.BytesDown = hs.BytesUp, hs.BytesDown
			if cs, ok := s.svc.CacheStats(); ok {
				ss.Cache = &CacheStats{Hits: hs.CacheHits, Revalidated: hs.CacheRevalidated, Misses: hs.CacheMisses,
					MemEntries: cs.MemEntries, MemBytes: cs.MemBytes, DiskEntries: cs.DiskEntries, DiskBytes: cs.DiskBytes, Evicted: cs.Evicted}
			}
		}
		out = append(out, ss)
	}
	return out
}
