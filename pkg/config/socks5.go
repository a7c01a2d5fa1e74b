package config

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/sluice-proxy/sluice/pkg/acl"
	"github.com/sluice-proxy/sluice/pkg/endpoint"
)

// SOCKS5 is one `config socks5 'NAME'` section.
type SOCKS5 struct {
	Name string
	Line int
	// Listen are the addresses to accept clients on (`list listen`, one
	// or more; with Interface, one port).
	Listen []endpoint.Addr
	// Interface, if set, names a network device: the server listens on
	// each of its addresses, on Listen's port, and follows them.
	Interface string
	// ConnectTimeout, HandshakeTimeout and IdleTimeout; zero means the
	// socks5 package defaults.
	ConnectTimeout, HandshakeTimeout, IdleTimeout time.Duration
	// MaxConns bounds live client connections; 0: no bound.
	MaxConns int
	// Auth requires every client to be a user (RFC 1929 credentials, or
	// an address a user owns).
	Auth bool
	// ACL is the rule list: rules in order, the default action and the
	// ports CONNECT may reach (none: every port).
	ACL acl.List
	// AccessLog logs one line per session or refused request.
	AccessLog bool
}

// ListenKey is where s listens: sections with the same key replace each
// other on reload.
func (s SOCKS5) ListenKey() string {
	l := make([]string, len(s.Listen))
	for i, a := range s.Listen {
		l[i] = a.String()
	}
	return s.Interface + "|" + strings.Join(l, ",")
}

type socks5Target struct {
	s       *SOCKS5
	enabled *bool
}

// socks5Schema is the `config socks5` section.
var socks5Schema = map[string]spec[*socks5Target]{
	"enabled": {set: func(t *socks5Target, v string) (err error) { *t.enabled, err = parseBool(v); return err }},
	"listen": {list: true, set: func(t *socks5Target, v string) error {
		a, err := endpoint.Parse(v)
		if err != nil {
			return err
		}
		if a.Network != endpoint.TCP && a.Network != endpoint.TCP4 && a.Network != endpoint.TCP6 {
			return fmt.Errorf("%q: a SOCKS5 server listens on TCP", v)
		}
		t.s.Listen = append(t.s.Listen, a)
		return nil
	}},
	"interface":       {set: func(t *socks5Target, v string) (err error) { t.s.Interface, err = parseDevice(v); return err }},
	"connect_timeout": {set: func(t *socks5Target, v string) (err error) { t.s.ConnectTimeout, err = positiveDuration(v); return err }},
	"handshake_timeout": {set: func(t *socks5Target, v string) (err error) {
		t.s.HandshakeTimeout, err = positiveDuration(v)
		return err
	}},
	"idle_timeout": {set: func(t *socks5Target, v string) (err error) { t.s.IdleTimeout, err = positiveDuration(v); return err }},
	"max_conns": {set: func(t *socks5Target, v string) (err error) {
		t.s.MaxConns, err = parseInt(v, 0, math.MaxInt32)
		return err
	}},
	"auth":       {set: func(t *socks5Target, v string) (err error) { t.s.Auth, err = parseBool(v); return err }},
	"access_log": {set: func(t *socks5Target, v string) (err error) { t.s.AccessLog, err = parseBool(v); return err }},
	"rule": {list: true, set: func(t *socks5Target, v string) error {
		r, err := acl.ParseRule(v)
		if err != nil {
			return err
		}
		t.s.ACL.Rules = append(t.s.ACL.Rules, r)
		return nil
	}},
	"default": {set: func(t *socks5Target, v string) error {
		switch v {
		case "allow":
			t.s.ACL.Default = acl.Allow
		case "deny":
			t.s.ACL.Default = acl.Deny
		default:
			return fmt.Errorf("%q: want allow or deny", v)
		}
		return nil
	}},
	"connect_port": {list: true, set: func(t *socks5Target, v string) error {
		p, err := acl.ParsePorts(v)
		if err != nil {
			return err
		}
		t.s.ACL.ConnectPorts = append(t.s.ACL.ConnectPorts, p)
		return nil
	}},
}

// parseSOCKS5Section handles the socks5 section type; it reports whether
// s was one.
func parseSOCKS5Section(cfg *Config, s *Section, fail failFunc) bool {
	if s.Type != "socks5" {
		return false
	}
	x := SOCKS5{Name: s.Name, Line: s.Line}
	if x.Name == "" {
		x.Name = fmt.Sprintf("socks5_line%d", s.Line)
	}
	enabled := true
	applyOptions(s, socks5Schema, &socks5Target{s: &x, enabled: &enabled}, fail)
	if o := s.option("listen"); o == nil && !s.Broken {
		fail("listen", s.Line, "missing: add `option listen ':1080'`")
	} else if o != nil && x.Interface != "" {
		if len(x.Listen) > 1 {
			fail("listen", o.Line, "with option interface, give one port (':1080'): the addresses are the interface's")
		} else if len(x.Listen) == 1 {
			checkInterfaceListen(s, x.Interface, x.Listen[0], fail)
		}
	}
	if enabled {
		cfg.SOCKS5 = append(cfg.SOCKS5, x)
	} else {
		cfg.SOCKS5Disabled = append(cfg.SOCKS5Disabled, x.Name)
	}
	return true
}

// checkSOCKS5 checks what spans sections: auth needs users, and no
// address is taken twice (by a forward, an HTTP proxy or another socks5).
func checkSOCKS5(cfg *Config) Errors {
	var errs Errors
	taken := map[string]string{}
	for _, f := range cfg.Forwards {
		taken[f.Interface+"|"+f.Listen.String()] = fmt.Sprintf("forward '%s' (line %d)", f.Name, f.Line)
	}
	for _, h := range cfg.HTTPProxies {
		taken[h.Interface+"|"+h.Listen.String()] = fmt.Sprintf("http_proxy '%s' (line %d)", h.Name, h.Line)
	}
	for _, x := range cfg.SOCKS5 {
		label := fmt.Sprintf("socks5 '%s'", x.Name)
		if x.Auth && len(cfg.Users) == 0 {
			errs = append(errs, &Error{File: cfg.File, Line: x.Line, Section: label, Option: "auth",
				Msg: "auth is on but no `config user` section exists"})
		}
		for _, a := range x.Listen {
			if a.Port == 0 {
				continue
			}
			key := x.Interface + "|" + a.String()
			if prev, ok := taken[key]; ok {
				errs = append(errs, &Error{File: cfg.File, Line: x.Line, Section: label, Option: "listen",
					Msg: fmt.Sprintf("%s is already the listen address of %s", a, prev)})
				continue
			}
			taken[key] = fmt.Sprintf("%s (line %d)", label, x.Line)
		}
	}
	return errs
}
