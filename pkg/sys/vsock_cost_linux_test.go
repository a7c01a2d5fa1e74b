package sys

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// vsockPair returns the two ends of a blocking AF_VSOCK connection over
// vsock_loopback (CID 1). Board guests only (see boardOnly).
func vsockPair(t *testing.T) (client, server int) {
	t.Helper()
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
	if err := unix.SetNonblock(ln, false); err != nil {
		t.Fatal(err)
	}
	c, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Connect(c, &unix.SockaddrVM{CID: 1, Port: local.(*SockaddrVM).Port}); err != nil {
		Close(c)
		t.Fatalf("connect: %v", err)
	}
	s, _, err := unix.Accept4(ln, unix.SOCK_CLOEXEC)
	if err != nil {
		Close(c)
		t.Fatalf("accept: %v", err)
	}
	return c, s
}

// blockingPipe returns a blocking pipe of about 1 MiB, like the relay's.
func blockingPipe(t *testing.T) (r, w int) {
	t.Helper()
	r, w, err := Pipe2()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Close(r); Close(w) })
	if err := unix.SetNonblock(r, false); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(w, false); err != nil {
		t.Fatal(err)
	}
	if _, err := SetPipeSize(w, 1<<20); err != nil {
		t.Fatal(err)
	}
	return r, w
}

func cpuTime() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestIntegrationVsockSpliceCost measures what each half of the relay's
// splice path costs on AF_VSOCK against plain read/write with the copy
// path's 32 KiB buffers: 32 MiB through one vsock_loopback connection per
// mode, CPU time of the whole process. It logs VSOCK-COST lines (the board
// prints them) and checks only that every byte arrived. Measured on the
// 6.1 guests: splice vsock->pipe costs about what read() does; splice
// pipe->vsock about twice what write() does, in smaller packets, since
// AF_VSOCK has no sendpage and the kernel sends page by page.
func TestIntegrationVsockSpliceCost(t *testing.T) {
	boardOnly(t)
	const total = 32 << 20
	for _, mode := range []string{"write", "splice-to-vsock", "splice-from-vsock"} {
		c, s := vsockPair(t)
		got := make(chan [2]int, 1) // read calls, bytes
		go func() {
			calls, n := 0, 0
			buf := make([]byte, 32<<10)
			if mode == "splice-from-vsock" {
				pr, pw := blockingPipe(t)
				for n < total {
					m, err := unix.Splice(s, nil, pw, nil, 1<<20, 0)
					if err != nil || m == 0 {
						break
					}
					calls++
					n += int(m)
					for left := int(m); left > 0; {
						k, err := unix.Read(pr, buf)
						if err != nil || k == 0 {
							break
						}
						left -= k
					}
				}
			} else {
				for n < total {
					k, err := unix.Read(s, buf)
					if err != nil || k == 0 {
						break
					}
					calls++
					n += k
				}
			}
			got <- [2]int{calls, n}
		}()
		start, cpu0 := time.Now(), cpuTime()
		writes := 0
		buf := make([]byte, 1<<20)
		if mode == "splice-to-vsock" {
			pr, pw := blockingPipe(t)
			for sent := 0; sent < total; {
				k, err := unix.Write(pw, buf)
				if err != nil {
					t.Fatal(err)
				}
				for k > 0 {
					m, err := unix.Splice(pr, nil, c, nil, k, 0)
					if err != nil {
						t.Fatalf("splice pipe->vsock: %v", err)
					}
					writes++
					k -= int(m)
					sent += int(m)
				}
			}
		} else {
			for sent := 0; sent < total; {
				k, err := unix.Write(c, buf[:32<<10])
				if err != nil {
					t.Fatal(err)
				}
				writes++
				sent += k
			}
		}
		r := <-got
		took, cpu := time.Since(start), cpuTime()-cpu0
		Close(c)
		Close(s)
		if r[1] != total {
			t.Fatalf("%s: %d bytes arrived, want %d", mode, r[1], total)
		}
		t.Logf("VSOCK-COST %s: 32 MiB, cpu %v (wall %v), %d sending calls, %d receiving calls, %d bytes per receive",
			mode, cpu.Round(time.Millisecond), took.Round(time.Millisecond), writes, r[0], r[1]/max(r[0], 1))
	}
}
