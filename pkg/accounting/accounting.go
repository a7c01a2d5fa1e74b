// Package accounting counts traffic and time per identity (a user, or a
// client address that is no user), enforces quotas per day, week or month,
// and keeps the counters in a file that survives restarts.
//
// Services resolve an identity's Record once per connection (Open) and add
// to it once per request or tunnel (Add), so the per-byte path never sees
// accounting. A Record has its own mutex: loops are OS threads and a user's
// connections may live on several of them. Counters live in memory and are
// written to Dir every Interval while they change, and by Flush (the daemon
// calls it on SIGHUP and SIGTERM): temp file, fsync, rename, fsync of the
// directory, so a crash loses at most one interval and a torn write is
// never read back. Flushes run on their own goroutine, never on a loop.
// Live connections of an identity with a quota are synced and checked
// every QuotaCheck while there are any (Watch), so a quota also stops a
// long download or tunnel.
package accounting

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Config.
const (
	DefaultInterval   = 5 * time.Minute
	DefaultMaxRecords = 4096
)

// AddrPrefix starts the key of a client that is no user: "addr:192.168.1.7",
// or "addr:2001:db8:1:2::/64" (an IPv6 client is counted by its /64, since
// privacy addresses of one device change within it).
const AddrPrefix = "addr:"

// OtherKey collects the clients past MaxRecords address identities.
const OtherKey = AddrPrefix + "other"

// Config sets up an Accounting. The zero value counts in memory only.
type Config struct {
	// Dir holds the counters file (FileName). If empty, nothing is saved.
	Dir string
	// Interval is how often changed counters are written. If zero,
	// DefaultInterval.
	Interval time.Duration
	// Location is the time zone periods start in. If nil, time.Local.
	Location *time.Location
	// MaxRecords bounds the address identities kept; clients past it are
	// counted together under OtherKey. If zero, DefaultMaxRecords.
	MaxRecords int
	// QuotaCheck is how often watched sources (live connections of
	// identities with a quota) are synced and checked. If zero,
	// DefaultQuotaCheck.
	QuotaCheck time.Duration
	// Now is the clock. If nil, time.Now.
	Now func() time.Time
	// Log receives flush failures and set-aside files. If nil,
	// slog.Default().
	Log *slog.Logger
}

// Quota limits an identity per Period. A zero Bytes or Time is no limit on
// that measure.
type Quota struct {
	Period Period
	Bytes  uint64        // bytes up and down together
	Time   time.Duration // connected time
}

// IsZero reports whether q limits nothing.
func (q Quota) IsZero() bool { return q.Bytes == 0 && q.Time == 0 }

// Accounting holds every identity's counters. It is safe for concurrent
// use.
type Accounting struct {
	cfg    Config
	log    *slog.Logger
	quotas atomic.Pointer[map[string]Quota]

	mu    sync.RWMutex
	recs  map[string]*Record
	addrs int // address identities in recs

	// dirty is set by the first change after a flush, which arms the
	// flush timer: an idle Accounting has no timer at all.
	dirty   atomic.Bool
	flushMu sync.Mutex // one flush at a time
	tmu     sync.Mutex
	timer   *time.Timer
	closed  bool
	online  atomic.Int64 // records with a live connection

	sources sourceSet // synced before each flush and snapshot

	watched sourceSet  // synced every QuotaCheck (watch.go)
	wmu     sync.Mutex // guards the watch timer
	wtimer  *time.Timer
	wclosed bool
}

// Source has counts that live connections have not added yet (the bytes
// of a long tunnel, added otherwise when it ends). The Accounting asks
// every source to add them before each flush and snapshot.
type Source interface {
	// Sync adds what the source's connections moved since the last
	// call, returning when done or when ctx is.
	Sync(ctx context.Context)
}

// syncTimeout bounds how long a flush or snapshot waits for sources.
const syncTimeout = 2 * time.Second

// AddSource registers s until RemoveSource.
func (a *Accounting) AddSource(s Source) { a.sources.add(s) }

// RemoveSource unregisters s.
func (a *Accounting) RemoveSource(s Source) { a.sources.remove(s) }

// sync asks every source for its counts.
func (a *Accounting) sync() { a.sources.sync() }

// sourceSet is a set of Sources, safe for concurrent use.
type sourceSet struct {
	mu sync.Mutex
	m  map[Source]struct{}
}

func (ss *sourceSet) add(s Source) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.m == nil {
		ss.m = make(map[Source]struct{})
	}
	ss.m[s] = struct{}{}
}

func (ss *sourceSet) remove(s Source) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.m, s)
}

func (ss *sourceSet) len() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.m)
}

// sync runs every source's Sync, all within syncTimeout, outside mu: a
// source may add or remove itself meanwhile.
func (ss *sourceSet) sync() {
	ss.mu.Lock()
	srcs := make([]Source, 0, len(ss.m))
	for s := range ss.m {
		srcs = append(srcs, s)
	}
	ss.mu.Unlock()
	if len(srcs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
	defer cancel()
	for _, s := range srcs {
		s.Sync(ctx)
	}
}

// New returns an Accounting with the counters saved in cfg.Dir, if any. A
// file that cannot be read back (corrupt, truncated, another version) is
// renamed aside with a .corrupt suffix and reported in the error
// (*CorruptError) while the returned Accounting starts empty; any other
// error returns nil.
func New(cfg Config) (*Accounting, error) {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Location == nil {
		cfg.Location = time.Local
	}
	if cfg.MaxRecords <= 0 {
		cfg.MaxRecords = DefaultMaxRecords
	}
	if cfg.QuotaCheck <= 0 {
		cfg.QuotaCheck = DefaultQuotaCheck
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &Accounting{cfg: cfg, log: cfg.Log, recs: make(map[string]*Record)}
	if a.log == nil {
		a.log = slog.Default()
	}
	empty := map[string]Quota{}
	a.quotas.Store(&empty)
	if cfg.Dir == "" {
		return a, nil
	}
	states, err := loadFile(cfg.Dir, cfg.Now())
	var corrupt *CorruptError
	if err != nil && !errors.As(err, &corrupt) {
		return nil, err
	}
	now := cfg.Now()
	for _, st := range states {
		r := a.newRecord(st.key)
		r.total = st.total
		for p := range numPeriods {
			start := p.Start(now, cfg.Location)
			if st.periods[p].start.Equal(start) {
				r.periods[p] = st.periods[p]
				r.periods[p].start = start
				r.periods[p].end = p.Next(start, cfg.Location).UnixNano()
			}
		}
		a.recs[st.key] = r
		if isAddrKey(st.key) {
			a.addrs++
		}
	}
	return a, err
}

// Key returns the identity of a client: user when not empty, else the
// client's address (see AddrPrefix).
func Key(user string, client netip.Addr) string {
	if user != "" {
		return user
	}
	client = client.Unmap()
	if client.Is6() {
		p, _ := client.WithZone("").Prefix(64)
		return AddrPrefix + p.String()
	}
	return AddrPrefix + client.String()
}

func isAddrKey(k string) bool { return len(k) > len(AddrPrefix) && k[:len(AddrPrefix)] == AddrPrefix }

// SetQuotas replaces the quotas, by key (user name); identities without an
// entry have none. Safe while traffic flows (a reload).
func (a *Accounting) SetQuotas(q map[string]Quota) {
	m := make(map[string]Quota, len(q))
	for k, v := range q {
		if !v.IsZero() {
			m[k] = v
		}
	}
	a.quotas.Store(&m)
}

// Location returns the time zone periods start in.
func (a *Accounting) Location() *time.Location { return a.cfg.Location }

// Record returns the counters of key, creating them.
func (a *Accounting) Record(key string) *Record {
	a.mu.RLock()
	r := a.recs[key]
	a.mu.RUnlock()
	if r != nil {
		return r
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if r = a.recs[key]; r != nil {
		return r
	}
	if isAddrKey(key) {
		if a.addrs >= a.cfg.MaxRecords {
			key = OtherKey
			if r = a.recs[key]; r != nil {
				return r
			}
		}
		a.addrs++
	}
	r = a.newRecord(key)
	a.recs[key] = r
	return r
}

func (a *Accounting) newRecord(key string) *Record {
	r := &Record{key: key, acc: a}
	for p := range numPeriods {
		r.periods[p].end = -1 << 63 // rolled on first use
	}
	return r
}

// changed notes that counters changed and arms the flush timer if it is
// not armed.
func (a *Accounting) changed() {
	if a.dirty.Load() || a.dirty.Swap(true) {
		return
	}
	a.arm()
}

// arm starts the flush timer unless it runs (or there is no file).
func (a *Accounting) arm() {
	if a.cfg.Dir == "" {
		return
	}
	a.tmu.Lock()
	defer a.tmu.Unlock()
	if a.closed || a.timer != nil {
		return
	}
	a.timer = time.AfterFunc(a.cfg.Interval, a.tick)
}

// tick is the flush timer: write, then stay armed while anyone is
// connected (their time keeps counting) or something is still unwritten
// (a change meanwhile, or a failed write to retry).
func (a *Accounting) tick() {
	a.tmu.Lock()
	a.timer = nil
	a.tmu.Unlock()
	if err := a.Flush(); err != nil {
		a.log.Error("accounting: flush failed", "err", err)
	}
	if a.dirty.Load() || a.online.Load() > 0 {
		a.arm()
	}
}

// Flush writes the counters to Dir now, if they changed since the last
// write. It blocks on the disk: never call it on an event loop.
func (a *Accounting) Flush() error {
	if a.cfg.Dir == "" {
		return nil
	}
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	a.sync()
	if !a.dirty.Swap(false) && a.online.Load() == 0 {
		return nil
	}
	now := a.cfg.Now()
	states := a.states(now)
	if err := saveFile(a.cfg.Dir, states); err != nil {
		a.dirty.Store(true)
		return err
	}
	return nil
}

// Close writes the counters a last time and stops the flush and watch timers.
func (a *Accounting) Close() error {
	a.stopWatch()
	a.tmu.Lock()
	a.closed = true
	if a.timer != nil {
		a.timer.Stop()
		a.timer = nil
	}
	a.tmu.Unlock()
	return a.Flush()
}

// states copies every record worth keeping (it counted something).
func (a *Accounting) states(now time.Time) []state {
	a.mu.RLock()
	recs := make([]*Record, 0, len(a.recs))
	for _, r := range a.recs {
		recs = append(recs, r)
	}
	a.mu.RUnlock()
	out := make([]state, 0, len(recs))
	for _, r := range recs {
		r.mu.Lock()
		r.update(now)
		st := state{key: r.key, total: r.total, periods: r.periods}
		r.mu.Unlock()
		if st.total != (Counters{}) {
			out = append(out, st)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key < out[j].key })
	return out
}

// Reset zeroes the counters of key (a user name, "addr:..." or a bare
// client address) and writes the file. It reports whether key was known.
func (a *Accounting) Reset(key string) (bool, error) {
	if ip, err := netip.ParseAddr(key); err == nil {
		key = Key("", ip)
	}
	a.mu.RLock()
	r := a.recs[key]
	a.mu.RUnlock()
	if r == nil {
		return false, nil
	}
	now := a.cfg.Now()
	r.mu.Lock()
	r.total = Counters{}
	for p := range numPeriods {
		r.periods[p] = usage{end: -1 << 63}
	}
	r.since = now
	r.mu.Unlock()
	a.dirty.Store(true)
	return true, a.Flush()
}

// Counters are an identity's totals since its first request (or its last
// reset).
type Counters struct {
	BytesUp   uint64 // request bodies and tunnel bytes, client to origin
	BytesDown uint64 // response bodies and tunnel bytes, origin to client
	Requests  uint64 // requests and tunnels
	Conns     uint64 // client connections
	// Online is the time the identity had at least one connection open.
	Online time.Duration
	// First and Last are the first and latest activity (zero: never).
	First, Last time.Time
}

// usage is what one period has counted.
type usage struct {
	start     time.Time
	end       int64 // unix nanoseconds of the next period's start
	bytesUp   uint64
	bytesDown uint64
	online    time.Duration
}

// Record is one identity's counters. Its methods are safe for concurrent
// use; services keep the pointer for the life of a connection.
type Record struct {
	key string
	acc *Accounting

	mu      sync.Mutex
	total   Counters
	periods [numPeriods]usage
	live    int       // open connections
	since   time.Time // when online time was last folded in (live > 0)
}

// Key returns the identity the record counts.
func (r *Record) Key() string { return r.key }

// update rolls periods over and folds in connected time up to now. Called
// with r.mu held.
func (r *Record) update(now time.Time) {
	ns := now.UnixNano()
	loc := r.acc.cfg.Location
	for p := range numPeriods {
		u := &r.periods[p]
		if ns < u.end {
			continue
		}
		start := p.Start(now, loc)
		*u = usage{start: start, end: p.Next(start, loc).UnixNano()}
	}
	if r.live == 0 || !now.After(r.since) {
		return
	}
	d := now.Sub(r.since)
	r.total.Online += d
	for p := range numPeriods {
		u := &r.periods[p]
		if r.since.Before(u.start) {
			u.online += now.Sub(u.start)
		} else {
			u.online += d
		}
	}
	r.since = now
}

func (r *Record) seen(now time.Time) {
	if r.total.First.IsZero() {
		r.total.First = now
	}
	if now.After(r.total.Last) {
		r.total.Last = now
	}
}

// Open counts a new connection of the identity; its connected time runs
// until the matching Close.
func (r *Record) Open(now time.Time) {
	r.mu.Lock()
	r.update(now)
	r.total.Conns++
	r.seen(now)
	r.live++
	first := r.live == 1
	if first {
		r.since = now
	}
	r.mu.Unlock()
	if first {
		r.acc.online.Add(1)
	}
	r.acc.changed()
}

// Close ends a connection counted by Open.
func (r *Record) Close(now time.Time) {
	r.mu.Lock()
	r.update(now)
	r.seen(now)
	r.live--
	last := r.live == 0
	r.mu.Unlock()
	if last {
		r.acc.online.Add(-1)
	}
	r.acc.changed()
}

// Add counts requests (and tunnels) with the body bytes they moved.
func (r *Record) Add(requests, up, down uint64, now time.Time) {
	r.mu.Lock()
	r.update(now)
	r.total.Requests += requests
	r.total.BytesUp += up
	r.total.BytesDown += down
	for p := range numPeriods {
		r.periods[p].bytesUp += up
		r.periods[p].bytesDown += down
	}
	r.seen(now)
	r.mu.Unlock()
	r.acc.changed()
}

// Check returns a *QuotaError when the identity has used up its quota for
// the current period, else nil.
func (r *Record) Check(now time.Time) error {
	_, err := r.CheckQuota(now)
	return err
}

// CheckQuota is Check that also reports whether the identity has a quota
// at all (Limited), from the same lookup: a request asks both.
func (r *Record) CheckQuota(now time.Time) (limited bool, err error) {
	q, ok := (*r.acc.quotas.Load())[r.key]
	if !ok {
		return false, nil
	}
	r.mu.Lock()
	r.update(now)
	u := r.periods[q.Period]
	r.mu.Unlock()
	used := u.bytesUp + u.bytesDown
	if q.Bytes > 0 && used >= q.Bytes || q.Time > 0 && u.online >= q.Time {
		return true, &QuotaError{Key: r.key, Quota: q, Bytes: used, Time: u.online,
			Resets: time.Unix(0, u.end).In(r.acc.cfg.Location)}
	}
	return true, nil
}

// QuotaError is an identity over its quota.
type QuotaError struct {
	Key    string
	Quota  Quota
	Bytes  uint64        // used in the period
	Time   time.Duration // used in the period
	Resets time.Time     // start of the next period
}

// Error says what was used up and when it resets.
func (e *QuotaError) Error() string {
	what := ""
	if e.Quota.Bytes > 0 && e.Bytes >= e.Quota.Bytes {
		what = fmt.Sprintf("%s of traffic", FormatBytes(e.Quota.Bytes))
	} else {
		what = fmt.Sprintf("%s of connected time", FormatDuration(e.Quota.Time))
	}
	return fmt.Sprintf("%s: %s quota of %s used up; it resets at %s", e.Key, e.Quota.Period.Adjective(), what,
		e.Resets.Format("2006-01-02 15:04 MST"))
}

// Entry is one identity in a Snapshot (`sluice accounting show`).
type Entry struct {
	Key       string    `json:"key"`
	BytesUp   uint64    `json:"bytes_up"`
	BytesDown uint64    `json:"bytes_down"`
	Requests  uint64    `json:"requests"`
	Conns     uint64    `json:"connections"`
	Live      int       `json:"live_connections"`
	OnlineS   int64     `json:"connected_s"`
	First     time.Time `json:"first_seen"`
	Last      time.Time `json:"last_seen"`
	// Day, Week and Month are the current periods' usage.
	Day   PeriodEntry `json:"day"`
	Week  PeriodEntry `json:"week"`
	Month PeriodEntry `json:"month"`
	// Quota is the identity's quota, if it has one.
	Quota *QuotaEntry `json:"quota,omitempty"`
}

// PeriodEntry is one period's usage.
type PeriodEntry struct {
	Start     time.Time `json:"start"`
	BytesUp   uint64    `json:"bytes_up"`
	BytesDown uint64    `json:"bytes_down"`
	OnlineS   int64     `json:"connected_s"`
}

// QuotaEntry is a quota and how much of it is used.
type QuotaEntry struct {
	Period    string    `json:"period"`
	Bytes     uint64    `json:"bytes,omitempty"`
	TimeS     int64     `json:"time_s,omitempty"`
	UsedBytes uint64    `json:"used_bytes"`
	UsedTimeS int64     `json:"used_time_s"`
	Exceeded  bool      `json:"exceeded"`
	Resets    time.Time `json:"resets"`
}

// Snapshot returns the entries of key (a user name, "addr:..." or a bare
// address), or of every identity when key is empty, sorted by key.
func (a *Accounting) Snapshot(key string) []Entry {
	if ip, err := netip.ParseAddr(key); err == nil {
		key = Key("", ip)
	}
	a.sync()
	now := a.cfg.Now()
	quotas := *a.quotas.Load()
	a.mu.RLock()
	var recs []*Record
	for k, r := range a.recs {
		if key == "" || k == key {
			recs = append(recs, r)
		}
	}
	a.mu.RUnlock()
	out := make([]Entry, 0, len(recs))
	for _, r := range recs {
		r.mu.Lock()
		r.update(now)
		t, ps, live := r.total, r.periods, r.live
		r.mu.Unlock()
		if t == (Counters{}) && live == 0 {
			continue
		}
		e := Entry{Key: r.key, BytesUp: t.BytesUp, BytesDown: t.BytesDown, Requests: t.Requests, Conns: t.Conns,
			Live: live, OnlineS: int64(t.Online / time.Second), First: t.First, Last: t.Last}
		pe := func(u usage) PeriodEntry {
			return PeriodEntry{Start: u.start, BytesUp: u.bytesUp, BytesDown: u.bytesDown, OnlineS: int64(u.online / time.Second)}
		}
		e.Day, e.Week, e.Month = pe(ps[Day]), pe(ps[Week]), pe(ps[Month])
		if q, ok := quotas[r.key]; ok {
			u := ps[q.Period]
			qe := &QuotaEntry{Period: q.Period.String(), Bytes: q.Bytes, TimeS: int64(q.Time / time.Second),
				UsedBytes: u.bytesUp + u.bytesDown, UsedTimeS: int64(u.online / time.Second),
				Resets: time.Unix(0, u.end).In(a.cfg.Location)}
			qe.Exceeded = q.Bytes > 0 && qe.UsedBytes >= q.Bytes || q.Time > 0 && u.online >= q.Time
			e.Quota = qe
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// FormatBytes writes n with a binary unit: "512 B", "1.5 KiB", "2.0 GiB".
func FormatBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// FormatDuration writes d to the second, largest units first: "2h05m",
// "3m07s", "12s", "1d04h".
func FormatDuration(d time.Duration) string {
	s := int64(d / time.Second)
	switch {
	case s >= 86400:
		return fmt.Sprintf("%dd%02dh", s/86400, s%86400/3600)
	case s >= 3600:
		return fmt.Sprintf("%dh%02dm", s/3600, s%3600/60)
	case s >= 60:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	}
	return fmt.Sprintf("%ds", s)
}
