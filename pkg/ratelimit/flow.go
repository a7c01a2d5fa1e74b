package ratelimit

import "github.com/sluice-proxy/sluice/pkg/reactor"

// Flow is one direction of one connection reading under a Bucket, on the
// connection's loop. It holds the grant being read from, or waited for
// with a loop timer: while it waits the connection reads nothing in that
// direction and costs nothing until the timer calls wake. A Flow belongs to
// one loop and is not safe for other goroutines.
type Flow struct {
	b       *Bucket
	credit  int // granted bytes not yet read
	waiting bool
	timer   reactor.Timer
	wake    func()
}

// NewFlow returns a flow drawing from b; wake runs on the loop when a
// grant the flow waited for is due (it should resume reading).
func NewFlow(b *Bucket, wake func()) *Flow {
	f := &Flow{b: b, wake: wake}
	f.timer.Func = f.due
	return f
}

func (f *Flow) due() {
	f.waiting = false
	f.wake()
}

// Grant returns how many bytes, at most want (more than 0), the caller may
// read now. 0 means none: the flow waits, and wake runs on l when it may
// read again.
func (f *Flow) Grant(l *reactor.Loop, want int) int {
	if f.waiting {
		return 0
	}
	if f.credit == 0 {
		n, wait := f.b.Take(want)
		f.credit = n
		if wait > 0 {
			f.waiting = true
			l.Schedule(&f.timer, wait)
			return 0
		}
	}
	return min(f.credit, want)
}

// Used records that n granted bytes were read. drained says the source
// had no more for now (a short read, EAGAIN, end of file or an error): the
// rest of the grant goes back to the bucket for the user's other
// connections rather than sit here while the source is idle.
func (f *Flow) Used(n int, drained bool) {
	f.credit = max(f.credit-n, 0)
	if drained && f.credit > 0 {
		f.b.Return(f.credit)
		f.credit = 0
	}
}

// Stop cancels a wait and gives back the unread grant. The flow may be
// used again; it starts from no grant.
func (f *Flow) Stop(l *reactor.Loop) {
	l.Cancel(&f.timer)
	f.waiting = false
	if f.credit > 0 {
		f.b.Return(f.credit)
		f.credit = 0
	}
}
