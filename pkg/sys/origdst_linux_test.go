package sys

import (
	"encoding/binary"
	"errors"
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOriginalDstNotRedirected checks the answer for a connection no
// netfilter rule redirected: an error, never a made-up address. The
// redirected case needs nftables and a network namespace; it is tested
// end to end (test/http_transparent_test.go).
func TestOriginalDstNotRedirected(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		ln, err := net.Listen(network, "localhost:0")
		if err != nil {
			t.Logf("%s: %v", network, err)
			continue
		}
		c, err := net.Dial(network, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		f, err := s.(*net.TCPConn).File()
		if err != nil {
			t.Fatal(err)
		}
		_, err = OriginalDst(int(f.Fd()))
		if err == nil {
			t.Errorf("%s: OriginalDst of a connection that was not redirected: no error", network)
		} else if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOPROTOOPT) {
			t.Logf("%s: %v (conntrack not loaded?)", network, err)
		}
		f.Close()
		s.Close()
		c.Close()
		ln.Close()
	}
}

func TestNtohs(t *testing.T) {
	raw := binary.NativeEndian.Uint16([]byte{0x1f, 0x90}) // 8080 in network order, as read from memory
	if got := ntohs(raw); got != 8080 {
		t.Errorf("ntohs = %d, want 8080", got)
	}
}
