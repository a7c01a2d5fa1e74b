package httpcache

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-proxy/sluice/pkg/sys"
)

// A disk entry is one file named by the SHA-256 of its URL and variant,
// with the suffix fileSuffix:
//
//	magic "SLCACHE1" | meta length (4 bytes, big endian) | meta (JSON) | body
//
// It is written to a temporary file (tmpPrefix), fsynced, renamed into
// place and the directory fsynced, so a crash leaves either the old file,
// the new one, or a temporary file that the next start removes (temporary
// names carry the writer's PID, so a cache made by a reload in the same
// process leaves the writes of its predecessor alone). A file
// shorter than its meta says (a crash of the disk under it, or someone
// else's truncation) is found and removed at start or when a hit opens it.
const (
	diskMagic  = "SLCACHE1"
	fileSuffix = ".sc"
	tmpPrefix  = ".tmp-"
	maxMeta    = 1 << 20
)

// ErrDamaged is a disk entry whose file is not what its index says.
var ErrDamaged = errors.New("damaged cache file")

// diskMeta is what a disk entry's file says about it.
type diskMeta struct {
	URL          string
	Status       int
	Reason       string
	Fields       string
	RequestTime  time.Time
	ResponseTime time.Time
	AgeValue     int64
	VaryNames    []string
	VaryValues   []string
	BodyLen      int64
}

func fileName(e *Entry) string {
	h := sha256.New()
	h.Write([]byte(e.URL))
	for _, v := range e.VaryValues {
		h.Write([]byte{0})
		h.Write([]byte(v))
	}
	return hex.EncodeToString(h.Sum(nil)[:16]) + fileSuffix
}

// WriteDisk writes e (a memory entry, with its body) to the disk store
// crash-safely and indexes it, evicting past the disk's byte limit. It
// blocks: run it in the reactor's pool, after ReserveWrite, whose slot it
// gives back.
func (c *Cache) WriteDisk(e *Entry) error {
	defer c.writes.Add(-1)
	if c.cfg.Dir == "" || e.BodyLen > c.cfg.MaxObject {
		return nil
	}
	return c.writeEntry(e, bytes.NewReader(e.Body))
}

// RewriteDisk stores the head of e, a disk entry updated by a 304 (its
// File and BodyOff still those of the current file), with the body copied
// from the current file, crash-safely, and indexes it. It blocks: run it
// in the pool, after ReserveWrite, whose slot it gives back. A hit that
// already opened the old file keeps reading it.
func (c *Cache) RewriteDisk(e *Entry) error {
	defer c.writes.Add(-1)
	f, err := os.Open(e.File)
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	if fi.Size() != e.BodyOff+e.BodyLen {
		return fmt.Errorf("%w: %s is %d bytes, want %d", ErrDamaged, e.File, fi.Size(), e.BodyOff+e.BodyLen)
	}
	return c.writeEntry(e, io.NewSectionReader(f, e.BodyOff, e.BodyLen))
}

// writeEntry writes e's head and body (from body) to its file and indexes
// it, evicting past the disk's byte limit.
func (c *Cache) writeEntry(e *Entry, body io.Reader) error {
	meta, err := json.Marshal(diskMeta{URL: e.URL, Status: e.Status, Reason: e.Reason, Fields: e.Fields,
		RequestTime: e.RequestTime, ResponseTime: e.ResponseTime, AgeValue: e.AgeValue,
		VaryNames: e.VaryNames, VaryValues: e.VaryValues, BodyLen: e.BodyLen})
	if err != nil {
		return fmt.Errorf("cache: encode %s: %w", e.URL, err)
	}
	final := filepath.Join(c.cfg.Dir, fileName(e))
	if err := writeAtomic(c.cfg.Dir, final, meta, body, e.BodyLen); err != nil {
		return err
	}
	d := c.diskEntry(e, final, int64(len(diskMagic)+4+len(meta)))
	c.mu.Lock()
	var gone []string
	vs := c.diskURL[d.URL]
	for _, o := range vs {
		if (!slices.Equal(o.VaryNames, d.VaryNames) || slices.Equal(o.VaryValues, d.VaryValues)) && o.File != final {
			gone = append(gone, o.File)
		}
	}
	c.diskURL[d.URL] = replaceVariant(&c.disk, vs, d)
	c.disk.pushFront(d)
	gone = append(gone, c.evictDiskLocked()...)
	c.mu.Unlock()
	RemoveFiles(gone)
	return nil
}

func (c *Cache) diskEntry(e *Entry, file string, off int64) *Entry {
	d := &Entry{URL: e.URL, Status: e.Status, Reason: e.Reason, Fields: e.Fields, RequestTime: e.RequestTime,
		ResponseTime: e.ResponseTime, AgeValue: e.AgeValue, VaryNames: e.VaryNames, VaryValues: e.VaryValues,
		BodyLen: e.BodyLen, File: file, BodyOff: off}
	d.derive()
	d.size = off + d.BodyLen
	return d
}

func (c *Cache) evictDiskLocked() []string {
	var gone []string
	for c.disk.bytes > c.disk.max && c.disk.tail != nil {
		e := c.disk.tail
		c.dropLocked(e, c.diskURL)
		c.evicted++
		gone = append(gone, e.File)
	}
	return gone
}

// RemoveFiles deletes disk entries' files (blocking: in the pool).
func RemoveFiles(files []string) {
	for _, f := range files {
		_ = os.Remove(f)
	}
}

func writeAtomic(dir, final string, meta []byte, body io.Reader, n int64) error {
	f, err := os.CreateTemp(dir, tmpPrefix+strconv.Itoa(os.Getpid())+"-*")
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	tmp := f.Name()
	var hdr [len(diskMagic) + 4]byte
	copy(hdr[:], diskMagic)
	binary.BigEndian.PutUint32(hdr[len(diskMagic):], uint32(len(meta)))
	_, err = f.Write(hdr[:])
	if err == nil {
		_, err = f.Write(meta)
	}
	if err == nil {
		var m int64
		if m, err = io.Copy(f, body); err == nil && m != n {
			err = fmt.Errorf("%w: body of %d bytes, want %d", ErrDamaged, m, n)
		}
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, final)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("cache: write %s: %w", final, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // the rename itself survives a crash
		_ = d.Close()
	}
	return nil
}

// loadDisk builds the disk index from the directory: temporary files of
// interrupted writes and damaged entries are removed (and logged), the
// rest indexed, most recently modified first.
func (c *Cache) loadDisk() error {
	if err := os.MkdirAll(c.cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("cache dir: %w", err)
	}
	des, err := os.ReadDir(c.cfg.Dir)
	if err != nil {
		return fmt.Errorf("cache dir: %w", err)
	}
	type found struct {
		e     *Entry
		mtime time.Time
	}
	var all []found
	for _, de := range des {
		name := de.Name()
		path := filepath.Join(c.cfg.Dir, name)
		switch {
		case strings.HasPrefix(name, tmpPrefix):
			if !strings.HasPrefix(name, tmpPrefix+strconv.Itoa(os.Getpid())+"-") {
				_ = os.Remove(path)
			}
		case strings.HasSuffix(name, fileSuffix) && de.Type().IsRegular():
			e, mtime, err := c.readEntry(path)
			if err != nil {
				c.log.Warn("cache: discarding a disk entry", "file", path, "err", err)
				_ = os.Remove(path)
				continue
			}
			all = append(all, found{e, mtime})
		}
	}
	slices.SortFunc(all, func(a, b found) int { return a.mtime.Compare(b.mtime) })
	c.mu.Lock()
	for _, f := range all {
		c.diskURL[f.e.URL] = replaceVariant(&c.disk, c.diskURL[f.e.URL], f.e)
		c.disk.pushFront(f.e)
	}
	gone := c.evictDiskLocked()
	c.mu.Unlock()
	RemoveFiles(gone)
	return nil
}

// readEntry reads and checks a disk entry's head.
func (c *Cache) readEntry(path string) (*Entry, time.Time, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, time.Time{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, time.Time{}, err
	}
	e, off, err := decodeHead(f, fi.Size())
	if err != nil {
		return nil, time.Time{}, err
	}
	if path != filepath.Join(c.cfg.Dir, fileName(e)) {
		return nil, time.Time{}, fmt.Errorf("%w: name does not match its URL", ErrDamaged)
	}
	return c.diskEntry(e, path, off), fi.ModTime(), nil
}

// decodeHead reads a disk entry's head from r, a file of size bytes, and
// returns the entry (without File) and where its body starts.
func decodeHead(r io.Reader, size int64) (*Entry, int64, error) {
	var hdr [len(diskMagic) + 4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil || string(hdr[:len(diskMagic)]) != diskMagic {
		return nil, 0, fmt.Errorf("%w: bad header", ErrDamaged)
	}
	n := binary.BigEndian.Uint32(hdr[len(diskMagic):])
	if n > maxMeta {
		return nil, 0, fmt.Errorf("%w: meta of %d bytes", ErrDamaged, n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, 0, fmt.Errorf("%w: short meta", ErrDamaged)
	}
	var m diskMeta
	if err := json.Unmarshal(buf, &m); err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrDamaged, err)
	}
	off := int64(len(hdr)) + int64(n)
	if m.BodyLen < 0 || m.BodyLen > size || size != off+m.BodyLen {
		return nil, 0, fmt.Errorf("%w: %d bytes, want %d", ErrDamaged, size, off+m.BodyLen)
	}
	if len(m.VaryNames) != len(m.VaryValues) {
		return nil, 0, fmt.Errorf("%w: vary", ErrDamaged)
	}
	return &Entry{URL: m.URL, Status: m.Status, Reason: m.Reason, Fields: m.Fields, RequestTime: m.RequestTime,
		ResponseTime: m.ResponseTime, AgeValue: m.AgeValue, VaryNames: m.VaryNames, VaryValues: m.VaryValues, BodyLen: m.BodyLen}, off, nil
}

// OpenBody opens a disk entry's file for sending its body, checks its
// size and reads the body into the page cache (so sendfile on a loop
// does not wait for the disk); a damaged file is dropped from the index
// and removed. It blocks: run it in the reactor's pool. The caller closes
// the fd.
func (c *Cache) OpenBody(e *Entry) (int, error) {
	fd, err := sys.Open(e.File)
	if err != nil {
		c.forget(e)
		return -1, fmt.Errorf("cache: %w", err)
	}
	size, err := sys.FileSize(fd)
	if err == nil && size != e.BodyOff+e.BodyLen {
		err = fmt.Errorf("%w: %s is %d bytes, want %d", ErrDamaged, e.File, size, e.BodyOff+e.BodyLen)
	}
	if err != nil {
		sys.Close(fd)
		c.forget(e)
		_ = os.Remove(e.File)
		return -1, err
	}
	sys.ReadAhead(fd, e.BodyOff, e.BodyLen)
	return fd, nil
}

// Promote copies a disk entry's body from fd, its open file, into the
// memory store, so that later hits are served from memory (a hot object
// after a restart, or one memory had evicted). It blocks: run it in the
// pool, after OpenBody. A body that memory cannot hold is left on disk.
func (c *Cache) Promote(e *Entry, fd int) error {
	if e.BodyLen > c.cfg.MaxObject || e.memSize() > c.mem.max {
		return nil
	}
	body := make([]byte, e.BodyLen)
	for off := 0; off < len(body); {
		n, err := sys.Pread(fd, body[off:], e.BodyOff+int64(off))
		if err != nil {
			return fmt.Errorf("cache: promote %s: %w", e.URL, err)
		}
		if n == 0 {
			return fmt.Errorf("%w: %s ends early", ErrDamaged, e.File)
		}
		off += n
	}
	m := &Entry{URL: e.URL, Status: e.Status, Reason: e.Reason, Fields: e.Fields, RequestTime: e.RequestTime,
		ResponseTime: e.ResponseTime, AgeValue: e.AgeValue, VaryNames: e.VaryNames, VaryValues: e.VaryValues,
		Body: body, BodyLen: e.BodyLen}
	m.derive()
	c.Put(m)
	return nil
}

// forget drops a disk entry from the index.
func (c *Cache) forget(e *Entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e.list == &c.disk {
		c.dropLocked(e, c.diskURL)
	}
}
