package sys

import (
	"net"
	"testing"
)

func TestPeerAddr(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f, err := s.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sa, err := PeerAddr(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	sa4, ok := sa.(*SockaddrInet4)
	if !ok || sa4.Port != c.LocalAddr().(*net.TCPAddr).Port || sa4.Addr != [4]byte{127, 0, 0, 1} {
		t.Errorf("PeerAddr = %#v, want %s", sa, c.LocalAddr())
	}
	if _, err := PeerAddr(-1); err == nil {
		t.Error("PeerAddr(-1): no error")
	}
}
