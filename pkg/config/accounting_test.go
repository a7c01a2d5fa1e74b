package config

import (
	"strings"
	"testing"
	"time"
)

func TestParseAccounting(t *testing.T) {
	text := `
config sluice 'main'
	option accounting_dir '/srv/sluice'
	option accounting_interval '1m'
	option timezone 'CET-1CEST,M3.5.0,M10.5.0/3'

config class 'kids'
	option quota_bytes '2G'
	option quota_period 'day'
	option quota_time '2h'

config user 'alice'
	option password '` + hash + `'
	option class 'kids'
	option quota_bytes '500M'

config user 'bob'
	option password '` + hash + `'
	option quota_time '10h'

config user 'carol'
	option password '` + hash + `'
`
	cfg, errs := Parse("test.conf", []byte(text))
	if errs != nil {
		t.Fatal(errs)
	}
	a := cfg.Global.Accounting
	if !a.Enabled || a.Dir != "/srv/sluice" || a.Interval != time.Minute || a.Timezone != "CET-1CEST,M3.5.0,M10.5.0/3" {
		t.Errorf("accounting %+v", a)
	}
	for i, want := range []Quota{
		{Period: "day", Bytes: 500 << 20, Time: 2 * time.Hour}, // class, bytes overridden
		{Period: "month", Time: 10 * time.Hour},                // own quota, default period
		{Period: "month"},                                      // none
	} {
		if got := cfg.QuotaOf(&cfg.Users[i]); got != want {
			t.Errorf("QuotaOf(%s) = %+v, want %+v", cfg.Users[i].Name, got, want)
		}
	}
}

func TestAccountingDefaults(t *testing.T) {
	cfg, errs := Parse("test.conf", []byte("config sluice 'main'\n"))
	if errs != nil {
		t.Fatal(errs)
	}
	a := cfg.Global.Accounting
	if !a.Enabled || a.Dir != DefaultAccountingDir || a.Interval != DefaultAccountingInterval || a.Timezone != "" {
		t.Errorf("defaults %+v", a)
	}
}

func TestAccountingErrors(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"config sluice 'main'\n\toption accounting_dir 'relative'\n", `test.conf:2: sluice 'main': option 'accounting_dir': "relative": want an absolute directory path`},
		{"config sluice 'main'\n\toption accounting_interval '10ms'\n", `test.conf:2: sluice 'main': option 'accounting_interval': "10ms": want at least 1s`},
		{"config sluice 'main'\n\toption timezone 'Nowhere/Atlantis'\n", `test.conf:2: sluice 'main': option 'timezone': "Nowhere/Atlantis": want a zone name`},
		{"config sluice 'main'\n\toption accounting 'maybe'\n", `test.conf:2: sluice 'main': option 'accounting': "maybe": want 1 or 0`},
		{"config class 'k'\n\toption quota_period 'year'\n", `test.conf:2: class 'k': option 'quota_period': "year": want day, week or month`},
		{"config class 'k'\n\toption quota_bytes '0'\n", `test.conf:2: class 'k': option 'quota_bytes': "0": must be more than 0`},
		{"config class 'k'\n\n\toption quota_time '30s'\n", `test.conf:3: class 'k': option 'quota_time': "30s": want at least 1m`},
		{"config user 'u'\n\toption password '" + hash + "'\n\toption quota_bytes 'lots'\n", `test.conf:3: user 'u': option 'quota_bytes': "lots": want a size`},
	} {
		_, errs := Parse("test.conf", []byte(tc.text))
		if errs == nil || !strings.HasPrefix(errs.Error(), tc.want) {
			t.Errorf("%q:\n got  %v\n want %s...", tc.text, errs, tc.want)
		}
	}
}
