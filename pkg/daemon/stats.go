package daemon

import (
	"context"
	"encoding/json"
	"sort"
	"strings"
	"time"

	"github.com/sluice-proxy/sluice/pkg/control"
	"github.com/sluice-proxy/sluice/pkg/endpoint"
)

// statsTimeout bounds how long stats wait for the loops to report.
const statsTimeout = 5 * time.Second

// Stats is what `sluice stats` shows. Byte counts include what live
// connections have moved so far.
type Stats struct {
	Version         string         `json:"version"`
	Config          string         `json:"config"`
	UptimeSeconds   int64          `json:"uptime_s"`
	Loops           int            `json:"loops"`
	PipesInUse      int            `json:"pipes_in_use"`
	PipesMax        int            `json:"pipes_max"` // 0: splice is off
	MemoryInUse     int64          `json:"memory_in_use"`
	MemoryMax       int64          `json:"memory_max"` // 0: no cap
	Reloads         int            `json:"reloads"`
	RejectedReloads int            `json:"rejected_reloads"`
	Services        []ServiceStats `json:"services"`
	// Telemetry names the source of bytes and CPU figures; Autotune is
	// the tuner's state, nil when it is off.
	Telemetry string         `json:"telemetry,omitempty"`
	Autotune  *AutotuneStats `json:"autotune,omitempty"`
	// VsockCID is this machine's vsock context ID, when it has one (a VM
	// guest, or a host with a vsock transport); 0 otherwise.
	VsockCID uint32 `json:"vsock_cid,omitempty"`
	// Rates are the users with rate or connection limits (rate.go).
	Rates []RateStats `json:"rates,omitempty"`
}

// ServiceStats are one service's figures.
type ServiceStats struct {
	Name      string   `json:"name"`
	Type      string   `json:"type"`
	Listen    []string `json:"listen"` // addresses in use
	Interface string   `json:"interface,omitempty"`
	Upstreams []string `json:"upstreams"`
	Draining  bool     `json:"draining"` // removed by a reload, connections finishing
	Active    int      `json:"active"`
	Accepted  uint64   `json:"accepted"`
	Refused   uint64   `json:"refused"`
	Relayed   uint64   `json:"relayed"`
	BytesUp   uint64   `json:"bytes_up"`
	BytesDown uint64   `json:"bytes_down"`
	// Cache is an http_proxy's cache, nil without one.
	Cache *CacheStats `json:"cache,omitempty"`
}

// CacheStats are an HTTP cache's figures.
type CacheStats struct {
	Hits        uint64 `json:"hits"`
	Revalidated uint64 `json:"revalidated"` // 304s from the origin
	Misses      uint64 `json:"misses"`
	MemEntries  int    `json:"mem_entries"`
	MemBytes    int64  `json:"mem_bytes"`
	DiskEntries int    `json:"disk_entries"`
	DiskBytes   int64  `json:"disk_bytes"`
	Evicted     uint64 `json:"evicted"`
}

// Stats collects the daemon's figures while it runs.
func (d *Daemon) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := Stats{
		Version:         d.opts.Version,
		Config:          d.opts.ConfigPath,
		UptimeSeconds:   int64(time.Since(d.started).Seconds()),
		Loops:           len(d.r.Loops()),
		PipesMax:        d.maxPipes,
		MemoryInUse:     d.mem.used(),
		MemoryMax:       d.mem.limit.Load(),
		Reloads:         d.reloads,
		RejectedReloads: d.rejected,
	}
	if d.budget != nil {
		st.PipesInUse = d.budget.InUse()
	}
	d.tuningStats(&st)
	st.Rates = d.rateStats()
	if cid, err := endpoint.VsockLocalCID(); err == nil {
		st.VsockCID = cid
	}
	ctx, cancel := context.WithTimeout(context.Background(), statsTimeout)
	defer cancel()
	add := func(s *service, draining bool) {
		ss := ServiceStats{
			Name:      s.cfg.Name,
			Type:      "forward",
			Listen:    s.fwd.Addrs(),
			Interface: s.cfg.Interface,
			Draining:  draining,
			Active:    s.fwd.Active(),
		}
		sort.Strings(ss.Listen)
		for _, u := range s.cfg.Upstreams {
			ss.Upstreams = append(ss.Upstreams, u.String())
		}
		if fs, err := s.fwd.Snapshot(ctx); err == nil {
			ss.Accepted, ss.Refused, ss.Relayed = fs.Accepted, fs.Refused, fs.Relayed
			ss.BytesUp, ss.BytesDown = fs.BytesUp, fs.BytesDown
		}
		st.Services = append(st.Services, ss)
	}
	for _, s := range d.services {
		add(s, false)
	}
	for s := range d.draining {
		add(s, true)
	}
	st.Services = append(st.Services, d.httpStats(ctx)...)
	st.Services = append(st.Services, d.socksStats(ctx)...)
	sort.Slice(st.Services, func(i, j int) bool {
		a, b := st.Services[i], st.Services[j]
		if a.Draining != b.Draining {
			return !a.Draining
		}
		return a.Name < b.Name
	})
	return st
}

// handle answers a control socket command.
func (d *Daemon) handle(cmd string) control.Response {
	if cmd == control.CmdAccounting || strings.HasPrefix(cmd, control.CmdAccounting+" ") {
		return d.handleAccounting(cmd)
	}
	switch cmd {
	case control.CmdStats:
		b, err := json.Marshal(d.Stats())
		if err != nil {
			return control.Response{Errors: []string{err.Error()}}
		}
		return control.Response{OK: true, Stats: b}
	case control.CmdReload:
		if err := d.Reload(); err != nil {
			return control.Response{Errors: strings.Split(err.Error(), "\n")}
		}
		return control.Response{OK: true}
	}
	return control.Response{Errors: []string{"unknown command " + cmd + ": want stats or reload"}}
}
