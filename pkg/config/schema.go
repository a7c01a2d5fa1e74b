package config

import (
	"errors"
	"fmt"
	"github.com/sluice-proxy/sluice/pkg/allow"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-proxy/sluice/pkg/endpoint"
)

// spec describes one option of a section type: whether it is a list and
// how a value is stored into the section's target.
type spec[T any] struct {
	list bool
	set  func(t T, v string) error
}

// failFunc records an error at a line of the current section.
type failFunc func(option string, line int, format string, args ...any)

// applyOptions stores every option of s through schema into t.
func applyOptions[T any](s *Section, schema map[string]spec[T], t T, fail failFunc) {
	for _, o := range s.Options {
		sp, ok := schema[o.Name]
		if !ok {
			fail(o.Name, o.Line, "unknown option for a %s section; known: %s", s.Type, knownNames(schema))
			continue
		}
		if o.IsList && !sp.list {
			fail(o.Name, o.Line, "takes one value: write `option %s`, not `list %s`", o.Name, o.Name)
			continue
		}
		for i, v := range o.Values {
			if err := sp.set(t, v); err != nil {
				fail(o.Name, o.Lines[i], "%v", err)
			}
		}
	}
}

func knownNames[T any](schema map[string]spec[T]) string {
	names := make([]string, 0, len(schema))
	for n := range schema {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// globalSchema is the `config sluice` section.
var globalSchema = map[string]spec[*Global]{
	"loops": {set: func(g *Global, v string) (err error) {
		g.Loops, err = parseInt(v, 0, 256)
		return err
	}},
	"log_level": {set: func(g *Global, v string) error {
		switch v {
		case "debug", "info", "warn", "error":
			return g.LogLevel.UnmarshalText([]byte(v))
		}
		return fmt.Errorf("%q: want debug, info, warn or error", v)
	}},
	"log": {set: func(g *Global, v string) error {
		if v != "stderr" && v != "syslog" && !strings.HasPrefix(v, "/") {
			return fmt.Errorf("%q: want stderr, syslog or an absolute file path", v)
		}
		g.Log = v
		return nil
	}},
	"log_size": {set: func(g *Global, v string) (err error) {
		g.LogSize, err = parseSize(v)
		if err == nil && g.LogSize < 4096 {
			err = fmt.Errorf("%q: want at least 4K", v)
		}
		return err
	}},
	"control_socket": {set: func(g *Global, v string) error {
		if !strings.HasPrefix(v, "/") || len(v) > 107 {
			return fmt.Errorf("%q: want an absolute path of at most 107 bytes", v)
		}
		g.ControlSocket = v
		return nil
	}},
	"user":              {set: func(g *Global, v string) error { g.User = v; return nonEmpty(v) }},
	"group":             {set: func(g *Global, v string) error { g.Group = v; return nonEmpty(v) }},
	"max_memory":        {set: func(g *Global, v string) (err error) { g.MaxMemory, err = parseSize(v); return err }},
	"autotune":          {set: func(g *Global, v string) (err error) { g.Autotune, err = parseBool(v); return err }},
	"autotune_min_pipe": {set: func(g *Global, v string) error { return setPipeBound(&g.TuneMinPipe, v) }},
	"autotune_max_pipe": {set: func(g *Global, v string) error { return setPipeBound(&g.TuneMaxPipe, v) }},
	"autotune_min_loops": {set: func(g *Global, v string) (err error) {
		g.TuneMinLoops, err = parseInt(v, 1, 1024)
		return err
	}},
	"autotune_max_loops": {set: func(g *Global, v string) (err error) {
		g.TuneMaxLoops, err = parseInt(v, 1, 1024)
		return err
	}},
	"telemetry": {set: func(g *Global, v string) error {
		if v != "auto" && v != "proc" {
			return fmt.Errorf("%q: want auto or proc", v)
		}
		g.Telemetry = v
		return nil
	}},
	"max_pipes": {set: func(g *Global, v string) (err error) {
		g.MaxPipes, err = parseInt(v, -1, 1<<20)
		return err
	}},
	"pipe_size": {set: func(g *Global, v string) error {
		n, err := parseSize(v)
		if err == nil && n > 1<<30 {
			err = fmt.Errorf("%q: at most 1G", v)
		}
		g.PipeSize = int(n)
		return err
	}},
	"grace":               {set: func(g *Global, v string) (err error) { g.Grace, err = parseDuration(v); return err }},
	"accounting":          {set: func(g *Global, v string) (err error) { g.Accounting.Enabled, err = parseBool(v); return err }},
	"accounting_dir":      {set: setAccountingDir},
	"accounting_interval": {set: setAccountingInterval},
	"timezone":            {set: setTimezone},
}

// forwardTarget is what a forward section's options write to.
type forwardTarget struct {
	f       *Forward
	enabled *bool
}

// forwardSchema is the `config forward` section.
var forwardSchema = map[string]spec[*forwardTarget]{
	"enabled": {set: func(t *forwardTarget, v string) (err error) { *t.enabled, err = parseBool(v); return err }},
	"listen": {set: func(t *forwardTarget, v string) (err error) {
		t.f.Listen, err = endpoint.Parse(v)
		return err
	}},
	"upstream": {list: true, set: func(t *forwardTarget, v string) error {
		a, err := endpoint.Parse(v)
		if err != nil {
			return err
		}
		if a.Network != endpoint.Unix && a.Port == 0 {
			return fmt.Errorf("%q: port 0 cannot be connected to", v)
		}
		t.f.Upstreams = append(t.f.Upstreams, a)
		return nil
	}},
	"balance": {set: func(t *forwardTarget, v string) error {
		switch b := Balance(v); b {
		case RoundRobin, LeastConns:
			t.f.Balance = b
			return nil
		}
		return fmt.Errorf("%q: want %s or %s", v, RoundRobin, LeastConns)
	}},
	"interface": {set: func(t *forwardTarget, v string) (err error) { t.f.Interface, err = parseDevice(v); return err }},
	"connect_timeout": {set: func(t *forwardTarget, v string) (err error) {
		t.f.ConnectTimeout, err = parseDuration(v)
		if err == nil && t.f.ConnectTimeout == 0 {
			err = fmt.Errorf("%q: must be more than 0", v)
		}
		return err
	}},
	"idle_timeout": {set: func(t *forwardTarget, v string) (err error) { t.f.IdleTimeout, err = parseDuration(v); return err }},
	"max_conns": {set: func(t *forwardTarget, v string) (err error) {
		t.f.MaxConns, err = parseInt(v, 0, math.MaxInt32)
		return err
	}},
	"allow": {list: true, set: func(t *forwardTarget, v string) error {
		if _, err := allow.ParseRule(v); err != nil {
			return err
		}
		t.f.Allow = append(t.f.Allow, v)
		return nil
	}},
}

// parseDevice checks a network device (or OpenWrt logical interface) name.
func parseDevice(v string) (string, error) {
	if len(v) == 0 || len(v) > 15 || strings.ContainsAny(v, "/ \t:") {
		return "", fmt.Errorf("%q is not a network device name", v)
	}
	return v, nil
}

// checkInterfaceListen checks the listen address of a service that
// follows an interface: a TCP port only.
func checkInterfaceListen(s *Section, iface string, listen endpoint.Addr, fail failFunc) {
	if iface == "" || s.option("listen") == nil {
		return
	}
	line := s.option("listen").Line
	switch {
	case listen.Network == endpoint.Unix:
		fail("listen", line, "a unix socket cannot follow interface %q", iface)
	case listen.Host != "":
		fail("listen", line, "with option interface, give only the port (':%d'): the addresses are the interface's", listen.Port)
	}
}

func nonEmpty(v string) error {
	if v == "" {
		return errors.New("empty")
	}
	return nil
}

// parseInt parses a decimal integer from min to max.
func parseInt(v string, min, max int) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < min || n > max {
		return 0, fmt.Errorf("%q: want a whole number from %d to %d", v, min, max)
	}
	return n, nil
}

// parseBool accepts uci's spellings of true and false.
func parseBool(v string) (bool, error) {
	switch strings.ToLower(v) {
	case "1", "yes", "on", "true", "enabled":
		return true, nil
	case "0", "no", "off", "false", "disabled":
		return false, nil
	}
	return false, fmt.Errorf("%q: want 1 or 0 (yes/no, on/off, true/false)", v)
}

// parseDuration accepts a Go duration ("1m30s", "250ms") or whole seconds
// ("30"), as many uci configs write them.
func parseDuration(v string) (time.Duration, error) {
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q: want a duration such as 30s, 5m or 1h, or whole seconds", v)
	}
	return d, nil
}

// parseSize accepts bytes with an optional K, M or G suffix (powers of
// 1024), such as 24M.
func parseSize(v string) (int64, error) {
	bad := fmt.Errorf("%q: want a size such as 512K, 24M or 1G", v)
	num, mult := v, int64(1)
	if n := len(v); n > 0 {
		switch v[n-1] {
		case 'k', 'K':
			num, mult = v[:n-1], 1<<10
		case 'm', 'M':
			num, mult = v[:n-1], 1<<20
		case 'g', 'G':
			num, mult = v[:n-1], 1<<30
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<40)/mult {
		return 0, bad
	}
	return n * mult, nil
}

// setPipeBound parses a tuner pipe bound: a size from 4K to 1G.
func setPipeBound(dst *int, v string) error {
	n, err := parseSize(v)
	if err == nil && (n < 4096 || n > 1<<30) {
		err = fmt.Errorf("%q: want a size from 4K to 1G", v)
	}
	*dst = int(n)
	return err
}
