package config

import (
	"math"

	"github.com/sluice-proxy/sluice/pkg/ratelimit"
)

// Limits are the rate and connection limits of a class or the overrides
// of one user. A zero field means no limit (in a class) or the class's
// value (in a user).
type Limits struct {
	// Up is the rate in bytes per second of what a user sends (requests,
	// uploads, the client-to-server half of tunnels); Down of what a user
	// receives.
	Up, Down int64
	// MaxConns bounds a user's live client connections.
	MaxConns int
}

// Class is one `config class 'NAME'` section: the limits every user of the
// class gets, each user on their own (two users of a class each get the
// class's rate; a user's connections share it).
type Class struct {
	Name string
	Line int
	Limits
	// Quota is the class's traffic and time quota (see accounting.go).
	Quota Quota
}

// Over returns l with the non-zero fields of o in place of its own.
func (l Limits) Over(o Limits) Limits {
	if o.Up != 0 {
		l.Up = o.Up
	}
	if o.Down != 0 {
		l.Down = o.Down
	}
	if o.MaxConns != 0 {
		l.MaxConns = o.MaxConns
	}
	return l
}

// IsZero reports whether l limits nothing.
func (l Limits) IsZero() bool { return l == Limits{} }

// LimitsOf returns the limits of user u: its class's, if a `config class`
// section of that name exists, with u's own overrides on top. A class
// without a section is only an ACL group and limits nothing.
func (c *Config) LimitsOf(u *User) Limits {
	var l Limits
	for i := range c.Classes {
		if c.Classes[i].Name == u.Class {
			l = c.Classes[i].Limits
			break
		}
	}
	return l.Over(u.Limits)
}

// setRate parses a rate option into dst.
func setRate(dst *int64, v string) (err error) {
	*dst, err = ratelimit.ParseRate(v)
	return err
}

// setMaxConns parses a per-user connection limit into dst.
func setMaxConns(dst *int, v string) (err error) {
	*dst, err = parseInt(v, 1, math.MaxInt32)
	return err
}

// classSchema is the `config class` section.
var classSchema = map[string]spec[*Class]{
	"rate_up":      {set: func(c *Class, v string) error { return setRate(&c.Up, v) }},
	"rate_down":    {set: func(c *Class, v string) error { return setRate(&c.Down, v) }},
	"max_conns":    {set: func(c *Class, v string) error { return setMaxConns(&c.MaxConns, v) }},
	"quota_bytes":  {set: func(c *Class, v string) error { return setQuotaBytes(&c.Quota, v) }},
	"quota_time":   {set: func(c *Class, v string) error { return setQuotaTime(&c.Quota, v) }},
	"quota_period": {set: func(c *Class, v string) error { return setQuotaPeriod(&c.Quota, v) }},
}

// parseClassSection handles the class section type; it reports whether s
// was one.
func parseClassSection(cfg *Config, s *Section, fail failFunc) bool {
	if s.Type != "class" {
		return false
	}
	c := Class{Name: s.Name, Line: s.Line}
	if c.Name == "" {
		fail("", s.Line, "a class section needs a name: config class 'NAME'")
	}
	applyOptions(s, classSchema, &c, fail)
	cfg.Classes = append(cfg.Classes, c)
	return true
}
