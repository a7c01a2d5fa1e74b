package auth

import (
	"encoding/base64"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

func newUsers(t *testing.T, cfg Config) *Users {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Users = append(cfg.Users, User{Name: "alice", Hash: string(hash), Class: "staff"})
	u, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestVerifyAndCache(t *testing.T) {
	u := newUsers(t, Config{CacheTTL: time.Minute})
	client := netip.MustParseAddr("192.0.2.1")
	now := time.Unix(1000, 0)
	if u.Cached("alice", "pw", now) {
		t.Fatal("cached before any verification")
	}
	if !u.Verify(client, "alice", "pw", now) {
		t.Fatal("right password refused")
	}
	if !u.Cached("alice", "pw", now.Add(30*time.Second)) {
		t.Error("success not cached")
	}
	if u.Cached("alice", "other", now) {
		t.Error("another password hit the cache")
	}
	if u.Cached("alice", "pw", now.Add(2*time.Minute)) {
		t.Error("cache entry outlived its TTL")
	}
	if u.Verify(client, "alice", "bad", now) || u.Verify(client, "nobody", "pw", now) {
		t.Error("wrong credentials accepted")
	}
}

func TestClassOf(t *testing.T) {
	u := newUsers(t, Config{})
	if c := u.ClassOf("alice"); c != "staff" {
		t.Errorf("ClassOf(alice) = %q", c)
	}
	if c := u.ClassOf("nobody"); c != "" {
		t.Errorf("ClassOf(nobody) = %q", c)
	}
}

func TestFailureLimit(t *testing.T) {
	u := newUsers(t, Config{MaxFailures: 3, FailWindow: time.Minute})
	bad := netip.MustParseAddr("192.0.2.9")
	good := netip.MustParseAddr("192.0.2.10")
	now := time.Unix(1000, 0)
	for range 3 {
		if u.Blocked(bad, now) {
			t.Fatal("blocked too early")
		}
		u.Verify(bad, "alice", "guess", now)
	}
	if !u.Blocked(bad, now) {
		t.Error("not blocked after 3 failures")
	}
	if !u.Blocked(netip.MustParseAddr("::ffff:192.0.2.9"), now) {
		t.Error("the mapped form of a blocked address is not blocked")
	}
	if u.Blocked(good, now) {
		t.Error("another address is blocked")
	}
	if u.Blocked(bad, now.Add(time.Minute)) {
		t.Error("still blocked after the window")
	}
}

func TestParseBasic(t *testing.T) {
	enc := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		in, name, pass string
		ok             bool
	}{
		{"Basic " + enc("alice:pw"), "alice", "pw", true},
		{"basic  " + enc("a:b:c"), "a", "b:c", true},
		{"Basic " + enc("nocolon"), "", "", false},
		{"Bearer abc", "", "", false},
		{"Basic !!!", "", "", false},
		{"", "", "", false},
	}
	for _, tt := range tests {
		n, p, err := ParseBasic(tt.in)
		if (err == nil) != tt.ok || n != tt.name || p != tt.pass {
			t.Errorf("ParseBasic(%q) = %q, %q, %v", tt.in, n, p, err)
		}
	}
}

func TestNewErrors(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("x"), bcrypt.MinCost)
	tests := []struct {
		name string
		cfg  Config
	}{
		{"not bcrypt", Config{Users: []User{{Name: "a", Hash: "{SHA}abc"}}}},
		{"twice", Config{Users: []User{{Name: "a", Hash: string(hash)}, {Name: "a", Hash: string(hash)}}}},
		{"unknown mapped user", Config{Users: []User{{Name: "a", Hash: string(hash)}},
			ByAddr: []AddrUser{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), User: "b"}}}},
	}
	for _, tt := range tests {
		if _, err := New(tt.cfg); err == nil {
			t.Errorf("%s: no error", tt.name)
		}
	}
}

func TestUserFor(t *testing.T) {
	u := newUsers(t, Config{ByAddr: []AddrUser{{Prefix: netip.MustParsePrefix("192.168.1.0/24"), User: "alice"}}})
	if n, ok := u.UserFor(netip.MustParseAddr("::ffff:192.168.1.20")); !ok || n != "alice" {
		t.Errorf("UserFor(mapped lan) = %q, %v", n, ok)
	}
	if _, ok := u.UserFor(netip.MustParseAddr("192.168.2.1")); ok {
		t.Error("UserFor(other) matched")
	}
}

func TestDummyHashIsBcrypt(t *testing.T) {
	if err := CheckHash(string(dummyHash)); err != nil {
		t.Fatal(err)
	}
}
