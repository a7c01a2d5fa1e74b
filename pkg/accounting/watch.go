package accounting

import "time"

// DefaultQuotaCheck is Config.QuotaCheck's default.
const DefaultQuotaCheck = 2 * time.Second

// Watch asks for s.Sync every QuotaCheck until Unwatch. A service watches
// the live connections of identities that have a quota: each sync adds
// what they moved and closes those now over it, so a quota holds within a
// few seconds of traffic instead of a flush interval. The timer runs only
// while something is watched.
func (a *Accounting) Watch(s Source) {
	a.watched.add(s)
	a.wmu.Lock()
	defer a.wmu.Unlock()
	if a.wtimer == nil && !a.wclosed {
		a.wtimer = time.AfterFunc(a.cfg.QuotaCheck, a.watchTick)
	}
}

// Unwatch ends a Watch.
func (a *Accounting) Unwatch(s Source) { a.watched.remove(s) }

// watchTick syncs the watched sources and stays armed while any is left
// (one watched meanwhile finds the timer armed, or arms it after this).
func (a *Accounting) watchTick() {
	a.watched.sync()
	a.wmu.Lock()
	defer a.wmu.Unlock()
	a.wtimer = nil
	if a.watched.len() > 0 && !a.wclosed {
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

// TimeLimited reports whether the identity has a quota on connected time
// now: then even an idle connection of it uses the quota up.
func (r *Record) TimeLimited() bool {
	q, ok := (*r.acc.quotas.Load())[r.key]
	return ok && q.Time > 0
}
