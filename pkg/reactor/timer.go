package reactor

import "time"

// Timer calls Func on its loop when it expires. The zero value with Func set
// is ready to use; a Timer belongs to one loop at a time and is usually
// embedded in the connection it times out, so scheduling allocates nothing.
// A loop with no scheduled timers sleeps without any periodic tick.
type Timer struct {
	// Func runs on the loop goroutine when the timer fires.
	Func  func()
	when  int64 // loop clock, nanoseconds
	index int   // position in the heap plus one; 0 when not scheduled
}

// Scheduled reports whether t is waiting to fire.
func (t *Timer) Scheduled() bool { return t.index > 0 }

// Schedule (re)arms t to fire d from the loop's current clock.
func (l *Loop) Schedule(t *Timer, d time.Duration) {
	l.ScheduleAt(t, l.Now()+d)
}

// ScheduleAt (re)arms t to fire when the loop clock reaches at.
func (l *Loop) ScheduleAt(t *Timer, at time.Duration) {
	if t.index > 0 {
		t.when = int64(at)
		l.timers.fix(t.index - 1)
		return
	}
	t.when = int64(at)
	l.timers.push(t)
}

// Cancel disarms t. Cancelling an idle timer is a no-op.
func (l *Loop) Cancel(t *Timer) {
	if t.index > 0 {
		l.timers.remove(t.index - 1)
	}
}

func (l *Loop) runTimers() {
	for len(l.timers) > 0 && l.timers[0].when <= l.now {
		t := l.timers[0]
		l.timers.remove(0)
		t.Func()
	}
}

// timerHeap is a binary min-heap on when; each Timer knows its index.
type timerHeap []*Timer

func (h *timerHeap) push(t *Timer) {
	*h = append(*h, t)
	t.index = len(*h)
	h.up(len(*h) - 1)
}

func (h *timerHeap) remove(i int) {
	s := *h
	last := len(s) - 1
	s[i].index = 0
	if i != last {
		s[i] = s[last]
		s[i].index = i + 1
	}
	s[last] = nil
	*h = s[:last]
	if i != last {
		h.fix(i)
	}
}

func (h *timerHeap) fix(i int) {
	if !h.down(i) {
		h.up(i)
	}
}

func (h timerHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if h[p].when <= h[i].when {
			return
		}
		h.swap(i, p)
		i = p
	}
}

func (h timerHeap) down(i int) bool {
	start := i
	for {
		c := 2*i + 1
		if c >= len(h) {
			break
		}
		if r := c + 1; r < len(h) && h[r].when < h[c].when {
			c = r
		}
		if h[i].when <= h[c].when {
			break
		}
		h.swap(i, c)
		i = c
	}
	return i > start
}

func (h timerHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i + 1
	h[j].index = j + 1
}
