// Package auth holds proxy users and checks their credentials: bcrypt
// password hashes (golang.org/x/crypto/bcrypt), HTTP Basic
// Proxy-Authorization, identities by client address for devices that
// cannot send credentials, a small cache of recent successes and a limit
// on failed attempts per client address.
//
// Verify is slow on purpose (bcrypt); callers on an event loop run it in
// the reactor's blocking pool and use Cached first. A Users value is safe
// for concurrent use.
package auth

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Defaults of Config.
const (
	DefaultCacheTTL    = 5 * time.Minute
	DefaultCacheSize   = 256
	DefaultMaxFailures = 5
	DefaultFailWindow  = time.Minute
)

// User is one account.
type User struct {
	Name string
	// Hash is a bcrypt hash ($2a$, $2b$ or $2y$), as htpasswd -B makes.
	Hash string
	// Class, if set, groups the user with others for ACL rules.
	Class string
}

// AddrUser maps a client address range to a user, for devices that cannot
// send credentials.
type AddrUser struct {
	Prefix netip.Prefix
	User   string
}

// Config sets up Users. Zero fields take the defaults.
type Config struct {
	Users  []User
	ByAddr []AddrUser
	// CacheTTL is how long a verified name and password are remembered.
	CacheTTL time.Duration
	// CacheSize bounds the remembered successes.
	CacheSize int
	// MaxFailures failed attempts from one client address within
	// FailWindow make further attempts from it fail at once until the
	// window has passed.
	MaxFailures int
	FailWindow  time.Duration
}

// Users checks credentials.
type Users struct {
	hashes  map[string][]byte
	classes map[string]string
	byAddr  []AddrUser
	cfg     Config

	mu       sync.Mutex
	cache    map[[32]byte]time.Time // sha256(name NUL password) -> expiry
	failures map[netip.Addr]*failures
}

type failures struct {
	n     int
	since time.Time
}

// New checks every hash and returns the users.
func New(cfg Config) (*Users, error) {
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = DefaultCacheSize
	}
	if cfg.MaxFailures <= 0 {
		cfg.MaxFailures = DefaultMaxFailures
	}
	if cfg.FailWindow <= 0 {
		cfg.FailWindow = DefaultFailWindow
	}
	u := &Users{
		hashes:   make(map[string][]byte),
		classes:  make(map[string]string),
		byAddr:   cfg.ByAddr,
		cfg:      cfg,
		cache:    make(map[[32]byte]time.Time),
		failures: make(map[netip.Addr]*failures),
	}
	for _, usr := range cfg.Users {
		if err := CheckHash(usr.Hash); err != nil {
			return nil, fmt.Errorf("user %s: %w", usr.Name, err)
		}
		if _, dup := u.hashes[usr.Name]; dup {
			return nil, fmt.Errorf("user %s: defined twice", usr.Name)
		}
		u.hashes[usr.Name] = []byte(usr.Hash)
		u.classes[usr.Name] = usr.Class
	}
	for _, a := range cfg.ByAddr {
		if _, ok := u.hashes[a.User]; !ok {
			return nil, fmt.Errorf("address %s maps to unknown user %s", a.Prefix, a.User)
		}
	}
	return u, nil
}

// CheckHash reports whether h is a bcrypt hash this package can verify.
func CheckHash(h string) error {
	if _, err := bcrypt.Cost([]byte(h)); err != nil {
		return fmt.Errorf("password hash: want bcrypt ($2y$...; htpasswd -nB NAME): %w", err)
	}
	return nil
}

// ErrNoCredentials means the header is not Basic credentials.
var ErrNoCredentials = errors.New("no Basic credentials")

// ParseBasic parses a Proxy-Authorization value "Basic base64(name:password)".
func ParseBasic(v string) (name, password string, err error) {
	scheme, cred, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return "", "", ErrNoCredentials
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if err != nil {
		return "", "", fmt.Errorf("basic credentials: %w", err)
	}
	name, password, ok = strings.Cut(string(raw), ":")
	if !ok {
		return "", "", errors.New("basic credentials: no colon")
	}
	return name, password, nil
}

// ClassOf returns the class of user name ("" when none).
func (u *Users) ClassOf(name string) string { return u.classes[name] }

// UserFor returns the user a client address maps to, if any.
func (u *Users) UserFor(client netip.Addr) (string, bool) {
	client = client.Unmap()
	for _, a := range u.byAddr {
		if a.Prefix.Contains(client) {
			return a.User, true
		}
	}
	return "", false
}

func cacheKey(name, password string) [32]byte {
	return sha256.Sum256([]byte(name + "\x00" + password))
}

// Cached reports whether name and password were verified recently; it is
// cheap enough for an event loop.
func (u *Users) Cached(name, password string, now time.Time) bool {
	k := cacheKey(name, password)
	u.mu.Lock()
	defer u.mu.Unlock()
	exp, ok := u.cache[k]
	if ok && now.Before(exp) {
		return true
	}
	if ok {
		delete(u.cache, k)
	}
	return false
}

// Blocked reports whether client has failed too often lately; its
// attempts then fail without a hash being computed.
func (u *Users) Blocked(client netip.Addr, now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	f := u.failures[client.Unmap()]
	if f == nil {
		return false
	}
	if now.Sub(f.since) >= u.cfg.FailWindow {
		delete(u.failures, client.Unmap())
		return false
	}
	return f.n >= u.cfg.MaxFailures
}

// Verify checks name and password against the hash (slow: run it off the
// event loop), caches a success and counts a failure against client.
func (u *Users) Verify(client netip.Addr, name, password string, now time.Time) bool {
	hash, ok := u.hashes[name]
	if !ok {
		// Spend the same time as for a known user, so timing does not
		// tell which names exist.
		hash = dummyHash
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(password))
	u.mu.Lock()
	defer u.mu.Unlock()
	if err == nil && ok {
		if len(u.cache) >= u.cfg.CacheSize {
			for k, exp := range u.cache { // drop expired ones, else any one
				delete(u.cache, k)
				if now.After(exp) {
					continue
				}
				break
			}
		}
		u.cache[cacheKey(name, password)] = now.Add(u.cfg.CacheTTL)
		return true
	}
	client = client.Unmap()
	f := u.failures[client]
	if f == nil || now.Sub(f.since) >= u.cfg.FailWindow {
		if f == nil && len(u.failures) >= 4096 {
			for k := range u.failures {
				delete(u.failures, k)
				break
			}
		}
		f = &failures{since: now}
		u.failures[client] = f
	}
	f.n++
	return false
}

// dummyHash is a bcrypt hash of a random password at the default cost.
var dummyHash = []byte("$2a$10$CwTycUXWue0Thq9StjUM0uJ8.q7pTzNSXk6w8cXoyDsGHAzFk8sZ2")
