package config

import (
	"testing"
)

func TestParseClasses(t *testing.T) {
	text := `
config class 'kids'
	option rate_down '10mbit'
	option rate_up '512kbyte'
	option max_conns '8'

config class 'guests'
	option rate_down '1mbit'

config user 'alice'
	option password '` + hash + `'
	option class 'kids'

config user 'bob'
	option password '` + hash + `'
	option class 'kids'
	option rate_down '20mbit'
	option max_conns '2'

config user 'tv'
	option password '` + hash + `'
	list address '192.168.1.60'
	option class 'guests'
	option rate_up '64k'

config user 'carol'
	option password '` + hash + `'
	option class 'staff'

config user 'dave'
	option password '` + hash + `'
	option rate_up '1000'
`
	cfg, errs := Parse("test.conf", []byte(text))
	if errs != nil {
		t.Fatal(errs)
	}
	if len(cfg.Classes) != 2 {
		t.Fatalf("%d classes, want 2", len(cfg.Classes))
	}
	if c := cfg.Classes[0]; c.Name != "kids" || c.Line != 2 || c.Limits != (Limits{Up: 512000, Down: 1250000, MaxConns: 8}) {
		t.Errorf("class %+v", c)
	}
	tests := []struct {
		user string
		want Limits
	}{
		{"alice", Limits{Up: 512000, Down: 1250000, MaxConns: 8}}, // the class's
		{"bob", Limits{Up: 512000, Down: 2500000, MaxConns: 2}},   // overrides on top
		{"tv", Limits{Up: 64000, Down: 125000}},                   // address identity
		{"carol", Limits{}},                                       // class without a section: an ACL group
		{"dave", Limits{Up: 1000}},                                // no class, own limit
	}
	for _, tt := range tests {
		var u *User
		for i := range cfg.Users {
			if cfg.Users[i].Name == tt.user {
				u = &cfg.Users[i]
			}
		}
		if u == nil {
			t.Fatalf("no user %s", tt.user)
		}
		if got := cfg.LimitsOf(u); got != tt.want {
			t.Errorf("LimitsOf(%s) = %+v, want %+v", tt.user, got, tt.want)
		}
	}
	if (&Limits{}).IsZero() != true || (Limits{MaxConns: 1}).IsZero() {
		t.Error("IsZero")
	}
}

func TestParseClassErrors(t *testing.T) {
	const user = "config user 'u'\n\toption password '" + hash + "'\n"
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"unknown option", "config class 'kids'\n\toption rate '1mbit'\n",
			[]string{`f.conf:2: class 'kids': option 'rate': unknown option for a class section; known: max_conns, quota_bytes, quota_period, quota_time, rate_down, rate_up`}},
		{"bad rate", "config class 'kids'\n\toption rate_down '10 parsecs'\n",
			[]string{`f.conf:2: class 'kids': option 'rate_down': "10 parsecs": unknown unit`}},
		{"zero rate", "config class 'kids'\n\toption rate_up '0'\n",
			[]string{`f.conf:2: class 'kids': option 'rate_up': "0": less than 1 byte per second`}},
		{"zero conns", "config class 'kids'\n\toption max_conns '0'\n",
			[]string{`f.conf:2: class 'kids': option 'max_conns': "0": want a whole number from 1 to`}},
		{"no name", "config class\n\toption rate_up '1mbit'\n",
			[]string{`f.conf:1: class (anonymous, line 1): a class section needs a name`}},
		{"duplicate", "config class 'a'\nconfig class 'a'\n",
			[]string{`f.conf:2: class 'a': duplicate name: class 'a' is already defined on line 1`}},
		{"bad user override", user + "\toption rate_down 'fast'\n",
			[]string{`f.conf:3: user 'u': option 'rate_down': "fast": no number`}},
		{"bad user max_conns", user + "\toption max_conns '-1'\n",
			[]string{`f.conf:3: user 'u': option 'max_conns': "-1": want a whole number from 1 to`}},
		{"list rate", "config class 'kids'\n\tlist rate_up '1mbit'\n",
			[]string{"f.conf:2: class 'kids': option 'rate_up': takes one value"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantErrors(t, tt.in, tt.want)
		})
	}
}
