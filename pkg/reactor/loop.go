// Package reactor runs sluice's event loops: each loop is one goroutine locked
// to an OS thread, blocking in epoll_wait, owning the file descriptors
// registered with it, a timer heap and a queue of work posted from other
// goroutines through an eventfd.
//
// Everything a loop owns (handlers, timers, the state of its connections) is
// touched only on that loop's goroutine, so none of it needs locks. The only
// entry points safe from other goroutines are [Loop.Post] and [Reactor.Stop].
//
// Readiness events are hints: a handler must tolerate being called when its
// fd is not actually ready (the syscall then answers EAGAIN). This keeps the
// loop simple when an fd number is reused within one batch of events.
package reactor

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-proxy/sluice/pkg/sys"
)

// Handler receives the readiness events of one file descriptor.
type Handler interface {
	// HandleEvent is called on the loop goroutine with the epoll event bits
	// (sys.EventIn, sys.EventOut, ...) reported for the fd.
	HandleEvent(events uint32)
}

// Runner is work deferred to the end of the current batch of events; see
// [Loop.Defer].
type Runner interface {
	Run()
}

// maxEvents is how many readiness events one epoll_wait returns at most.
const maxEvents = 256

// Loop is one event loop. Its methods, except Post and ID, must be called on
// the loop's own goroutine (from a Handler, Runner, Timer or posted func).
type Loop struct {
	id       int
	ep       *sys.Epoll
	wake     *sys.EventFD
	handlers []Handler // indexed by fd

	mu    sync.Mutex
	tasks []func()
	awake atomic.Bool // a wake-up is already pending on the eventfd

	timers timerHeap
	base   time.Time
	now    int64 // nanoseconds since base, refreshed after every epoll_wait

	tid atomic.Int32 // OS thread id of the loop, 0 until it runs

	deferred      []Runner
	spareDeferred []Runner
	stopping      bool
}

func newLoop(id int) (*Loop, error) {
	ep, err := sys.NewEpoll()
	if err != nil {
		return nil, fmt.Errorf("loop %d: %w", id, err)
	}
	wake, err := sys.NewEventFD()
	if err != nil {
		ep.Close()
		return nil, fmt.Errorf("loop %d: %w", id, err)
	}
	l := &Loop{id: id, ep: ep, wake: wake, base: time.Now()}
	if err := ep.Add(wake.FD(), sys.EventIn); err != nil {
		ep.Close()
		wake.Close()
		return nil, fmt.Errorf("loop %d: %w", id, err)
	}
	return l, nil
}

// TID returns the id of the OS thread the loop runs on, for per-loop CPU
// accounting (/proc/self/task/TID/stat, eBPF), or 0 before the loop runs.
// It is safe to call from any goroutine.
func (l *Loop) TID() int { return int(l.tid.Load()) }

// ID returns the loop's index in its reactor, from 0.
func (l *Loop) ID() int { return l.id }

// Register adds fd to the loop's epoll set for events and routes its events
// to h. The loop does not take ownership of fd: whoever registered it closes
// it, through [Loop.Close] or [Loop.CloseReset].
func (l *Loop) Register(fd int, events uint32, h Handler) error {
	if err := l.ep.Add(fd, events); err != nil {
		return fmt.Errorf("register fd %d: %w", fd, err)
	}
	l.SetHandler(fd, h)
	return nil
}

// SetHandler routes the events of an already registered fd to h, so a
// connection can pass from one layer to the next without an epoll_ctl.
func (l *Loop) SetHandler(fd int, h Handler) {
	if fd >= len(l.handlers) {
		n := 2 * len(l.handlers)
		if n <= fd {
			n = fd + 64
		}
		grown := make([]Handler, n)
		copy(grown, l.handlers)
		l.handlers = grown
	}
	l.handlers[fd] = h
}

// Unregister removes fd from the epoll set without closing it.
func (l *Loop) Unregister(fd int) error {
	l.forget(fd)
	if err := l.ep.Remove(fd); err != nil {
		return fmt.Errorf("unregister fd %d: %w", fd, err)
	}
	return nil
}

// Close forgets fd's handler and closes it; closing also removes it from
// the epoll set.
func (l *Loop) Close(fd int) {
	l.forget(fd)
	sys.Close(fd)
}

// CloseReset is Close for a socket whose peer must see RST instead of FIN.
func (l *Loop) CloseReset(fd int) {
	l.forget(fd)
	sys.CloseReset(fd)
}

func (l *Loop) forget(fd int) {
	if fd >= 0 && fd < len(l.handlers) {
		l.handlers[fd] = nil
	}
}

// Post queues fn to run on the loop goroutine and wakes the loop. It is safe
// to call from any goroutine.
func (l *Loop) Post(fn func()) {
	l.mu.Lock()
	l.tasks = append(l.tasks, fn)
	l.mu.Unlock()
	if !l.awake.Swap(true) {
		l.wake.Signal()
	}
}

// Defer runs r once after the current batch of events, before the loop
// sleeps again. Relays use it to yield after moving a fair share of bytes.
func (l *Loop) Defer(r Runner) {
	l.deferred = append(l.deferred, r)
}

// Now returns the loop's clock: a monotonic time read once per wake-up, so
// reading it costs nothing.
func (l *Loop) Now() time.Duration { return time.Duration(l.now) }

func (l *Loop) run() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	l.tid.Store(int32(sys.Gettid()))
	events := make([]sys.EpollEvent, maxEvents)
	wakeFD := int32(l.wake.FD())
	for !l.stopping {
		n, err := l.ep.Wait(events, l.timeout())
		if err != nil {
			// EBADF or EINVAL: the epoll fd itself is broken; nothing can recover.
			panic(fmt.Sprintf("reactor loop %d: %v", l.id, err))
		}
		l.now = int64(time.Since(l.base))
		for i := range events[:n] {
			fd := events[i].Fd
			if fd == wakeFD {
				l.wake.Drain()
				l.awake.Store(false)
				l.runTasks()
				continue
			}
			if int(fd) < len(l.handlers) {
				if h := l.handlers[fd]; h != nil {
					h.HandleEvent(events[i].Events)
				}
			}
		}
		l.runDeferred()
		l.runTimers()
	}
}

// timeout is epoll_wait's timeout: 0 while deferred work waits, the time to
// the next timer, or -1 (sleep until an event) when nothing is scheduled.
func (l *Loop) timeout() int {
	if len(l.deferred) > 0 {
		return 0
	}
	if len(l.timers) == 0 {
		return -1
	}
	d := l.timers[0].when - int64(time.Since(l.base))
	if d <= 0 {
		return 0
	}
	ms := (d + int64(time.Millisecond) - 1) / int64(time.Millisecond)
	if ms > 1<<30 {
		ms = 1 << 30
	}
	return int(ms)
}

func (l *Loop) runTasks() {
	l.mu.Lock()
	tasks := l.tasks
	l.tasks = nil
	l.mu.Unlock()
	for _, fn := range tasks {
		fn()
	}
}

func (l *Loop) runDeferred() {
	// Work deferred while this batch runs waits for the next epoll_wait(0),
	// so fresh events get their turn.
	batch := l.deferred
	l.deferred = l.spareDeferred[:0]
	for i, r := range batch {
		batch[i] = nil
		r.Run()
	}
	l.spareDeferred = batch[:0]
}
