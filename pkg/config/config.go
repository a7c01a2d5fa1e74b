// Package config reads sluice's configuration: a UCI file (OpenWrt's
// /etc/config/sluice, or /etc/sluice.conf elsewhere, same syntax) checked
// against a typed schema with defaults.
//
//	config sluice 'main'
//		option log_level 'info'
//		option max_memory '24M'
//
//	config forward 'web'
//		option listen ':8080'
//		list upstream '192.168.1.10:80'
//		list upstream '192.168.1.11:80'
//
// docs/CONFIG.md lists every option. Unknown sections and options, bad
// values and duplicate names are errors naming the file, line and option;
// Parse returns all of them at once.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"time"

	"github.com/sluice-proxy/sluice/pkg/endpoint"
)

// Default file locations: OpenWrt's UCI file first, then the plain one.
const (
	UCIPath   = "/etc/config/sluice"
	PlainPath = "/etc/sluice.conf"
)

// Defaults of the global section.
const (
	DefaultControlSocket = "/var/run/sluice.sock"
	DefaultLogSize       = 1 << 20
	DefaultGrace         = 10 * time.Second
	DefaultConnect       = 10 * time.Second
)

// Balance says how a forward with several upstreams picks one.
type Balance string

// Balance values.
const (
	RoundRobin Balance = "round_robin" // each new connection goes to the next upstream
	LeastConns Balance = "least_conns" // to the upstream with the fewest live connections
)

// Config is a checked configuration.
type Config struct {
	File     string    // where it was read from
	Global   Global    // the `config sluice` section, or defaults
	Forwards []Forward // enabled forward sections, in file order
	// HTTPProxies are the enabled http_proxy sections; Users the user
	// sections (see http.go).
	HTTPProxies  []HTTPProxy
	HTTPDisabled []string // http_proxy sections with `option enabled '0'`
	Users        []User
	// Classes are the `config class` sections (see class.go).
	Classes []Class
	// SOCKS5 are the enabled socks5 sections (see socks5.go).
	SOCKS5         []SOCKS5
	SOCKS5Disabled []string // socks5 sections with `option enabled '0'`
	// Disabled names the forward sections with `option enabled '0'`.
	Disabled []string
}

// Global is the `config sluice 'main'` section. Its zero value is not the
// default: Parse fills in the defaults documented on each field.
type Global struct {
	// Loops is the number of event loops; 0 (the default) means one per
	// CPU. A change takes effect on restart.
	Loops int
	// LogLevel is the least severe level logged; default info.
	LogLevel slog.Level
	// Log is "stderr" (the default), "syslog" or a file path.
	Log string
	// LogSize caps a log file: past it the file is renamed to FILE.1 and
	// a new one started. Default DefaultLogSize.
	LogSize int64
	// ControlSocket is the unix socket of `sluice stats` and `sluice
	// reload`; default DefaultControlSocket.
	ControlSocket string
	// User and Group, if set, are dropped to once every listener is bound.
	User, Group string
	// MaxMemory, if not 0, is the memory in bytes past which new
	// connections are refused; GOMEMLIMIT is derived from it.
	MaxMemory int64
	// Autotune switches the tuner on (the default): while traffic flows
	// it sizes pipes, copy buffers and socket buffers and sets how many
	// loops accept, within the bounds below. Off, PipeSize applies as set.
	Autotune bool
	// TuneMinPipe and TuneMaxPipe bound the pipe size the tuner picks
	// (0: the tuner's defaults, 16K and 1M); TuneMinLoops and TuneMaxLoops
	// bound the loops that accept (0: 1 and every loop).
	TuneMinPipe, TuneMaxPipe   int
	TuneMinLoops, TuneMaxLoops int
	// Telemetry is "auto" (eBPF where the kernel allows, /proc otherwise;
	// the default) or "proc" (never load eBPF).
	Telemetry string
	// MaxPipes bounds the splice pipes in existence (0: relay's default,
	// -1: never splice). PipeSize is the bytes a pipe holds (0: default).
	MaxPipes, PipeSize int
	// Grace is how long live connections get to finish on SIGTERM;
	// default DefaultGrace.
	Grace time.Duration
	// Accounting are the accounting options (see accounting.go).
	Accounting Accounting
	// Line is where the section starts; 0 when the file has none.
	Line int
}

// Forward is one `config forward 'NAME'` section.
type Forward struct {
	Name string
	Line int // line of the config statement
	// Listen is the address to accept on. With Interface set, its host is
	// empty and only the port and network count.
	Listen endpoint.Addr
	// Interface, if set, names a network device: sluice listens on each
	// of its addresses and follows them as they come and go.
	Interface string
	// Upstreams are tried per Balance; at least one.
	Upstreams []endpoint.Addr
	// Balance picks the upstream of each connection; default RoundRobin.
	Balance Balance
	// ConnectTimeout bounds one connect to an upstream; default
	// DefaultConnect.
	ConnectTimeout time.Duration
	// IdleTimeout closes connections idle this long; 0 (default): never.
	IdleTimeout time.Duration
	// MaxConns bounds live connections; 0 (default): no bound.
	MaxConns int
	// Allow, from `list allow`, are the upstream addresses connections
	// may go to (allow.Parse rules: HOST:PORT, ADDR:PORT, CIDR:PORT,
	// [IPv6]:PORT; PORT a number, LO-HI or *); empty allows every address. Checked on every
	// resolved address, so a name that resolves elsewhere is refused.
	Allow []string
}

// DefaultPath returns UCIPath when it exists, else PlainPath.
func DefaultPath() string {
	if _, err := os.Stat(UCIPath); err == nil {
		return UCIPath
	}
	return PlainPath
}

// Load reads and checks the file at path. The error is an Errors listing
// every problem, or the error reading the file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("read config: %w (use -c FILE to name another)", err)
		}
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, errs := Parse(path, data)
	if errs != nil {
		return nil, errs
	}
	return cfg, nil
}

// Parse checks the UCI text data, read from file (used in messages). It
// returns every error found; cfg is nil when there is any.
func Parse(file string, data []byte) (*Config, Errors) {
	secs, errs := ParseUCI(file, data)
	cfg := &Config{File: file, Global: defaultGlobal()}
	seen := map[string]*Section{} // "type name" -> first section
	globals := 0
	for _, s := range secs {
		fail := func(option string, line int, format string, args ...any) {
			errs = append(errs, &Error{File: file, Line: line, Section: s.label(), Option: option, Msg: fmt.Sprintf(format, args...)})
		}
		if s.Name != "" {
			key := s.Type + " " + s.Name
			if first, ok := seen[key]; ok {
				fail("", s.Line, "duplicate name: %s '%s' is already defined on line %d", s.Type, s.Name, first.Line)
				continue
			}
			seen[key] = s
		}
		switch s.Type {
		case "sluice":
			globals++
			if globals > 1 {
				fail("", s.Line, "more than one sluice section; settings belong in one `config sluice 'main'`")
				continue
			}
			cfg.Global.Line = s.Line
			applyOptions(s, globalSchema, &cfg.Global, fail)
		case "forward":
			f := Forward{Name: s.Name, Line: s.Line, Balance: RoundRobin, ConnectTimeout: DefaultConnect}
			if f.Name == "" {
				f.Name = fmt.Sprintf("forward_line%d", s.Line)
			}
			enabled := true
			fwd := &forwardTarget{f: &f, enabled: &enabled}
			applyOptions(s, forwardSchema, fwd, fail)
			checkForward(s, &f, fail)
			if enabled {
				cfg.Forwards = append(cfg.Forwards, f)
			} else {
				cfg.Disabled = append(cfg.Disabled, f.Name)
			}
		default:
			if !parseHTTPSection(cfg, s, fail) && !parseClassSection(cfg, s, fail) && !parseSOCKS5Section(cfg, s, fail) {
				fail("", s.Line, "unknown section type %q: want sluice, forward, http_proxy, socks5, user or class", s.Type)
			}
		}
	}
	errs = append(errs, checkListeners(file, cfg.Forwards)...)
	errs = append(errs, checkHTTP(cfg)...)
	errs = append(errs, checkSOCKS5(cfg)...)
	if len(errs) > 0 {
		sortErrors(errs)
		return nil, errs
	}
	return cfg, nil
}

func defaultGlobal() Global {
	return Global{
		LogLevel:      slog.LevelInfo,
		Log:           "stderr",
		LogSize:       DefaultLogSize,
		ControlSocket: DefaultControlSocket,
		Grace:         DefaultGrace,
		Autotune:      true,
		Telemetry:     "auto",
		Accounting:    Accounting{Enabled: true, Dir: DefaultAccountingDir, Interval: DefaultAccountingInterval},
	}
}

// checkForward checks what needs several options at once.
func checkForward(s *Section, f *Forward, fail func(option string, line int, format string, args ...any)) {
	if s.option("upstream") == nil && !s.Broken {
		fail("upstream", s.Line, "missing: add at least one `list upstream 'HOST:PORT'`")
	}
	if s.option("listen") == nil {
		if !s.Broken {
			fail("listen", s.Line, "missing: add `option listen 'HOST:PORT'`")
		}
		return
	}
	checkInterfaceListen(s, f.Interface, f.Listen, fail)
}

// checkListeners rejects two forwards on the same address.
func checkListeners(file string, fs []Forward) Errors {
	var errs Errors
	first := map[string]Forward{}
	for _, f := range fs {
		key := f.Interface + "|" + f.Listen.String()
		if f.Listen.Port == 0 && f.Listen.Network != endpoint.Unix {
			continue // port 0: the kernel picks a different one each time
		}
		if prev, ok := first[key]; ok {
			errs = append(errs, &Error{File: file, Line: f.Line, Section: fmt.Sprintf("forward '%s'", f.Name), Option: "listen",
				Msg: fmt.Sprintf("%s is already the listen address of forward '%s' (line %d)", f.Listen, prev.Name, prev.Line)})
			continue
		}
		first[key] = f
	}
	return errs
}

func sortErrors(es Errors) {
	// Insertion sort by line, stable: files are small and errors few.
	for i := 1; i < len(es); i++ {
		for j := i; j > 0 && es[j].Line < es[j-1].Line; j-- {
			es[j], es[j-1] = es[j-1], es[j]
		}
	}
}

// ControlSocketOf returns the control socket the file at path names,
// looking at that one option only, so that `sluice reload` and `sluice
// stats` still reach a running daemon after its file was broken by an
// edit. It falls back to DefaultControlSocket.
func ControlSocketOf(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return DefaultControlSocket
	}
	secs, _ := ParseUCI(path, data)
	for _, s := range secs {
		if s.Type != "sluice" {
			continue
		}
		if o := s.option("control_socket"); o != nil && len(o.Values) == 1 && o.Values[0] != "" {
			return o.Values[0]
		}
	}
	return DefaultControlSocket
}
