package tunnel

import (
	"bytes"
	"errors"
	"testing"
)

// parseAny runs the parser of frame type t on p.
func parseAny(t byte, p []byte) error {
	var err error
	switch t {
	case tChallenge:
		_, err = parseChallenge(p)
	case tLogin:
		_, err = parseLogin(p)
	case tWelcome:
		_, err = parseWelcome(p)
	case tError:
		_, err = parseError(p)
	case tData:
		_, err = parseData(p)
	case tRegister:
		_, err = parseRegister(p)
	case tRefused:
		_, err = parseRefused(p)
	case tStart:
		_, err = parseStart(p)
	case tRegistered, tUnregister:
		_, err = parsePort(p)
	default:
		err = parseEmpty(p)
	}
	return err
}

func TestFramesRoundTrip(t *testing.T) {
	login := Login{Name: "home-1", Nonce: nonce()}
	login.MAC = loginMAC("tok", [NonceLen]byte{1}, login.Nonce, login.Name)
	tests := []struct {
		name  string
		frame []byte
		check func(p []byte) error
	}{
		{"challenge", (&Challenge{Version: 1, Nonce: nonce()}).append(nil), func(p []byte) error { _, err := parseChallenge(p); return err }},
		{"login", login.append(nil), func(p []byte) error {
			m, err := parseLogin(p)
			if err == nil && m != login {
				err = errors.New("login differs")
			}
			return err
		}},
		{"register", (&Register{Port: 20022, Name: "ssh"}).append(nil), func(p []byte) error {
			m, err := parseRegister(p)
			if err == nil && (m.Port != 20022 || m.Name != "ssh") {
				err = errors.New("register differs")
			}
			return err
		}},
		{"start", (&Start{Port: 1, From: "[::1]:5"}).append(nil), func(p []byte) error { _, err := parseStart(p); return err }},
		{"refused long reason", (&Refused{Port: 9, Reason: string(bytes.Repeat([]byte("x"), 400))}).append(nil), func(p []byte) error {
			m, err := parseRefused(p)
			if err == nil && len(m.Reason) != maxReason {
				err = errors.New("reason not clipped")
			}
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := frameLen(tt.frame)
			if err != nil || n != len(tt.frame) {
				t.Fatalf("frameLen = %d, %v; want %d", n, err, len(tt.frame))
			}
			if err := tt.check(tt.frame[headerLen:]); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name string
		t    byte
		p    []byte
	}{
		{"register port 0", tRegister, []byte{0, 0, 1, 'a'}},
		{"register bad name", tRegister, []byte{0, 1, 2, 'a', '/'}},
		{"register empty name", tRegister, []byte{0, 1, 0}},
		{"login truncated", tLogin, []byte{4, 'h', 'o'}},
		{"welcome heartbeat 0", tWelcome, make([]byte, SessionLen+2+MACLen)},
		{"trailing bytes", tRegistered, []byte{0, 1, 2}},
		{"ping with payload", tPing, []byte{1}},
	}
	for _, tt := range tests {
		if err := parseAny(tt.t, tt.p); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: err = %v, want a protocol error", tt.name, err)
		}
	}
	if _, err := frameLen([]byte{tPing, 0xff, 0xff}); !errors.Is(err, ErrProtocol) {
		t.Errorf("oversized frame: err = %v", err)
	}
}

// FuzzParse feeds arbitrary frames to every parser: errors, never a panic,
// and what parses re-encodes to a frame that parses the same.
func FuzzParse(f *testing.F) {
	f.Add((&Register{Port: 20022, Name: "ssh"}).append(nil))
	f.Add((&Start{Port: 80, From: "1.2.3.4:5"}).append(nil))
	f.Add((&Challenge{Version: 1}).append(nil))
	f.Add([]byte{tPing, 0, 0})
	f.Add([]byte{tLogin, 0, 3, 1, 'a'})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := frameLen(b)
		if err != nil || n == 0 || len(b) < n {
			return
		}
		typ, p := b[0], b[headerLen:n]
		if parseAny(typ, p) != nil {
			return
		}
		switch typ {
		case tRegister:
			m, _ := parseRegister(p)
			again := m.append(nil)
			if m2, err := parseRegister(again[headerLen:]); err != nil || m2 != m {
				t.Fatalf("register %+v re-parsed as %+v, %v", m, m2, err)
			}
		case tStart:
			m, _ := parseStart(p)
			again := m.append(nil)
			if m2, err := parseStart(again[headerLen:]); err != nil || m2 != m {
				t.Fatalf("start %+v re-parsed as %+v, %v", m, m2, err)
			}
		}
	})
}
