package config

import (
	"strings"
	"testing"
	"time"

	"github.com/sluice-proxy/sluice/pkg/acl"
)

// hash is a bcrypt hash of "pw" at cost 4.
const hash = "$2a$04$Jo8bBfNbMO1QK4wz3wYsq.1BWLh9j6r.BNsydz2VJyFmb0FyvUZFu"

func TestParseHTTPProxy(t *testing.T) {
	text := `
config user 'alice'
	option password '` + hash + `'
	list address '192.168.1.50'
	option class 'kids'

config http_proxy 'lan'
	option listen ':3128'
	option auth '1'
	option forwarded_for 'yes'
	option header_timeout '5s'
	option max_conns '100'
	list rule 'deny dest 10.0.0.0/8'
	list rule 'allow user alice'
	list rule 'deny class kids time 21:00-07:00'
	option default 'deny'
	list connect_port '443'
	list connect_port '8443-8444'

config http_proxy 'off'
	option enabled '0'
	option listen ':3129'
`
	cfg, errs := Parse("test.conf", []byte(text))
	if errs != nil {
		t.Fatal(errs)
	}
	if len(cfg.HTTPProxies) != 1 || len(cfg.Users) != 1 {
		t.Fatalf("%d proxies, %d users", len(cfg.HTTPProxies), len(cfg.Users))
	}
	h := cfg.HTTPProxies[0]
	if h.Name != "lan" || h.Listen.Port != 3128 || !h.Auth || !h.ForwardedFor || h.HeaderTimeout != 5*time.Second || h.MaxConns != 100 {
		t.Errorf("proxy %+v", h)
	}
	if len(h.ACL.Rules) != 3 || h.ACL.Default != acl.Deny || len(h.ACL.ConnectPorts) != 2 {
		t.Errorf("acl %+v", h.ACL)
	}
	if u := cfg.Users[0]; u.Name != "alice" || u.Hash != hash || len(u.Addresses) != 1 || u.Class != "kids" {
		t.Errorf("user %+v", u)
	}
	if len(cfg.HTTPDisabled) != 1 || cfg.HTTPDisabled[0] != "off" || len(cfg.Disabled) != 0 {
		t.Errorf("disabled %v, http disabled %v", cfg.Disabled, cfg.HTTPDisabled)
	}
}

func TestParseHTTPTransparentModes(t *testing.T) {
	tests := []struct {
		value               string
		transparent, tproxy bool
	}{
		{"0", false, false},
		{"1", true, false},
		{"yes", true, false},
		{"redirect", true, false},
		{"tproxy", true, true},
	}
	for _, tt := range tests {
		text := "config http_proxy 'a'\n\toption listen ':3128'\n\toption interface 'br-lan'\n\toption transparent '" + tt.value + "'\n"
		cfg, errs := Parse("t.conf", []byte(text))
		if errs != nil {
			t.Fatalf("%s: %v", tt.value, errs)
		}
		h := cfg.HTTPProxies[0]
		if h.Transparent != tt.transparent || h.TProxy != tt.tproxy || h.Interface != "br-lan" {
			t.Errorf("transparent %q: got transparent=%v tproxy=%v interface=%q", tt.value, h.Transparent, h.TProxy, h.Interface)
		}
	}
}

func TestParseHTTPProxyErrors(t *testing.T) {
	tests := []struct{ name, text, want string }{
		{"no listen", "config http_proxy 'a'\n\toption auth '0'\n", "option 'listen': missing"},
		{"auth without users", "config http_proxy 'a'\n\toption listen ':1'\n\toption auth '1'\n", "no `config user`"},
		{"bad rule", "config http_proxy 'a'\n\toption listen ':1'\n\tlist rule 'deny dest nowhere'\n", "not an address"},
		{"bad default", "config http_proxy 'a'\n\toption listen ':1'\n\toption default 'maybe'\n", "want allow or deny"},
		{"zero timeout", "config http_proxy 'a'\n\toption listen ':1'\n\toption read_timeout '0'\n", "more than 0"},
		{"vsock", "config http_proxy 'a'\n\toption listen 'vsock:any:1'\n", "TCP or a unix socket"},
		{"same listen as forward", "config forward 'f'\n\toption listen '127.0.0.1:5000'\n\tlist upstream '127.0.0.1:1'\nconfig http_proxy 'a'\n\toption listen '127.0.0.1:5000'\n", "already the listen address of forward 'f'"},
		{"plain password", "config user 'u'\n\toption password 'secret'\n", "want bcrypt"},
		{"user without password", "config user 'u'\n\tlist address '10.0.0.1'\n", "option 'password': missing"},
		{"anonymous user", "config user\n\toption password '" + hash + "'\n", "needs a name"},
		{"bad transparent", "config http_proxy 'a'\n\toption listen ':1'\n\toption transparent 'dnat'\n", "want 0, 1, redirect or tproxy"},
		{"bad interface", "config http_proxy 'a'\n\toption listen ':1'\n\toption interface 'br lan'\n", "not a network device name"},
		{"interface with host", "config http_proxy 'a'\n\toption listen '10.0.0.1:3128'\n\toption interface 'br-lan'\n", "give only the port (':3128')"},
		{"interface with unix", "config http_proxy 'a'\n\toption listen 'unix:/tmp/p'\n\toption interface 'br-lan'\n", "cannot follow interface"},
	}
	for _, tt := range tests {
		_, errs := Parse("t.conf", []byte(tt.text))
		if errs == nil || !strings.Contains(errs.Error(), tt.want) {
			t.Errorf("%s: errors %v, want one containing %q", tt.name, errs, tt.want)
		}
	}
}

func TestParseHTTPCache(t *testing.T) {
	text := `
config http_proxy 'cache'
	option listen ':3128'
	option cache_size '64M'
	option cache_max_object '512K'
	option cache_dir '/var/cache/sluice'
	option cache_dir_size '1G'
`
	cfg, errs := Parse("t.conf", []byte(text))
	if errs != nil {
		t.Fatal(errs)
	}
	h := cfg.HTTPProxies[0]
	if h.CacheSize != 64<<20 || h.CacheMaxObject != 512<<10 || h.CacheDir != "/var/cache/sluice" || h.CacheDirSize != 1<<30 {
		t.Errorf("cache options: %d %d %q %d", h.CacheSize, h.CacheMaxObject, h.CacheDir, h.CacheDirSize)
	}
	two := "config http_proxy 'a'\n\toption listen ':3128'\n\toption cache_size '1M'\n\toption cache_dir '/c'\n\n" +
		"config http_proxy 'b'\n\toption listen ':3129'\n\toption cache_size '1M'\n\toption cache_dir '/c/'\n"
	if _, errs := Parse("t.conf", []byte(two)); errs == nil || !strings.Contains(errs.Error(), "t.conf:6") || !strings.Contains(errs.Error(), "already the cache_dir of http_proxy 'a'") {
		t.Errorf("two proxies in one cache_dir: %v", errs)
	}
	if _, errs := Parse("t.conf", []byte("config http_proxy 'x'\n\toption listen ':3128'\n\toption cache_dir '/c'\n")); errs == nil ||
		!strings.Contains(errs.Error(), "t.conf:3") || !strings.Contains(errs.Error(), "cache_size") {
		t.Errorf("cache_dir without cache_size: %v", errs)
	}
	if _, errs := Parse("t.conf", []byte("config http_proxy 'x'\n\toption listen ':3128'\n\toption cache_size '1M'\n\toption cache_dir 'cache'\n")); errs == nil ||
		!strings.Contains(errs.Error(), "t.conf:4") || !strings.Contains(errs.Error(), "absolute") {
		t.Errorf("relative cache_dir: %v", errs)
	}
}
