package tunnel

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"net/netip"
	"sync"
	"time"
)

// The token never crosses the wire: each side proves it knows it with an
// HMAC-SHA256 keyed by the token over both nonces, the name and a context
// string that keeps a MAC of one kind from being replayed as another.
const (
	ctxLogin  = "sluice-tunnel-1 login\x00"
	ctxServer = "sluice-tunnel-1 server\x00"
	ctxData   = "sluice-tunnel-1 data\x00"
)

func mac(token, context string, parts ...[]byte) (sum [MACLen]byte) {
	h := hmac.New(sha256.New, []byte(token))
	h.Write([]byte(context))
	for _, p := range parts {
		h.Write(p)
	}
	copy(sum[:], h.Sum(nil))
	return sum
}

// loginMAC is the client's proof on a control connection.
func loginMAC(token string, server, client [NonceLen]byte, name string) [MACLen]byte {
	return mac(token, ctxLogin, server[:], client[:], []byte(name))
}

// serverMAC is the server's proof in Welcome, over the client's nonce.
func serverMAC(token string, server, client [NonceLen]byte, session [SessionLen]byte) [MACLen]byte {
	return mac(token, ctxServer, client[:], server[:], session[:])
}

// dataMAC is the client's proof on a data connection.
func dataMAC(token string, server [NonceLen]byte, session [SessionLen]byte) [MACLen]byte {
	return mac(token, ctxData, server[:], session[:])
}

// macEqual compares in constant time.
func macEqual(a, b [MACLen]byte) bool { return hmac.Equal(a[:], b[:]) }

func nonce() (n [NonceLen]byte) {
	_, _ = rand.Read(n[:]) // crypto/rand.Read never fails (Go 1.24+)
	return n
}

func sessionID() (s [SessionLen]byte) {
	_, _ = rand.Read(s[:])
	return s
}

// Brute-force bounds: an address that failed maxFailures logins in a row
// is refused at accept for a penalty that doubles with each further
// failure, from failPenalty up to maxPenalty. A success clears it.
const (
	maxFailures  = 5
	failPenalty  = 10 * time.Second
	maxPenalty   = 10 * time.Minute
	maxFailAddrs = 4096 // remembered addresses; the oldest are forgotten first
)

// failures counts failed logins per client address (IPv6 by /64), shared by
// every loop.
type failures struct {
	mu    sync.Mutex
	addrs map[netip.Addr]*failRecord
}

type failRecord struct {
	n     int
	until time.Time // refused until then
	last  time.Time
}

// key folds an IPv6 address to its /64, so one host cannot rotate through
// its own addresses.
func failKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// blocked reports whether a is serving a penalty.
func (f *failures) blocked(a netip.Addr, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.addrs[failKey(a)]
	return r != nil && now.Before(r.until)
}

// fail records a failed login from a and returns the penalty it now
// serves (zero while under maxFailures).
func (f *failures) fail(a netip.Addr, now time.Time) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.addrs == nil {
		f.addrs = make(map[netip.Addr]*failRecord)
	}
	k := failKey(a)
	r := f.addrs[k]
	if r == nil {
		if len(f.addrs) >= maxFailAddrs {
			f.forgetOldest()
		}
		r = &failRecord{}
		f.addrs[k] = r
	}
	if now.Sub(r.last) > maxPenalty {
		r.n = 0 // an old streak is forgiven
	}
	r.n++
	r.last = now
	if r.n < maxFailures {
		return 0
	}
	d := failPenalty << min(r.n-maxFailures, 6)
	d = min(d, maxPenalty)
	r.until = now.Add(d)
	return d
}

// succeed clears a's record.
func (f *failures) succeed(a netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.addrs, failKey(a))
}

func (f *failures) forgetOldest() {
	var oldest netip.Addr
	var at time.Time
	for k, r := range f.addrs {
		if at.IsZero() || r.last.Before(at) {
			oldest, at = k, r.last
		}
	}
	delete(f.addrs, oldest)
}
