package sys

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestVsockProbeError(t *testing.T) {
	tests := []struct {
		name        string
		err         error
		unsupported bool
	}{
		{"no vsock core", unix.EAFNOSUPPORT, true},
		{"no transport", unix.ENODEV, true},
		{"no stream sockets", unix.ESOCKTNOSUPPORT, true},
		{"no protocol", unix.EPROTONOSUPPORT, true},
		{"out of fds", unix.EMFILE, false},
		{"seccomp", unix.EPERM, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := vsockProbeError(tt.err)
			if got := errors.Is(err, ErrVsockUnsupported); got != tt.unsupported {
				t.Fatalf("vsockProbeError(%v) = %q; Is(ErrVsockUnsupported) = %v, want %v", tt.err, err, got, tt.unsupported)
			}
			if !errors.Is(err, tt.err) {
				t.Fatalf("vsockProbeError(%v) = %q does not wrap the errno", tt.err, err)
			}
			if tt.unsupported && !strings.HasPrefix(err.Error(), "vsock is not supported by this kernel") {
				t.Fatalf("vsockProbeError(%v) = %q, want it to start with the plain reason", tt.err, err)
			}
		})
	}
}

// boardOnly skips tests that open AF_VSOCK sockets anywhere but inside a
// QEMU board guest (board/), which sets SLUICE_BOARD=1: the build host has
// no vsock loopback, and under qemu-user the socket would be the host's.
func boardOnly(t *testing.T) {
	t.Helper()
	if os.Getenv("SLUICE_BOARD") != "1" {
		t.Skip("opens AF_VSOCK sockets: runs only inside a board guest (make board-test), where SLUICE_BOARD=1")
	}
	if err := VsockSupported(); err != nil {
		t.Fatalf("SLUICE_BOARD=1 but: %v (are the vsock modules loaded?)", err)
	}
}

// TestIntegrationVsockSplice answers whether splice() moves bytes between
// an AF_VSOCK socket and a pipe on this kernel, both ways, over the
// vsock_loopback transport (CID 1). The relay falls back to its copy path on
// EINVAL; this test says which path vsock gets, and checks the bytes when
// splice works.
func TestIntegrationVsockSplice(t *testing.T) {
	boardOnly(t)
	ln, err := Socket(AFVsock)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(ln)
	if err := Listen(ln, &SockaddrVM{CID: 1, Port: VsockPortAny}, 4); err != nil {
		t.Fatal(err)
	}
	local, err := LocalAddr(ln)
	if err != nil {
		t.Fatal(err)
	}
	port := local.(*SockaddrVM).Port

	// Blocking sockets keep the test simple.
	c, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(c)
	if err := unix.Connect(c, &unix.SockaddrVM{CID: 1, Port: port}); err != nil {
		t.Fatalf("connect vsock 1:%d: %v", port, err)
	}
	var s int
	for {
		s, err = Accept(ln)
		if !IsAgain(err) {
			break
		}
		var pfd = []unix.PollFd{{Fd: int32(ln), Events: unix.POLLIN}}
		_, _ = unix.Poll(pfd, 5000)
	}
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	defer Close(s)
	if err := unix.SetNonblock(s, false); err != nil {
		t.Fatal(err)
	}
	pr, pw, err := Pipe2()
	if err != nil {
		t.Fatal(err)
	}
	defer Close(pr)
	defer Close(pw)
	if err := unix.SetNonblock(pr, false); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(pw, false); err != nil {
		t.Fatal(err)
	}

	msg := bytes.Repeat([]byte("sluice vsock splice "), 1000)
	if _, err := unix.Write(c, msg); err != nil {
		t.Fatal(err)
	}
	// vsock -> pipe
	got := 0
	for got < len(msg) {
		n, err := unix.Splice(s, nil, pw, nil, len(msg)-got, 0)
		if err != nil {
			if IsSpliceUnsupported(err) {
				t.Logf("VSOCK-SPLICE: splice vsock->pipe refused (%v): the relay uses its copy path for vsock", err)
				return
			}
			t.Fatalf("splice vsock->pipe: %v", err)
		}
		got += int(n)
	}
	// pipe -> vsock, back to the client
	sent := 0
	for sent < len(msg) {
		n, err := unix.Splice(pr, nil, s, nil, len(msg)-sent, 0)
		if err != nil {
			if IsSpliceUnsupported(err) {
				t.Logf("VSOCK-SPLICE: splice pipe->vsock refused (%v) although vsock->pipe works: the relay uses its copy path for vsock", err)
				return
			}
			t.Fatalf("splice pipe->vsock: %v", err)
		}
		sent += int(n)
	}
	back := make([]byte, len(msg))
	for off := 0; off < len(back); {
		n, err := unix.Read(c, back[off:])
		if err != nil || n == 0 {
			t.Fatalf("read back after %d bytes: %d, %v", off, n, err)
		}
		off += n
	}
	if !bytes.Equal(back, msg) {
		t.Fatal("bytes spliced through vsock differ from the ones sent")
	}
	t.Logf("VSOCK-SPLICE: splice works both ways on AF_VSOCK (%d bytes each way, byte-exact)", len(msg))
}

// TestIntegrationVsockConnectTimeout checks that the kernel takes the
// connect timeout endpoint.Dial sets on vsock sockets, with the timeval
// layout of this architecture (32-bit boards included).
func TestIntegrationVsockConnectTimeout(t *testing.T) {
	boardOnly(t)
	fd, err := Socket(AFVsock)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(fd)
	if err := SetVsockConnectTimeout(fd, 7500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	tv, err := unix.GetsockoptTimeval(fd, unix.AF_VSOCK, unix.SO_VM_SOCKETS_CONNECT_TIMEOUT)
	if err != nil {
		t.Fatal(err)
	}
	if got := time.Duration(tv.Nano()); got != 7500*time.Millisecond {
		t.Fatalf("connect timeout reads back as %v, want 7.5s", got)
	}
}
