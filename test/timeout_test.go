package test

import (
	"testing"
	"time"
)

// TestIdleTimeout checks --idle-timeout: an idle connection is closed soon
// after the timeout, a connection with steady traffic below the timeout is
// not.
func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	b := startEcho(t)
	p := startSluice(t, "forward", "--idle-timeout", "500ms", "127.0.0.1:0", b.upstream())

	t.Run("idle is closed", func(t *testing.T) {
		t.Parallel()
		c := p.dial(t)
		if err := echoRoundTrip(c, []byte("x"), 5*time.Second); err != nil {
			t.Fatalf("first echo: %v", err)
		}
		o, took, err := awaitClose(c, 3*time.Second)
		if !o.closed() || took > 2*time.Second {
			t.Errorf("idle connection: got %s (%v) after %v, want EOF or reset within 2s", o, err, took.Round(time.Millisecond))
		}
		if took < 400*time.Millisecond {
			t.Errorf("idle connection closed after %v, want not before the 500ms idle timeout", took.Round(time.Millisecond))
		}
	})

	t.Run("active is kept", func(t *testing.T) {
		t.Parallel()
		c := p.dial(t)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		end := time.Now().Add(2 * time.Second)
		for i := 0; time.Now().Before(end); i++ {
			if err := echoRoundTrip(c, []byte{byte(i)}, time.Second); err != nil {
				t.Fatalf("echo %d after %v of a byte every 200ms: %v", i, time.Since(end.Add(-2*time.Second)).Round(time.Millisecond), err)
			}
			<-tick.C
		}
		if err := echoRoundTrip(c, []byte("still open"), time.Second); err != nil {
			t.Fatalf("final echo: %v", err)
		}
	})
}
