package config

import (
	"strings"
	"testing"
	"time"
)

func TestParseSOCKS5(t *testing.T) {
	text := `
config user 'alice'
	option password '` + hash + `'

config socks5 'lan'
	list listen '127.0.0.1:1080'
	list listen '[::1]:1080'
	option auth '1'
	option handshake_timeout '5s'
	option max_conns '100'
	option access_log '1'
	list rule 'deny dest 10.0.0.0/8'
	option default 'allow'
	list connect_port '1-1023'

config socks5 'off'
	option enabled '0'
	option listen ':1081'
`
	cfg, errs := Parse("test.conf", []byte(text))
	if errs != nil {
		t.Fatal(errs)
	}
	if len(cfg.SOCKS5) != 1 || len(cfg.SOCKS5Disabled) != 1 {
		t.Fatalf("sections: %+v, disabled %v", cfg.SOCKS5, cfg.SOCKS5Disabled)
	}
	s := cfg.SOCKS5[0]
	if len(s.Listen) != 2 || !s.Auth || !s.AccessLog || s.HandshakeTimeout != 5*time.Second || s.MaxConns != 100 ||
		len(s.ACL.Rules) != 1 || len(s.ACL.ConnectPorts) != 1 {
		t.Errorf("parsed %+v", s)
	}
	if got, want := s.ListenKey(), "|tcp:127.0.0.1:1080,tcp:[::1]:1080"; got != want {
		t.Errorf("key %q, want %q", got, want)
	}
}

func TestSOCKS5Errors(t *testing.T) {
	for _, tt := range []struct{ name, text, want string }{
		{"no listen", "config socks5 'x'\n", "test.conf:1: socks5 'x': option 'listen': missing"},
		{"unix", "config socks5 'x'\n\toption listen 'unix:/tmp/s'\n", "test.conf:2: socks5 'x': option 'listen': \"unix:/tmp/s\": a SOCKS5 server listens on TCP"},
		{"auth without users", "config socks5 'x'\n\toption listen ':1080'\n\toption auth '1'\n", "auth is on but no `config user` section exists"},
		{"bad rule", "config socks5 'x'\n\toption listen ':1080'\n\tlist rule 'permit all'\n", "test.conf:3: socks5 'x': option 'rule': rule"},
		{"taken", "config http_proxy 'h'\n\toption listen ':1080'\nconfig socks5 'x'\n\toption listen ':1080'\n", "is already the listen address of http_proxy 'h'"},
		{"two ports with interface", "config socks5 'x'\n\toption interface 'br-lan'\n\tlist listen ':1080'\n\tlist listen ':1081'\n", "with option interface, give one port"},
		{"unknown option", "config socks5 'x'\n\toption listen ':1080'\n\toption udp '1'\n", "test.conf:3: socks5 'x': option 'udp': unknown option"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, errs := Parse("test.conf", []byte(tt.text))
			if errs == nil || !strings.Contains(errs.Error(), tt.want) {
				t.Errorf("errors %v, want %q", errs, tt.want)
			}
		})
	}
}
