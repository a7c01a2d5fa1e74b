//go:build linux && (amd64 || arm64 || riscv64 || loong64 || mips64 || mips64le || ppc64 || ppc64le || s390x)

package sys

import "golang.org/x/sys/unix"

// readahead is readahead(2): offset and count fit one register each.
func readahead(fd int, off, n int64) error {
	if _, _, e := unix.Syscall(unix.SYS_READAHEAD, uintptr(fd), uintptr(off), uintptr(n)); e != 0 {
		return e
	}
	return nil
}
