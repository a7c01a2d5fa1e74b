package httpproxy

import (
	"net/netip"
	"time"
)

// DNS answers are kept per loop for a short while: a page's many requests
// to one host cost one lookup in the blocking pool instead of one each.
// The resolver does not tell TTLs, so the time is fixed and short.
const (
	dnsTTL      = 30 * time.Second
	dnsCacheMax = 512
)

// dnsCache is one loop's recent lookups; only its loop touches it.
type dnsCache struct {
	m map[string]dnsEntry
}

type dnsEntry struct {
	addrs   []netip.Addr
	expires time.Duration // loop clock
}

// get returns a copy of the cached addresses of host, if fresh.
func (d *dnsCache) get(host string, now time.Duration) ([]netip.Addr, bool) {
	e, ok := d.m[host]
	if !ok {
		return nil, false
	}
	if now >= e.expires {
		delete(d.m, host)
		return nil, false
	}
	return append([]netip.Addr(nil), e.addrs...), true
}

// put remembers a successful lookup; when full, expired entries go first,
// else an arbitrary one.
func (d *dnsCache) put(host string, addrs []netip.Addr, now time.Duration) {
	if len(addrs) == 0 {
		return
	}
	if d.m == nil {
		d.m = make(map[string]dnsEntry)
	}
	if len(d.m) >= dnsCacheMax {
		for k, e := range d.m {
			if now >= e.expires {
				delete(d.m, k)
			}
		}
		for k := range d.m {
			if len(d.m) < dnsCacheMax {
				break
			}
			delete(d.m, k)
		}
	}
	d.m[host] = dnsEntry{addrs: append([]netip.Addr(nil), addrs...), expires: now + dnsTTL}
}
