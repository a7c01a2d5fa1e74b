package acl

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseRule parses one rule in the text form used by the config file and
// the command line: an action, then KEY VALUE pairs whose values may be
// comma-separated lists:
//
//	deny dest 10.0.0.0/8,192.168.0.0/16
//	allow client 192.168.1.0/24 method GET,HEAD host .example.com port 80,443
//	deny user guest host *.ads.*
//
// Keys: client (CIDR), user, class, method, host (pattern), dest (CIDR),
// port (port, LO-HI or *), time (HH:MM-HH:MM, local time; may wrap past
// midnight).
func ParseRule(s string) (Rule, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return Rule{}, fmt.Errorf("empty rule")
	}
	var r Rule
	switch f[0] {
	case "allow":
		r.Action = Allow
	case "deny":
		r.Action = Deny
	default:
		return Rule{}, fmt.Errorf("rule %q: starts with %q, want allow or deny", s, f[0])
	}
	if len(f)%2 != 1 {
		return Rule{}, fmt.Errorf("rule %q: want KEY VALUE pairs after %s", s, f[0])
	}
	for i := 1; i < len(f); i += 2 {
		key := f[i]
		for _, v := range strings.Split(f[i+1], ",") {
			if v == "" {
				return Rule{}, fmt.Errorf("rule %q: empty value for %s", s, key)
			}
			if err := r.add(key, v); err != nil {
				return Rule{}, fmt.Errorf("rule %q: %w", s, err)
			}
		}
	}
	return r, nil
}

func (r *Rule) add(key, v string) error {
	switch key {
	case "client", "dest":
		p, err := ParsePrefix(v)
		if err != nil {
			return err
		}
		if key == "client" {
			r.Clients = append(r.Clients, p)
		} else {
			r.Dests = append(r.Dests, p)
		}
	case "user":
		r.Users = append(r.Users, v)
	case "class":
		r.Classes = append(r.Classes, v)
	case "time":
		tr, err := parseTimeRange(v)
		if err != nil {
			return err
		}
		r.Times = append(r.Times, tr)
	case "method":
		for i := 0; i < len(v); i++ {
			if c := v[i]; c < 'A' || c > 'Z' {
				return fmt.Errorf("method %q: want upper-case letters", v)
			}
		}
		r.Methods = append(r.Methods, v)
	case "host":
		h := strings.ToLower(v)
		if strings.ContainsAny(h, "/:@ ") || strings.Trim(h, ".") == "" {
			return fmt.Errorf("host %q: want a name or pattern such as example.com, .example.com or *.example.com", v)
		}
		if !strings.HasPrefix(h, ".") && !strings.Contains(h, "*") {
			h, _ = CanonicalHost(h)
		}
		r.Hosts = append(r.Hosts, h)
	case "port":
		p, err := ParsePorts(v)
		if err != nil {
			return err
		}
		r.Ports = append(r.Ports, p)
	default:
		return fmt.Errorf("unknown key %q: want client, user, class, method, host, dest, port or time", key)
	}
	return nil
}

// parseTimeRange parses HH:MM-HH:MM (24:00 allowed as an end).
func parseTimeRange(v string) (TimeRange, error) {
	from, to, ok := strings.Cut(v, "-")
	a, errA := parseClock(from)
	b, errB := parseClock(to)
	if !ok || errA != nil || errB != nil || a == b || a == 24*60 {
		return TimeRange{}, fmt.Errorf("time %q: want HH:MM-HH:MM, such as 08:00-17:30 or 22:00-06:00", v)
	}
	return TimeRange{From: a, To: b}, nil
}

func parseClock(s string) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	if !ok || len(h) != 2 || len(m) != 2 {
		return 0, fmt.Errorf("bad clock %q", s)
	}
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if err1 != nil || err2 != nil || hh < 0 || mm < 0 || mm > 59 || hh > 24 || hh == 24 && mm != 0 {
		return 0, fmt.Errorf("bad clock %q", s)
	}
	return hh*60 + mm, nil
}
