package reactor

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
)

// Config sets up a Reactor. The zero value is usable.
type Config struct {
	// Loops is the number of event loops. If zero, runtime.NumCPU() is used.
	Loops int
	// Workers bounds the goroutines of the blocking pool. If zero, 4.
	Workers int
	// Queue bounds the jobs waiting for a worker. If zero, 1024.
	Queue int
}

// Reactor is a set of event loops plus the bounded pool for blocking work.
type Reactor struct {
	loops []*Loop
	pool  *Pool
	wg    sync.WaitGroup
}

// New creates the loops. They do not run until Start.
func New(cfg Config) (*Reactor, error) {
	n := cfg.Loops
	if n <= 0 {
		n = runtime.NumCPU()
	}
	r := &Reactor{pool: NewPool(cfg.Workers, cfg.Queue)}
	for i := range n {
		l, err := newLoop(i)
		if err != nil {
			r.close()
			return nil, fmt.Errorf("new reactor: %w", err)
		}
		r.loops = append(r.loops, l)
	}
	return r, nil
}

// Loops returns the event loops; the slice must not be modified.
func (r *Reactor) Loops() []*Loop { return r.loops }

// Pool returns the pool for blocking work.
func (r *Reactor) Pool() *Pool { return r.pool }

// Start runs every loop on its own locked OS thread. It raises GOMAXPROCS
// to one more than the number of loops when it is lower (as it is when
// sluice is pinned to one CPU): a loop blocked in epoll_wait holds its P in
// a system call, and the Go runtime's sysmon takes such a P away after
// 20 us unless another P is idle. Without a spare P every wake-up of a loop
// would pay for that hand-off (measured: thousands of futex and nanosleep
// calls a second under a 64-byte ping-pong).
func (r *Reactor) Start() {
	if want := len(r.loops) + 1; runtime.GOMAXPROCS(0) < want {
		runtime.GOMAXPROCS(want)
	}
	for _, l := range r.loops {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			l.run()
		}()
	}
}

// Stop asks every loop to return after its current batch of events, waits
// for them and releases their epoll and eventfd descriptors. Descriptors
// registered by services are theirs to close.
func (r *Reactor) Stop() {
	for _, l := range r.loops {
		l.Post(func() { l.stopping = true })
	}
	r.wg.Wait()
	r.close()
}

func (r *Reactor) close() {
	for _, l := range r.loops {
		l.ep.Close()
		l.wake.Close()
	}
}

// ErrPoolFull is returned by Pool.Submit when the queue is at its bound.
var ErrPoolFull = errors.New("blocking pool is full")

// Pool runs blocking work (DNS, later auth and disk) on a bounded number of
// goroutines and hands each result back to the loop that asked for it.
// Workers exist only while there is work: an idle pool has no goroutines.
type Pool struct {
	workers int
	queue   int

	mu      sync.Mutex
	jobs    []job
	running int
}

type job struct {
	loop *Loop
	work func() func()
}

// NewPool returns a pool of at most workers goroutines and queue waiting
// jobs; zero values pick 4 and 1024.
func NewPool(workers, queue int) *Pool {
	if workers <= 0 {
		workers = 4
	}
	if queue <= 0 {
		queue = 1024
	}
	return &Pool{workers: workers, queue: queue}
}

// Submit runs work on a pool goroutine. If work returns a non-nil func, that
// func is posted to l and runs on its goroutine. Submit never blocks: when
// the queue is full it returns ErrPoolFull and the caller fails the request.
func (p *Pool) Submit(l *Loop, work func() func()) error {
	p.mu.Lock()
	if len(p.jobs) >= p.queue {
		p.mu.Unlock()
		return ErrPoolFull
	}
	p.jobs = append(p.jobs, job{loop: l, work: work})
	spawn := p.running < p.workers && p.running < len(p.jobs)
	if spawn {
		p.running++
	}
	p.mu.Unlock()
	if spawn {
		go p.worker()
	}
	return nil
}

func (p *Pool) worker() {
	for {
		p.mu.Lock()
		if len(p.jobs) == 0 {
			p.running--
			p.mu.Unlock()
			return
		}
		j := p.jobs[0]
		p.jobs[0] = job{}
		p.jobs = p.jobs[1:]
		p.mu.Unlock()
		if done := j.work(); done != nil {
			j.loop.Post(done)
		}
	}
}
