package sys

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCacheCalls checks the calls a cache hit makes: the file's size,
// read-ahead, head and body in one sendmsg, and a body by sendfile from
// an offset, read back byte for byte from the other end of a socket pair.
func TestCacheCalls(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 10000)
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, append([]byte("HEAD"), body...), 0o600); err != nil {
		t.Fatal(err)
	}
	fd, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(fd)
	if n, err := FileSize(fd); err != nil || n != int64(4+len(body)) {
		t.Fatalf("FileSize = %d, %v", n, err)
	}
	ReadAhead(fd, 4, int64(len(body)))

	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := os.NewFile(uintptr(pair[1]), "peer")
	defer out.Close()
	defer Close(pair[0])
	got := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(out)
		got <- b
	}()
	n, err := Writev(pair[0], []byte("head:"), []byte("small body;"))
	if err != nil || n != 16 {
		t.Fatalf("Writev = %d, %v", n, err)
	}
	off := int64(4)
	for left := len(body); left > 0; {
		m, err := Sendfile(pair[0], fd, &off, left)
		if err != nil {
			t.Fatalf("Sendfile: %v", err)
		}
		left -= m
	}
	if err := ShutdownWrite(pair[0]); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, append([]byte("head:small body;"), body...)) {
		t.Errorf("peer read %d bytes, not what was sent", len(b))
	}
	if off != int64(4+len(body)) {
		t.Errorf("offset after sendfile %d", off)
	}
}
