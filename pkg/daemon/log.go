package daemon

import (
	"fmt"
	"io"
	"log/slog"
	"log/syslog"
	"os"
	"sync"
)

// openLog returns a logger writing to target ("stderr", "syslog" or a file
// path) at the level held by level, and what to close on exit.
func openLog(target string, size int64, stderr io.Writer, level *slog.LevelVar) (*slog.Logger, io.Closer, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch target {
	case "", "stderr":
		return slog.New(slog.NewTextHandler(stderr, opts)), io.NopCloser(nil), nil
	case "syslog":
		w, err := syslog.New(syslog.LOG_DAEMON|syslog.LOG_INFO, "sluice")
		if err != nil {
			return nil, nil, fmt.Errorf("log to syslog: %w", err)
		}
		// syslog stamps the time itself.
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
		return slog.New(slog.NewTextHandler(w, opts)), w, nil
	default:
		f, err := openCapped(target, size)
		if err != nil {
			return nil, nil, err
		}
		return slog.New(slog.NewTextHandler(f, opts)), f, nil
	}
}

// cappedFile is a log file that never grows past max bytes: when a write
// would take it past, the file is renamed to PATH.1 (replacing the older
// one) and a new one started. Routers keep /var on a small tmpfs.
type cappedFile struct {
	path string
	max  int64

	mu   sync.Mutex
	f    *os.File
	size int64
}

func openCapped(path string, max int64) (*cappedFile, error) {
	c := &cappedFile{path: path, max: max}
	if err := c.open(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *cappedFile) open() error {
	f, err := os.OpenFile(c.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("log file: %w", err)
	}
	c.f, c.size = f, fi.Size()
	return nil
}

// Write appends p, rotating first when p would not fit.
func (c *cappedFile) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.size+int64(len(p)) > c.max && c.size > 0 {
		c.f.Close()
		if err := os.Rename(c.path, c.path+".1"); err != nil {
			os.Remove(c.path)
		}
		if err := c.open(); err != nil {
			return 0, err
		}
	}
	n, err := c.f.Write(p)
	c.size += int64(n)
	return n, err
}

// Close closes the file.
func (c *cappedFile) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.f.Close()
}
