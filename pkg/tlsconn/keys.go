package tlsconn

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/binary"
	"hash"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/hkdf"
)

// suite is a TLS 1.3 cipher suite: its hash and AEAD.
type suite struct {
	hash   func() hash.Hash
	keyLen int
	aead   func(key []byte) (cipher.AEAD, error)
}

func gcm(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

func suiteFor(id uint16) (*suite, bool) {
	switch id {
	case tls.TLS_AES_128_GCM_SHA256:
		return &suite{sha256.New, 16, gcm}, true
	case tls.TLS_AES_256_GCM_SHA384:
		return &suite{sha512.New384, 32, gcm}, true
	case tls.TLS_CHACHA20_POLY1305_SHA256:
		return &suite{sha256.New, 32, chacha20poly1305.New}, true
	}
	return nil, false
}

// expandLabel is HKDF-Expand-Label (RFC 8446 7.1) with an empty context.
func (s *suite) expandLabel(secret []byte, label string, n int) []byte {
	info := make([]byte, 0, 4+6+len(label))
	info = binary.BigEndian.AppendUint16(info, uint16(n))
	info = append(info, byte(6+len(label)))
	info = append(info, "tls13 "...)
	info = append(info, label...)
	info = append(info, 0)
	out := make([]byte, n)
	if _, err := hkdf.Expand(s.hash, secret, info).Read(out); err != nil {
		panic("tlsconn: hkdf: " + err.Error()) // n is far below HKDF's limit
	}
	return out
}

// halfConn is one direction's keys and sequence number.
type halfConn struct {
	s      *suite
	secret []byte
	aead   cipher.AEAD
	iv     [12]byte
	seq    uint64
}

// setSecret installs a traffic secret (RFC 8446 7.3) and resets seq.
func (h *halfConn) setSecret(s *suite, secret []byte) error {
	a, err := s.aead(s.expandLabel(secret, "key", s.keyLen))
	if err != nil {
		return err
	}
	h.s, h.secret, h.aead, h.seq = s, secret, a, 0
	copy(h.iv[:], s.expandLabel(secret, "iv", 12))
	return nil
}

// update moves to the next generation of traffic secret (RFC 8446 7.2).
func (h *halfConn) update() error {
	return h.setSecret(h.s, h.s.expandLabel(h.secret, "traffic upd", h.s.hash().Size()))
}

func (h *halfConn) nonce(out *[12]byte) {
	*out = h.iv
	var seq [8]byte
	binary.BigEndian.PutUint64(seq[:], h.seq)
	for i := range seq {
		out[4+i] ^= seq[i]
	}
}
