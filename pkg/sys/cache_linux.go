package sys

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Writev sends a then b on a non-blocking socket in one call (sendmsg with
// two iovecs, without raising SIGPIPE) and returns how many bytes went.
func Writev(fd int, a, b []byte) (int, error) {
	var iov [2]unix.Iovec
	n := 0
	for _, p := range [2][]byte{a, b} {
		if len(p) > 0 {
			iov[n].Base = &p[0]
			iov[n].SetLen(len(p))
			n++
		}
	}
	if n == 0 {
		return 0, nil
	}
	msg := unix.Msghdr{Iov: &iov[0]}
	msg.SetIovlen(n)
	m, _, e := unix.RawSyscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), unix.MSG_NOSIGNAL)
	return result(m, e)
}

// Sendfile sends up to n bytes of file in, from *off on, to socket out
// without copying them through user space, and advances *off. It goes
// through the ordinary system call path: it may read the page cache.
func Sendfile(out, in int, off *int64, n int) (int, error) {
	return unix.Sendfile(out, in, off, n)
}

// Pread reads from fd at off without moving its offset (blocking: off the
// loops).
func Pread(fd int, p []byte, off int64) (int, error) {
	n, err := unix.Pread(fd, p, off)
	if err != nil {
		return 0, os.NewSyscallError("pread", err)
	}
	return n, nil
}

// FileSize returns the size of the open file fd.
func FileSize(fd int) (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, os.NewSyscallError("fstat", err)
	}
	return st.Size, nil
}

// ReadAhead reads n bytes of fd from off into the page cache and, where
// readahead(2) is available (64-bit, readahead_64bit.go), waits for it;
// elsewhere, or when it fails, posix_fadvise WILLNEED only starts the
// read. It blocks: call it off the loops, so that a sendfile on a loop
// then finds the pages in memory. Errors are ignored: this is only a
// hint.
func ReadAhead(fd int, off, n int64) {
	if readahead(fd, off, n) != nil {
		_ = unix.Fadvise(fd, off, n, unix.FADV_WILLNEED)
	}
}
