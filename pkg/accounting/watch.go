package accounting

import (
	"context"
	"time"
)

// DefaultQuotaCheck is Config.QuotaCheck's default.
const DefaultQuotaCheck = 2 * time.Second

// Watch asks for s.Sync every QuotaCheck until Unwatch. A service watches
// the live connections of identities that have a quota: each sync adds
// what they moved and closes those now over it, so a quota holds within a
// few seconds of traffic instead of a flush interval. The timer runs only
// while something is watched.
func (a *Accounting) Watch(s Source) {
	a.wmu.Lock()
	defer a.wmu.Unlock()
	if a.watched == nil {
		a.watched = make(map[Source]struct{})
	}
	a.watched[s] = struct{}{}
	if a.wtimer == nil && !a.wclosed {
		a.wtimer = time.AfterFunc(a.cfg.QuotaCheck, a.watchTick)
	}
}

// Unwatch ends a Watch.
func (a *Accounting) Unwatch(s Source) {
	a.wmu.Lock()
	defer a.wmu.Unlock()
	delete(a.watched, s)
}

// watchTick syncs the watched sources (outside wmu: a sync may unwatch)
// and stays armed while any is left.
func (a *Accounting) watchTick() {
	a.wmu.Lock()
	srcs := make([]Source, 0, len(a.watched))
	for s := range a.watched {
		srcs = append(srcs, s)
	}
	a.wmu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
	for _, s := range srcs {
		s.Sync(ctx)
	}
	cancel()
	a.wmu.Lock()
	defer a.wmu.Unlock()
	a.wtimer = nil
	if len(a.watched) > 0 && !a.wclosed {
		a.wtimer = time.AfterFunc(a.cfg.QuotaCheck, a.watchTick)
	}
}

// stopWatch stops the watch timer for good (Close).
func (a *Accounting) stopWatch() {
	a.wmu.Lock()
	defer a.wmu.Unlock()
	a.wclosed = true
	if a.wtimer != nil {
		a.wtimer.Stop()
		a.wtimer = nil
	}
}

// Limited reports whether the identity has a quota now.
func (r *Record) Limited() bool {
	_, ok := (*r.acc.quotas.Load())[r.key]
	return ok
}
