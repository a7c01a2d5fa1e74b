package relay_test

import (
	"io"
	"testing"

	"github.com/sluice-proxy/sluice/pkg/relay"
)

// BenchmarkRelay moves bytes one way through a relay on one loop, with
// splice and with the copy path. `make bench` runs it.
func BenchmarkRelay(b *testing.B) {
	for _, bc := range []struct {
		name string
		cfg  relay.PoolConfig
	}{
		{"splice", relay.PoolConfig{}},
		{"copy", relay.PoolConfig{MaxPipes: -1}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h := newHarness(b, bc.cfg)
			a, c := h.start(relay.Options{})
			chunk := make([]byte, 256<<10)
			b.SetBytes(int64(len(chunk)))
			done := make(chan error, 1)
			go func() {
				_, err := io.Copy(io.Discard, c)
				done <- err
			}()
			b.ResetTimer()
			for range b.N {
				if _, err := a.Write(chunk); err != nil {
					b.Fatal(err)
				}
			}
			a.CloseWrite()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			a.Close()
			c.Close()
		})
	}
}
