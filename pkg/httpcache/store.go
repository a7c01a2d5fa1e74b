// Package httpcache is sluice's HTTP cache (RFC 9111) as a shared cache:
// which responses may be stored and for how long, when a stored one may be
// served, revalidated or not used (policy.go), the Cache-Control parser
// (cachecontrol.go), and the stores: memory with a byte limit and LRU
// eviction (this file) and an optional crash-safe disk directory
// (disk.go). It knows nothing of sockets or loops: the HTTP proxy asks it
// questions and does the I/O (disk work in the reactor's blocking pool).
//
// A Cache is safe for use by several loops at once; lookups and inserts
// hold its mutex for a map lookup and a few pointer moves.
package httpcache

import (
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/sluice-proxy/sluice/pkg/httpmsg"
)

// Defaults for the zero values of Config.
const (
	DefaultMaxObject = 1 << 20
	DefaultDirSize   = 256 << 20
)

// What a memory entry costs besides its URL, fields and body, in words
// and bytes (its int64 and time fields do not shrink on 32-bit systems),
// measured with TestMemoryAccounting on amd64 and arm: the Entry itself,
// its slots in the index map and slice and the LRU, and per header field
// the parsed Field; per Vary name, two strings.
const (
	word          = strconv.IntSize / 8
	entryOverhead = 40*word + 256
	fieldOverhead = 4 * word
	varyOverhead  = 4 * word
)

// memSize is what e costs in the memory store.
func (e *Entry) memSize() int64 {
	n := int64(len(e.URL)+len(e.Fields)) + e.BodyLen + entryOverhead + int64(len(e.Header))*fieldOverhead
	for i := range e.VaryNames {
		n += int64(len(e.VaryNames[i])+len(e.VaryValues[i])) + varyOverhead
	}
	return n
}

// Config describes a cache.
type Config struct {
	// MaxBytes bounds the memory store (entries, fields and bodies).
	MaxBytes int64
	// MaxObject is the largest body stored. If zero, DefaultMaxObject.
	MaxObject int64
	// Dir, if set, also keeps entries on disk there, in files the cache
	// owns (other files are left alone).
	Dir string
	// DirMaxBytes bounds the disk store. If zero, DefaultDirSize.
	DirMaxBytes int64
	// Log receives disk problems. If nil, slog.Default().
	Log *slog.Logger
}

// Stats are a cache's counters.
type Stats struct {
	// MemEntries and DiskEntries count the stored variants in each
	// store; MemBytes and DiskBytes are what they count against
	// MaxBytes and DirMaxBytes.
	MemEntries, DiskEntries int
	MemBytes, DiskBytes     int64
	// Evicted counts entries dropped for room, in either store.
	Evicted uint64
}

// Cache is a shared HTTP cache.
type Cache struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	mem     lru
	disk    lru
	memURL  map[string][]*Entry
	diskURL map[string][]*Entry
	pending map[string][]func()
	evicted uint64

	// writes counts disk writes queued or running (ReserveWrite).
	writes atomic.Int32
}

// maxWrites bounds the disk writes queued in the reactor's pool at once,
// so a burst of misses cannot fill the pool that DNS lookups and password
// checks share; a response that finds no slot is kept in memory only.
const maxWrites = 8

// ReserveWrite takes a slot for one WriteDisk (or RewriteDisk) and reports
// whether there was one. WriteDisk gives it back; a caller that cannot
// queue the write after all calls CancelWrite.
func (c *Cache) ReserveWrite() bool {
	if c.cfg.Dir == "" {
		return false
	}
	if c.writes.Add(1) > maxWrites {
		c.writes.Add(-1)
		return false
	}
	return true
}

// CancelWrite gives back a slot ReserveWrite took.
func (c *Cache) CancelWrite() { c.writes.Add(-1) }

// lru is a doubly linked list of entries, most recently used first, and
// the bytes they hold.
type lru struct {
	head, tail *Entry
	bytes, max int64
	n          int
}

func (l *lru) pushFront(e *Entry) {
	e.list, e.prev, e.next = l, nil, l.head
	if l.head != nil {
		l.head.prev = e
	}
	l.head = e
	if l.tail == nil {
		l.tail = e
	}
	l.bytes += e.size
	l.n++
}

func (l *lru) remove(e *Entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		l.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		l.tail = e.prev
	}
	e.prev, e.next, e.list = nil, nil, nil
	l.bytes -= e.size
	l.n--
}

func (l *lru) touch(e *Entry) {
	if l.head != e {
		l.remove(e)
		l.pushFront(e)
	}
}

// New returns a cache; with cfg.Dir it reads the disk store's index
// (blocking: call it at start-up, not on a loop).
func New(cfg Config) (*Cache, error) {
	if cfg.MaxObject <= 0 {
		cfg.MaxObject = DefaultMaxObject
	}
	if cfg.DirMaxBytes <= 0 {
		cfg.DirMaxBytes = DefaultDirSize
	}
	c := &Cache{cfg: cfg, log: cfg.Log, memURL: map[string][]*Entry{}, diskURL: map[string][]*Entry{},
		pending: map[string][]func(){}}
	if c.log == nil {
		c.log = slog.Default()
	}
	c.mem.max, c.disk.max = cfg.MaxBytes, cfg.DirMaxBytes
	if cfg.Dir != "" {
		if err := c.loadDisk(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// MaxObject returns the largest body the cache stores.
func (c *Cache) MaxObject() int64 { return c.cfg.MaxObject }

// Lookup returns the stored variant of url that matches a request with
// header h, from memory if there, else from disk, and marks it used.
func (c *Cache) Lookup(r Request) *Entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.touch(find(c.memURL[r.URL], r.Header), find(c.diskURL[r.URL], r.Header))
}

// LookupKey is Lookup for a URL given as bytes (a hit allocates nothing).
func (c *Cache) LookupKey(url []byte, h httpmsg.Header) *Entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.touch(find(c.memURL[string(url)], h), find(c.diskURL[string(url)], h))
}

// touch marks the memory entry mem, else the disk entry disk, used and
// returns it.
func (c *Cache) touch(mem, disk *Entry) *Entry {
	switch {
	case mem != nil:
		c.mem.touch(mem)
		return mem
	case disk != nil:
		c.disk.touch(disk)
		return disk
	}
	return nil
}

func find(vs []*Entry, h httpmsg.Header) *Entry {
	for _, e := range vs {
		if e.Matches(h) {
			return e
		}
	}
	return nil
}

// Put stores e (with its Body) in memory, replacing the variant it
// matches, and evicts the least recently used entries past the byte
// limit. An entry larger than the limit is not stored.
func (c *Cache) Put(e *Entry) {
	e.size = e.memSize()
	if e.size > c.mem.max || e.BodyLen > c.cfg.MaxObject {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.memURL[e.URL] = replaceVariant(&c.mem, c.memURL[e.URL], e)
	c.mem.pushFront(e)
	for c.mem.bytes > c.mem.max {
		c.dropLocked(c.mem.tail, c.memURL)
		c.evicted++
	}
}

// replaceVariant removes from vs (and l) the entries e replaces: the same
// variant, or any variant when the Vary names changed.
func replaceVariant(l *lru, vs []*Entry, e *Entry) []*Entry {
	return append(slices.DeleteFunc(vs, func(o *Entry) bool {
		if slices.Equal(o.VaryNames, e.VaryNames) && !slices.Equal(o.VaryValues, e.VaryValues) {
			return false
		}
		if o.list == l {
			l.remove(o)
		}
		return true
	}), e)
}

func (c *Cache) dropLocked(e *Entry, index map[string][]*Entry) {
	e.list.remove(e)
	vs := slices.DeleteFunc(index[e.URL], func(o *Entry) bool { return o == e })
	if len(vs) == 0 {
		delete(index, e.URL)
	} else {
		index[e.URL] = vs
	}
}

// Invalidate drops every stored variant of url (an unsafe method went
// through, RFC 9111 section 4.4) and returns the disk files to remove,
// which the caller deletes off the loop (RemoveFiles).
func (c *Cache) Invalidate(url string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.memURL[url] {
		c.mem.remove(e)
	}
	delete(c.memURL, url)
	var files []string
	for _, e := range c.diskURL[url] {
		c.disk.remove(e)
		files = append(files, e.File)
	}
	delete(c.diskURL, url)
	return files
}

// Join collapses concurrent misses of one URL: the first caller becomes
// the leader (true) and must call Release when its fetch ends, stored or
// not; later callers get false and their wake is called (on the leader's
// goroutine) at that Release.
func (c *Cache) Join(url string, wake func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	ws, ok := c.pending[url]
	if !ok {
		c.pending[url] = nil
		return true
	}
	c.pending[url] = append(ws, wake)
	return false
}

// Release ends the leader's fetch of url and wakes the waiters.
func (c *Cache) Release(url string) {
	c.mu.Lock()
	ws := c.pending[url]
	delete(c.pending, url)
	c.mu.Unlock()
	for _, w := range ws {
		w()
	}
}

// Stats returns the cache's figures.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{MemEntries: c.mem.n, DiskEntries: c.disk.n, MemBytes: c.mem.bytes, DiskBytes: c.disk.bytes, Evicted: c.evicted}
}
