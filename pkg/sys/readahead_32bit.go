//go:build linux && (386 || arm || mips || mipsle)

package sys

import "golang.org/x/sys/unix"

// readahead answers ENOSYS without a system call on 32-bit systems, whose
// readahead(2) splits the offset over registers differently per ABI:
// ReadAhead falls back to posix_fadvise, which x/sys wraps for each.
func readahead(int, int64, int64) error { return unix.ENOSYS }
