package tlsconn

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/sluice-proxy/sluice/pkg/reactor"
	"github.com/sluice-proxy/sluice/pkg/relay"
	"github.com/sluice-proxy/sluice/pkg/sys"
)

// Record limits (RFC 8446 5.1, 5.2).
const (
	hdrLen       = 5
	maxPlain     = 16384
	maxCipher    = maxPlain + 256
	maxRecordLen = hdrLen + maxCipher
	tagLen       = 16
)

// Content types (RFC 8446 5.1).
const (
	typeAlert     = 21
	typeHandshake = 22
	typeAppData   = 23
)

// Conn is an established TLS 1.3 connection driven from its loop. Its
// methods must be called on that loop. fd stays the caller's.
type Conn struct {
	fd    int
	loop  *reactor.Loop
	pool  *relay.Pool
	state tls.ConnectionState
	in    halfConn
	out   halfConn

	rbuf       []byte // nil while idle
	rn         int    // bytes read into rbuf
	plain      []byte // decrypted bytes not yet returned (inside rbuf)
	wbuf       []byte // nil while idle
	wstart, wn int    // sealed bytes wbuf[wstart:wn] wait for the socket

	eof       bool // close_notify received
	wclosed   bool // CloseWrite called
	shutAfter bool // shutdown(SHUT_WR) once wbuf drains
}

// Fd returns the socket.
func (c *Conn) Fd() int { return c.fd }

// Loop returns the loop the Conn lives on.
func (c *Conn) Loop() *reactor.Loop { return c.loop }

// ConnectionState returns the handshake's state (version, suite, peer
// certificates, ALPN).
func (c *Conn) ConnectionState() tls.ConnectionState { return c.state }

// UsePool makes the Conn borrow its record buffers from p (the loop's relay
// pool) instead of allocating them.
func (c *Conn) UsePool(p *relay.Pool) { c.pool = p }

func (c *Conn) getBuf() []byte {
	if c.pool != nil && c.pool.BufSize() >= maxRecordLen {
		return c.pool.LendBuf()
	}
	return make([]byte, maxRecordLen)
}

func (c *Conn) putBuf(b []byte) {
	if c.pool != nil && len(b) == c.pool.BufSize() {
		c.pool.ReturnBuf(b)
	}
}

// Idle reports whether the Conn holds no buffer.
func (c *Conn) Idle() bool { return c.rbuf == nil && c.wbuf == nil }

// Read returns decrypted application bytes: ErrAgain when no whole record
// is there yet, io.EOF after the peer's close_notify, another error for a
// bad record, an alert, or a connection closed without close_notify.
func (c *Conn) Read(p []byte) (int, error) {
	for {
		if len(c.plain) > 0 {
			n := copy(p, c.plain)
			c.plain = c.plain[n:]
			if len(c.plain) == 0 && c.rn == 0 {
				c.putBuf(c.rbuf)
				c.rbuf = nil
			}
			return n, nil
		}
		if c.eof {
			if c.rbuf != nil {
				c.putBuf(c.rbuf)
				c.rbuf = nil
			}
			return 0, io.EOF
		}
		if err := c.readRecord(); err != nil {
			return 0, err
		}
	}
}

// readRecord reads and opens one record into c.plain.
func (c *Conn) readRecord() error {
	if c.rbuf == nil {
		c.rbuf = c.getBuf()
	}
	for {
		need := hdrLen
		if c.rn >= hdrLen {
			need = hdrLen + int(binary.BigEndian.Uint16(c.rbuf[3:5]))
		}
		if c.rn >= need {
			break
		}
		n, err := sys.Read(c.fd, c.rbuf[c.rn:need])
		if n > 0 {
			c.rn += n
			continue
		}
		if err == nil {
			return errTruncated
		}
		if sys.IsAgain(err) {
			if c.rn == 0 {
				c.putBuf(c.rbuf)
				c.rbuf = nil
			}
			return ErrAgain
		}
		return fmt.Errorf("tls read: %w", err)
	}
	rec := c.rbuf[:c.rn]
	c.rn = 0
	typ, plain, err := c.open(rec)
	if err != nil {
		return err
	}
	switch typ {
	case typeAppData:
		c.plain = plain
		return nil
	case typeAlert:
		if len(plain) == 2 && plain[1] == 0 {
			c.eof = true
			return nil
		}
		if len(plain) == 2 {
			return fmt.Errorf("tls: peer sent alert %d", plain[1])
		}
		return errBadRecord
	case typeHandshake:
		return c.handshakeMsgs(plain)
	}
	return errBadRecord
}

// open checks and decrypts one whole record; see [parseRecord].
func (c *Conn) open(rec []byte) (byte, []byte, error) {
	body, err := parseRecord(rec)
	if err != nil {
		return 0, nil, err
	}
	var nonce [12]byte
	c.in.nonce(&nonce)
	plain, err := c.in.aead.Open(body[:0], nonce[:], body, rec[:hdrLen])
	if err != nil {
		return 0, nil, errDecrypt
	}
	c.in.seq++
	return innerType(plain)
}

// parseRecord checks a whole record's header and returns its body.
func parseRecord(rec []byte) ([]byte, error) {
	if len(rec) < hdrLen {
		return nil, errTruncated
	}
	n := int(binary.BigEndian.Uint16(rec[3:5]))
	if rec[0] != typeAppData || rec[1] != 3 || rec[2] != 3 {
		return nil, errBadRecord
	}
	if n > maxCipher {
		return nil, errRecordOverflow
	}
	if n < tagLen+1 || len(rec) != hdrLen+n {
		return nil, errBadRecord
	}
	return rec[hdrLen:], nil
}

// innerType strips padding and returns the inner content type (RFC 8446 5.2).
func innerType(plain []byte) (byte, []byte, error) {
	i := len(plain) - 1
	for i >= 0 && plain[i] == 0 {
		i--
	}
	if i < 0 || i > maxPlain {
		return 0, nil, errBadRecord
	}
	return plain[i], plain[:i], nil
}

// handshakeMsgs handles post-handshake messages: NewSessionTicket is
// ignored, KeyUpdate is answered. A message split over records is refused.
func (c *Conn) handshakeMsgs(b []byte) error {
	for len(b) > 0 {
		if len(b) < 4 {
			return errBadHandshake
		}
		n := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
		if len(b) < 4+n {
			return errBadHandshake
		}
		typ, body := b[0], b[4:4+n]
		b = b[4+n:]
		switch typ {
		case 4: // new_session_ticket
		case 24: // key_update
			if len(body) != 1 || body[0] > 1 {
				return errBadHandshake
			}
			if err := c.in.update(); err != nil {
				return err
			}
			if body[0] == 1 && !c.wclosed {
				if err := c.seal(typeHandshake, []byte{24, 0, 0, 1, 0}); err != nil {
					return err
				}
				if err := c.out.update(); err != nil {
					return err
				}
				if err := c.flush(); err != nil && err != ErrAgain {
					return err
				}
			}
		default:
			return errBadHandshake
		}
	}
	return nil
}

// seal appends one record of p (at most maxPlain bytes) to wbuf.
func (c *Conn) seal(typ byte, p []byte) error {
	if c.wbuf == nil {
		c.wbuf = c.getBuf()
		c.wstart, c.wn = 0, 0
	}
	if c.wn+hdrLen+len(p)+1+tagLen > len(c.wbuf) {
		// Only a KeyUpdate answer can meet a full buffer: grow it.
		nb := make([]byte, c.wn+hdrLen+len(p)+1+tagLen)
		copy(nb, c.wbuf[:c.wn])
		c.putBuf(c.wbuf)
		c.wbuf = nb
	}
	rec := c.wbuf[c.wn:]
	n := len(p) + 1 + tagLen
	rec[0], rec[1], rec[2] = typeAppData, 3, 3
	binary.BigEndian.PutUint16(rec[3:5], uint16(n))
	body := append(rec[hdrLen:hdrLen], p...)
	body = append(body, typ)
	var nonce [12]byte
	c.out.nonce(&nonce)
	c.out.aead.Seal(body[:0], nonce[:], body, rec[:hdrLen])
	c.out.seq++
	c.wn += hdrLen + n
	return nil
}

// flush writes waiting sealed bytes: nil when none are left.
func (c *Conn) flush() error {
	for c.wstart < c.wn {
		n, err := sys.Write(c.fd, c.wbuf[c.wstart:c.wn])
		if err != nil {
			if sys.IsAgain(err) {
				return ErrAgain
			}
			return fmt.Errorf("tls write: %w", err)
		}
		c.wstart += n
	}
	c.putBuf(c.wbuf)
	c.wbuf = nil
	c.wstart, c.wn = 0, 0
	if c.shutAfter {
		c.shutAfter = false
		if err := sys.ShutdownWrite(c.fd); err != nil {
			return fmt.Errorf("tls shutdown: %w", err)
		}
	}
	return nil
}

// Flush writes sealed bytes still waiting: ErrAgain while the socket is
// full (call again on writability), nil when nothing waits.
func (c *Conn) Flush() error { return c.flush() }

// Pending reports whether sealed bytes wait for the socket.
func (c *Conn) Pending() bool { return c.wbuf != nil }

// Write seals p and writes it. It returns how many bytes of p were taken:
// they are sealed and either written or kept for [Conn.Flush]. When sealed
// bytes still wait from before, it takes nothing and returns ErrAgain.
func (c *Conn) Write(p []byte) (int, error) {
	if c.wclosed {
		return 0, errClosed
	}
	total := 0
	for len(p) > 0 {
		if err := c.flush(); err != nil {
			return total, err
		}
		n := min(len(p), maxPlain)
		if err := c.seal(typeAppData, p[:n]); err != nil {
			return total, err
		}
		total += n
		p = p[n:]
	}
	if err := c.flush(); err != nil && err != ErrAgain {
		return total, err
	}
	return total, nil
}

// CloseWrite sends close_notify and then shuts the socket's writing side
// (TLS 1.3 half-close). ErrAgain means the alert waits: call Flush on
// writability, which shuts the socket once it is out.
func (c *Conn) CloseWrite() error {
	if c.wclosed {
		return nil
	}
	c.wclosed = true
	if err := c.seal(typeAlert, []byte{1, 0}); err != nil {
		return err
	}
	c.shutAfter = true
	return c.flush()
}

// Release gives back any buffer the Conn holds; call it when the socket
// is closed.
func (c *Conn) Release() {
	if c.rbuf != nil {
		c.putBuf(c.rbuf)
		c.rbuf, c.plain, c.rn = nil, nil, 0
	}
	if c.wbuf != nil {
		c.putBuf(c.wbuf)
		c.wbuf = nil
	}
}

// KeyUpdate sends a KeyUpdate (RFC 8446 4.6.3) and moves the writing
// direction to the next traffic secret; with request the peer must answer
// with its own, which Read handles. ErrAgain means it waits for Flush.
func (c *Conn) KeyUpdate(request bool) error {
	if c.wclosed {
		return errClosed
	}
	var r byte
	if request {
		r = 1
	}
	if err := c.seal(typeHandshake, []byte{24, 0, 0, 1, r}); err != nil {
		return err
	}
	if err := c.out.update(); err != nil {
		return err
	}
	return c.flush()
}
