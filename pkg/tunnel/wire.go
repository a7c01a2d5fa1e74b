package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The wire protocol (docs/TUNNEL.md has the whole of it). Every message is
// a frame: a type byte, a 2-byte big-endian payload length, the payload.
// Every connection a client opens to the server starts with the server's
// Challenge; the client answers Login (a control connection) or Data (a
// data connection for the pool of a session that logged in).
const (
	// Version is the protocol version in Challenge.
	Version = 1
	// headerLen is the frame header: type, length.
	headerLen = 3
	// MaxPayload bounds a frame's payload; larger lengths are a
	// protocol error (nothing legitimate is near it).
	MaxPayload = 1024
	// NonceLen is the size of the server's and client's nonces.
	NonceLen = 32
	// SessionLen is the size of a session id.
	SessionLen = 16
	// MACLen is the size of an HMAC-SHA256.
	MACLen = 32
	// MaxName bounds client and service names.
	MaxName = 64
	// maxReason bounds the text of Error and Refused.
	maxReason = 255
)

// Frame types.
const (
	tChallenge  byte = 1  // S->C, first frame of every connection
	tLogin      byte = 2  // C->S on a control connection
	tWelcome    byte = 3  // S->C: logged in
	tError      byte = 4  // either way: fatal for the connection
	tData       byte = 5  // C->S: this connection joins a session's pool
	tRegister   byte = 6  // C->S: publish a port
	tRegistered byte = 7  // S->C: the port listens
	tRefused    byte = 8  // S->C: the port was not granted
	tUnregister byte = 9  // C->S: stop publishing a port
	tPing       byte = 10 // C->S heartbeat
	tPong       byte = 11 // S->C answer
	tNeed       byte = 12 // S->C: open this many more data connections
	tStart      byte = 13 // S->C on a pooled data connection: a public connection follows
)

// Error codes in an Error frame.
const (
	CodeProtocol byte = 1 // malformed or unexpected frame
	CodeVersion  byte = 2 // unsupported version
	CodeAuth     byte = 3 // wrong name or token
	CodeBusy     byte = 4 // a limit was reached (clients, attempts)
	CodeSession  byte = 5 // a data connection for a session that is gone
	CodeReplaced byte = 6 // a newer login of the same name took over
)

// ErrProtocol is wrapped by every parse error.
var ErrProtocol = errors.New("tunnel protocol error")

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// Challenge opens every connection: the server's version and a fresh nonce.
type Challenge struct {
	Version byte
	Nonce   [NonceLen]byte
}

// Login authenticates a control connection: the client's name, its own
// nonce and HMAC(token, login context) (see loginMAC).
type Login struct {
	Name  string
	Nonce [NonceLen]byte
	MAC   [MACLen]byte
}

// Welcome accepts a login: the session id data connections present, the
// heartbeat interval the server expects, and the server's proof that it
// knows the token too (see serverMAC).
type Welcome struct {
	Session   [SessionLen]byte
	Heartbeat uint16 // seconds
	MAC       [MACLen]byte
}

// ErrorMsg ends a connection with a code and a reason for the log.
type ErrorMsg struct {
	Code   byte
	Reason string
}

// Data makes a connection one of a session's pooled data connections; MAC
// is HMAC(token, data context) over the connection's own challenge.
type Data struct {
	Session [SessionLen]byte
	MAC     [MACLen]byte
}

// Register asks for a public port.
type Register struct {
	Port uint16
	Name string
}

// Refused says why a port was not granted.
type Refused struct {
	Port   uint16
	Reason string
}

// Start tells the client, on a pooled data connection, which public port
// the connection that follows came to and from where.
type Start struct {
	Port uint16
	From string
}

// appendFrame appends a frame of type t with payload p.
func appendFrame(b []byte, t byte, p []byte) []byte {
	b = append(b, t, byte(len(p)>>8), byte(len(p)))
	return append(b, p...)
}

// frameLen returns the length of the frame starting buf once its header
// is there: 0 if the header is incomplete, or a protocol error.
func frameLen(buf []byte) (int, error) {
	if len(buf) < headerLen {
		return 0, nil
	}
	n := int(binary.BigEndian.Uint16(buf[1:3]))
	if n > MaxPayload {
		return 0, protoErr("frame of %d bytes (at most %d)", n, MaxPayload)
	}
	return headerLen + n, nil
}

func appendString(b []byte, s string) []byte {
	b = append(b, byte(len(s)))
	return append(b, s...)
}

// reader takes fields off a payload; the first failure sticks.
type reader struct {
	p   []byte
	err error
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.p) < n {
		r.err = protoErr("payload ends %d bytes early", n-len(r.p))
		return nil
	}
	b := r.p[:n]
	r.p = r.p[n:]
	return b
}

func (r *reader) u16() uint16 {
	b := r.bytes(2)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint16(b)
}

func (r *reader) byte1() byte {
	b := r.bytes(1)
	if b == nil {
		return 0
	}
	return b[0]
}

func (r *reader) str(max int) string {
	n := int(r.byte1())
	if r.err == nil && n > max {
		r.err = protoErr("string of %d bytes (at most %d)", n, max)
	}
	return string(r.bytes(n))
}

// name reads a client or service name: 1-64 printable ASCII bytes.
func (r *reader) name() string {
	s := r.str(MaxName)
	if r.err == nil {
		if err := CheckName(s); err != nil {
			r.err = fmt.Errorf("%w: %v", ErrProtocol, err)
		}
	}
	return s
}

// done fails when bytes are left over.
func (r *reader) done() error {
	if r.err == nil && len(r.p) > 0 {
		r.err = protoErr("%d bytes after the payload", len(r.p))
	}
	return r.err
}

// CheckName accepts client and service names: 1-64 bytes of letters,
// digits, '-', '_' and '.'.
func CheckName(s string) error {
	if s == "" || len(s) > MaxName {
		return fmt.Errorf("name %q: want 1-%d characters", s, MaxName)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("name %q: only letters, digits, '-', '_' and '.'", s)
		}
	}
	return nil
}

func (m *Challenge) append(b []byte) []byte {
	return appendFrame(b, tChallenge, append([]byte{m.Version}, m.Nonce[:]...))
}

func parseChallenge(p []byte) (m Challenge, err error) {
	r := reader{p: p}
	m.Version = r.byte1()
	copy(m.Nonce[:], r.bytes(NonceLen))
	return m, r.done()
}

func (m *Login) append(b []byte) []byte {
	p := appendString(nil, m.Name)
	p = append(p, m.Nonce[:]...)
	return appendFrame(b, tLogin, append(p, m.MAC[:]...))
}

func parseLogin(p []byte) (m Login, err error) {
	r := reader{p: p}
	m.Name = r.name()
	copy(m.Nonce[:], r.bytes(NonceLen))
	copy(m.MAC[:], r.bytes(MACLen))
	return m, r.done()
}

func (m *Welcome) append(b []byte) []byte {
	p := append([]byte(nil), m.Session[:]...)
	p = binary.BigEndian.AppendUint16(p, m.Heartbeat)
	return appendFrame(b, tWelcome, append(p, m.MAC[:]...))
}

func parseWelcome(p []byte) (m Welcome, err error) {
	r := reader{p: p}
	copy(m.Session[:], r.bytes(SessionLen))
	m.Heartbeat = r.u16()
	copy(m.MAC[:], r.bytes(MACLen))
	if r.err == nil && m.Heartbeat == 0 {
		r.err = protoErr("heartbeat of 0 s")
	}
	return m, r.done()
}

func (m *ErrorMsg) append(b []byte) []byte {
	return appendFrame(b, tError, appendString([]byte{m.Code}, clip(m.Reason)))
}

func parseError(p []byte) (m ErrorMsg, err error) {
	r := reader{p: p}
	m.Code = r.byte1()
	m.Reason = r.str(maxReason)
	return m, r.done()
}

func (m *Data) append(b []byte) []byte {
	return appendFrame(b, tData, append(append([]byte(nil), m.Session[:]...), m.MAC[:]...))
}

func parseData(p []byte) (m Data, err error) {
	r := reader{p: p}
	copy(m.Session[:], r.bytes(SessionLen))
	copy(m.MAC[:], r.bytes(MACLen))
	return m, r.done()
}

func (m *Register) append(b []byte) []byte {
	return appendFrame(b, tRegister, appendString(binary.BigEndian.AppendUint16(nil, m.Port), m.Name))
}

func parseRegister(p []byte) (m Register, err error) {
	r := reader{p: p}
	m.Port = r.u16()
	m.Name = r.name()
	if r.err == nil && m.Port == 0 {
		r.err = protoErr("port 0")
	}
	return m, r.done()
}

func (m *Refused) append(b []byte) []byte {
	return appendFrame(b, tRefused, appendString(binary.BigEndian.AppendUint16(nil, m.Port), clip(m.Reason)))
}

func parseRefused(p []byte) (m Refused, err error) {
	r := reader{p: p}
	m.Port = r.u16()
	m.Reason = r.str(maxReason)
	return m, r.done()
}

func (m *Start) append(b []byte) []byte {
	return appendFrame(b, tStart, appendString(binary.BigEndian.AppendUint16(nil, m.Port), clip(m.From)))
}

func parseStart(p []byte) (m Start, err error) {
	r := reader{p: p}
	m.Port = r.u16()
	m.From = r.str(maxReason)
	return m, r.done()
}

// appendPort is the frame of Registered and Unregister: a port.
func appendPort(b []byte, t byte, port uint16) []byte {
	return appendFrame(b, t, binary.BigEndian.AppendUint16(nil, port))
}

func parsePort(p []byte) (uint16, error) {
	r := reader{p: p}
	port := r.u16()
	return port, r.done()
}

// appendCount is the frame of Need: a count.
func appendCount(b []byte, n int) []byte {
	if n > 0xffff {
		n = 0xffff
	}
	return appendFrame(b, tNeed, binary.BigEndian.AppendUint16(nil, uint16(n)))
}

func parseEmpty(p []byte) error {
	if len(p) != 0 {
		return protoErr("%d bytes in an empty frame", len(p))
	}
	return nil
}

// clip shortens a reason to what a frame carries.
func clip(s string) string {
	if len(s) > maxReason {
		return s[:maxReason]
	}
	return s
}

// frameName names a frame type in errors and logs.
func frameName(t byte) string {
	names := [...]string{tChallenge: "challenge", tLogin: "login", tWelcome: "welcome", tError: "error",
		tData: "data", tRegister: "register", tRegistered: "registered", tRefused: "refused",
		tUnregister: "unregister", tPing: "ping", tPong: "pong", tNeed: "need", tStart: "start"}
	if int(t) < len(names) && names[t] != "" {
		return names[t]
	}
	return fmt.Sprintf("type %d", t)
}
