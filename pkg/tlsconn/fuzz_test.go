package tlsconn_test

import (
	"testing"

	"github.com/sluice-proxy/sluice/pkg/tlsconn"
)

// FuzzRecord feeds arbitrary bytes to the record header parser and the
// inner-plaintext parser: no panic, and what they return lies inside the
// input.
func FuzzRecord(f *testing.F) {
	f.Add([]byte{23, 3, 3, 0, 17, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 23})
	f.Add([]byte{22, 3, 1, 0, 5, 1, 0, 0, 1, 0})
	f.Add([]byte{23, 3, 3, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		body, err := tlsconn.ParseRecord(b)
		if err == nil && len(body) != len(b)-5 {
			t.Fatalf("body %d bytes of a %d-byte record", len(body), len(b))
		}
		typ, plain, err := tlsconn.InnerType(b)
		if err == nil && (len(plain) >= len(b) || b[len(plain)] != typ) {
			t.Fatalf("inner type %d at %d of %d", typ, len(plain), len(b))
		}
	})
}
