package config

import (
	"fmt"
	"math"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/sluice-proxy/sluice/pkg/acl"
	"github.com/sluice-proxy/sluice/pkg/auth"
	"github.com/sluice-proxy/sluice/pkg/endpoint"
	"github.com/sluice-proxy/sluice/pkg/filter"
)

// HTTPProxy is one `config http_proxy 'NAME'` section.
type HTTPProxy struct {
	Name string
	Line int
	// Listen is the address to accept clients on.
	Listen endpoint.Addr
	// ConnectTimeout, HeaderTimeout, IdleTimeout and ReadTimeout are the
	// proxy's timeouts; zero means the httpproxy defaults.
	ConnectTimeout, HeaderTimeout, IdleTimeout, ReadTimeout, TunnelIdleTimeout time.Duration
	// MaxConns bounds live client connections; 0: no bound.
	MaxConns int
	// ForwardedFor adds X-Forwarded-For; off by default.
	ForwardedFor bool
	// Interface, if set, names a network device: the proxy listens on
	// each of its addresses, on Listen's port, and follows them.
	Interface string
	// Transparent serves connections redirected by nftables (REDIRECT);
	// TProxy those diverted by a tproxy rule (and implies Transparent).
	Transparent, TProxy bool
	// Auth requires every client to be a user (credentials or address).
	Auth bool
	// ACL is the rule list: rules in order, the default action, CONNECT
	// ports.
	ACL acl.List
	// AccessLog logs one line per request.
	AccessLog bool
	// BlockURLs are URL patterns answered with 403; BlockWords are words
	// that block text responses (see package filter).
	BlockURLs, BlockWords []string
	// CacheSize is the HTTP cache's memory in bytes (0: no cache);
	// CacheMaxObject the largest body it stores (0: 1M); CacheDir an
	// optional disk store and CacheDirSize its size (0: 256M).
	CacheSize, CacheMaxObject, CacheDirSize int64
	CacheDir                                string
}

// ParseSize parses a size as options take it (bytes with an optional K, M
// or G suffix, powers of 1024), for command-line flags.
func ParseSize(v string) (int64, error) { return parseSize(v) }

// User is one `config user 'NAME'` section.
type User struct {
	Name string
	Line int
	// Hash is the bcrypt hash of the password.
	Hash string
	// Class groups users for ACL rules (`rule 'deny class kids ...'`).
	Class string
	// Addresses are client ranges that are this user without credentials.
	Addresses []netip.Prefix
	// Limits are the user's own rate_up, rate_down and max_conns; zero
	// fields take the class's (see Config.LimitsOf).
	Limits Limits
	// Quota overrides the class's quota field by field (see QuotaOf).
	Quota Quota
}

type httpTarget struct {
	h       *HTTPProxy
	enabled *bool
}

func positiveDuration(v string) (time.Duration, error) {
	d, err := parseDuration(v)
	if err == nil && d == 0 {
		err = fmt.Errorf("%q: must be more than 0", v)
	}
	return d, err
}

// httpSchema is the `config http_proxy` section.
var httpSchema = map[string]spec[*httpTarget]{
	"enabled": {set: func(t *httpTarget, v string) (err error) { *t.enabled, err = parseBool(v); return err }},
	"listen": {set: func(t *httpTarget, v string) (err error) {
		t.h.Listen, err = endpoint.Parse(v)
		if err == nil && t.h.Listen.Network == endpoint.Vsock {
			err = fmt.Errorf("%q: an HTTP proxy listens on TCP or a unix socket", v)
		}
		return err
	}},
	"connect_timeout": {set: func(t *httpTarget, v string) (err error) { t.h.ConnectTimeout, err = positiveDuration(v); return err }},
	"header_timeout":  {set: func(t *httpTarget, v string) (err error) { t.h.HeaderTimeout, err = positiveDuration(v); return err }},
	"idle_timeout":    {set: func(t *httpTarget, v string) (err error) { t.h.IdleTimeout, err = positiveDuration(v); return err }},
	"read_timeout":    {set: func(t *httpTarget, v string) (err error) { t.h.ReadTimeout, err = positiveDuration(v); return err }},
	"tunnel_idle_timeout": {set: func(t *httpTarget, v string) (err error) {
		t.h.TunnelIdleTimeout, err = positiveDuration(v)
		return err
	}},
	"max_conns": {set: func(t *httpTarget, v string) (err error) {
		t.h.MaxConns, err = parseInt(v, 0, math.MaxInt32)
		return err
	}},
	"forwarded_for": {set: func(t *httpTarget, v string) (err error) { t.h.ForwardedFor, err = parseBool(v); return err }},
	"auth":          {set: func(t *httpTarget, v string) (err error) { t.h.Auth, err = parseBool(v); return err }},
	"transparent": {set: func(t *httpTarget, v string) (err error) {
		switch v {
		case "redirect":
			t.h.Transparent, t.h.TProxy = true, false
		case "tproxy":
			t.h.Transparent, t.h.TProxy = true, true
		default:
			if t.h.Transparent, err = parseBool(v); err != nil {
				return fmt.Errorf("%q: want 0, 1, redirect or tproxy", v)
			}
			t.h.TProxy = false
		}
		return nil
	}},
	"interface":  {set: func(t *httpTarget, v string) (err error) { t.h.Interface, err = parseDevice(v); return err }},
	"access_log": {set: func(t *httpTarget, v string) (err error) { t.h.AccessLog, err = parseBool(v); return err }},
	"rule": {list: true, set: func(t *httpTarget, v string) error {
		r, err := acl.ParseRule(v)
		if err != nil {
			return err
		}
		t.h.ACL.Rules = append(t.h.ACL.Rules, r)
		return nil
	}},
	"default": {set: func(t *httpTarget, v string) error {
		switch v {
		case "allow":
			t.h.ACL.Default = acl.Allow
		case "deny":
			t.h.ACL.Default = acl.Deny
		default:
			return fmt.Errorf("%q: want allow or deny", v)
		}
		return nil
	}},
	"block_url": {list: true, set: func(t *httpTarget, v string) error {
		if _, err := filter.NewURLs([]string{v}); err != nil {
			return err
		}
		t.h.BlockURLs = append(t.h.BlockURLs, v)
		return nil
	}},
	"cache_size":       {set: func(t *httpTarget, v string) (err error) { t.h.CacheSize, err = parseSize(v); return err }},
	"cache_max_object": {set: func(t *httpTarget, v string) (err error) { t.h.CacheMaxObject, err = parseSize(v); return err }},
	"cache_dir_size":   {set: func(t *httpTarget, v string) (err error) { t.h.CacheDirSize, err = parseSize(v); return err }},
	"cache_dir": {set: func(t *httpTarget, v string) error {
		if !strings.HasPrefix(v, "/") {
			return fmt.Errorf("%q: want an absolute directory path", v)
		}
		t.h.CacheDir = v
		return nil
	}},
	"block_word": {list: true, set: func(t *httpTarget, v string) error {
		if _, err := filter.NewWords([]string{v}); err != nil {
			return err
		}
		t.h.BlockWords = append(t.h.BlockWords, v)
		return nil
	}},
	"connect_port": {list: true, set: func(t *httpTarget, v string) error {
		p, err := acl.ParsePorts(v)
		if err != nil {
			return err
		}
		t.h.ACL.ConnectPorts = append(t.h.ACL.ConnectPorts, p)
		return nil
	}},
}

// userSchema is the `config user` section.
var userSchema = map[string]spec[*User]{
	"password": {set: func(u *User, v string) error {
		if err := auth.CheckHash(v); err != nil {
			return err
		}
		u.Hash = v
		return nil
	}},
	"class":        {set: func(u *User, v string) error { u.Class = v; return nonEmpty(v) }},
	"rate_up":      {set: func(u *User, v string) error { return setRate(&u.Limits.Up, v) }},
	"rate_down":    {set: func(u *User, v string) error { return setRate(&u.Limits.Down, v) }},
	"max_conns":    {set: func(u *User, v string) error { return setMaxConns(&u.Limits.MaxConns, v) }},
	"quota_bytes":  {set: func(u *User, v string) error { return setQuotaBytes(&u.Quota, v) }},
	"quota_time":   {set: func(u *User, v string) error { return setQuotaTime(&u.Quota, v) }},
	"quota_period": {set: func(u *User, v string) error { return setQuotaPeriod(&u.Quota, v) }},
	"address": {list: true, set: func(u *User, v string) error {
		p, err := acl.ParsePrefix(v)
		if err != nil {
			return err
		}
		u.Addresses = append(u.Addresses, p)
		return nil
	}},
}

// parseHTTPSection handles the http_proxy and user section types; it
// reports whether s was one of them.
func parseHTTPSection(cfg *Config, s *Section, fail failFunc) bool {
	switch s.Type {
	case "http_proxy":
		h := HTTPProxy{Name: s.Name, Line: s.Line}
		if h.Name == "" {
			h.Name = fmt.Sprintf("http_proxy_line%d", s.Line)
		}
		enabled := true
		applyOptions(s, httpSchema, &httpTarget{h: &h, enabled: &enabled}, fail)
		if s.option("listen") == nil && !s.Broken {
			fail("listen", s.Line, "missing: add `option listen ':3128'`")
		}
		for _, name := range []string{"cache_dir", "cache_max_object", "cache_dir_size"} {
			if o := s.option(name); o != nil && h.CacheSize == 0 {
				fail(name, o.Line, "the cache is off: add `option cache_size '64M'`")
			}
		}
		checkInterfaceListen(s, h.Interface, h.Listen, fail)
		if enabled {
			cfg.HTTPProxies = append(cfg.HTTPProxies, h)
		} else {
			cfg.HTTPDisabled = append(cfg.HTTPDisabled, h.Name)
		}
	case "user":
		u := User{Name: s.Name, Line: s.Line}
		if u.Name == "" {
			fail("", s.Line, "a user section needs a name: config user 'NAME'")
		}
		applyOptions(s, userSchema, &u, fail)
		if s.option("password") == nil && !s.Broken {
			fail("password", s.Line, "missing: add `option password '$2y$...'` (a bcrypt hash: htpasswd -nB NAME)")
		}
		cfg.Users = append(cfg.Users, u)
	default:
		return false
	}
	return true
}

// checkHTTP checks what spans sections: an http_proxy with auth needs
// users, and no two services may share a listen address.
func checkHTTP(cfg *Config) Errors {
	var errs Errors
	taken := map[string]string{}
	for _, f := range cfg.Forwards {
		taken[f.Interface+"|"+f.Listen.String()] = fmt.Sprintf("forward '%s' (line %d)", f.Name, f.Line)
	}
	cacheDirs := map[string]string{}
	for _, h := range cfg.HTTPProxies {
		label := fmt.Sprintf("http_proxy '%s'", h.Name)
		if d := filepath.Clean(h.CacheDir); h.CacheDir != "" {
			// Two disk stores in one directory would evict each other's
			// files behind their indexes.
			if prev, ok := cacheDirs[d]; ok {
				errs = append(errs, &Error{File: cfg.File, Line: h.Line, Section: label, Option: "cache_dir",
					Msg: fmt.Sprintf("%s is already the cache_dir of %s", h.CacheDir, prev)})
			}
			cacheDirs[d] = fmt.Sprintf("%s (line %d)", label, h.Line)
		}
		if h.Auth && len(cfg.Users) == 0 {
			errs = append(errs, &Error{File: cfg.File, Line: h.Line, Section: label, Option: "auth",
				Msg: "auth is on but no `config user` section exists"})
		}
		key := h.Interface + "|" + h.Listen.String()
		if h.Listen.Port == 0 && h.Listen.Network != endpoint.Unix {
			continue
		}
		if prev, ok := taken[key]; ok {
			errs = append(errs, &Error{File: cfg.File, Line: h.Line, Section: label, Option: "listen",
				Msg: fmt.Sprintf("%s is already the listen address of %s", h.Listen, prev)})
			continue
		}
		taken[key] = fmt.Sprintf("%s (line %d)", label, h.Line)
	}
	return errs
}
