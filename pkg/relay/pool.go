package relay

import (
	"sync/atomic"

	"github.com/sluice-proxy/sluice/pkg/sys"
)

// Defaults for the zero values of PoolConfig.
const (
	DefaultMaxPipes = 256
	// DefaultPipeSize matches Go's own splice pipes: on loopback, 1 MiB
	// pipes took 30-40% less CPU per GB than the kernel's 64 KiB default.
	// Only the pipe's ring (about 10 KiB) is allocated up front; pages
	// are the socket's own, moved in and out while bytes are in flight.
	DefaultPipeSize = 1 << 20
	DefaultBufSize  = 32 << 10
	// keptPipes and keptBufs bound what one loop keeps for reuse.
	keptPipes = 16
	keptBufs  = 16
)

// PoolConfig sizes pipes and buffers. The zero value is usable.
type PoolConfig struct {
	// PipeSize asks the kernel for pipes of this many bytes (F_SETPIPE_SZ).
	// If zero, DefaultPipeSize. The kernel may give less (pipe-max-size,
	// or a user over pipe-user-pages-soft keeps the 64 KiB default).
	PipeSize int
	// MaxPipes bounds the pipes that exist at once across all loops, like
	// HAProxy's maxpipes; each costs two file descriptors. When the bound
	// is reached relays use the copy path. If zero, DefaultMaxPipes; if
	// negative, no pipes are used at all.
	MaxPipes int
	// BufSize is the size of copy-path buffers. If zero, DefaultBufSize.
	BufSize int
}

// Budget counts the pipes in existence, shared by the pools of all loops.
type Budget struct {
	max int64
	n   atomic.Int64
}

// NewBudget returns a budget for at most max pipes.
func NewBudget(max int) *Budget { return &Budget{max: int64(max)} }

// InUse returns the number of pipes in existence.
func (b *Budget) InUse() int { return int(b.n.Load()) }

func (b *Budget) take() bool {
	if b.n.Add(1) > b.max {
		b.n.Add(-1)
		return false
	}
	return true
}

func (b *Budget) give() { b.n.Add(-1) }

// pipe is a kernel pipe: bytes are spliced into w and out of r. size is
// what the pool last asked the kernel for.
type pipe struct{ r, w, size int }

// Pool lends pipes and buffers to the relays of one loop. It is owned by
// that loop and not safe for concurrent use; only the pipe count is shared.
// A relay borrows a pipe or buffer only while bytes are in flight.
type Pool struct {
	budget   *Budget
	pipeSize int // requested size, and what one splice asks for
	bufSize  int
	pipes    []pipe
	bufs     [][]byte
	sockBuf  int    // SO_RCVBUF/SO_SNDBUF for bulk flows; 0 = kernel autotuning
	epoch    uint32 // interval number, for counting flows once per interval
	counts   Counters
}

// Counters are what the relays of one pool did. Bulk bytes went through
// pipes, the rest through buffers (see Relay's splice-auto); a chunk is one
// read or splice that returned bytes; a flow is one direction of one relay
// that filled at least one chunk since the interval began.
type Counters struct {
	SplicedBytes, CopiedBytes   uint64
	SplicedChunks, CopiedChunks uint64
	SplicedFlows, CopiedFlows   int
}

// NewPool returns a loop's pool drawing pipes from budget (nil: no pipes).
func NewPool(cfg PoolConfig, budget *Budget) *Pool {
	// epoch starts at 1 so that a new flow (epoch 0) is counted.
	p := &Pool{budget: budget, pipeSize: cfg.PipeSize, bufSize: cfg.BufSize, epoch: 1}
	if p.pipeSize <= 0 {
		p.pipeSize = DefaultPipeSize
	}
	if p.bufSize <= 0 {
		p.bufSize = DefaultBufSize
	}
	return p
}

// PoolSet builds one Pool per loop around a shared Budget.
func PoolSet(cfg PoolConfig, loops int) []*Pool {
	var budget *Budget
	switch {
	case cfg.MaxPipes == 0:
		budget = NewBudget(DefaultMaxPipes)
	case cfg.MaxPipes > 0:
		budget = NewBudget(cfg.MaxPipes)
	}
	pools := make([]*Pool, loops)
	for i := range pools {
		pools[i] = NewPool(cfg, budget)
	}
	return pools
}

// getPipe returns an empty pipe, or false when the budget is spent or the
// kernel refuses (out of descriptors): the caller then copies instead.
func (p *Pool) getPipe() (pipe, bool) {
	if n := len(p.pipes); n > 0 {
		pp := p.pipes[n-1]
		p.pipes = p.pipes[:n-1]
		if pp.size != p.pipeSize { // resized since it was pooled; it is empty
			_, _ = sys.SetPipeSize(pp.w, p.pipeSize)
			pp.size = p.pipeSize
		}
		return pp, true
	}
	if p.budget == nil || !p.budget.take() {
		return pipe{}, false
	}
	r, w, err := sys.Pipe2()
	if err != nil {
		p.budget.give()
		return pipe{}, false
	}
	// On failure the pipe keeps the kernel's default size; asking splice
	// for more than a pipe holds is harmless.
	_, _ = sys.SetPipeSize(w, p.pipeSize)
	return pipe{r: r, w: w, size: p.pipeSize}, true
}

// putPipe takes back an empty pipe.
func (p *Pool) putPipe(pp pipe) {
	if len(p.pipes) < keptPipes {
		p.pipes = append(p.pipes, pp)
		return
	}
	p.destroyPipe(pp)
}

// destroyPipe closes a pipe, for one that still holds bytes of a dead
// connection, which must never reach another.
func (p *Pool) destroyPipe(pp pipe) {
	sys.Close(pp.r)
	sys.Close(pp.w)
	p.budget.give()
}

// SetPipeSize changes the size of the pipes lent from now on (the tuner's
// knob); pooled pipes are resized when next lent, pipes in use keep their
// size until returned. Call it on the pool's loop.
func (p *Pool) SetPipeSize(n int) {
	if n > 0 {
		p.pipeSize = n
	}
}

// PipeSize returns the size pipes are lent with.
func (p *Pool) PipeSize() int { return p.pipeSize }

// SetBufSize changes the size of copy-path buffers lent from now on; pooled
// buffers of the old size are dropped. Call it on the pool's loop.
func (p *Pool) SetBufSize(n int) {
	if n > 0 && n != p.bufSize {
		p.bufSize = n
		clear(p.bufs)
		p.bufs = p.bufs[:0]
	}
}

// BufSize returns the size of copy-path buffers.
func (p *Pool) BufSize() int { return p.bufSize }

// SetSockBuf sets SO_RCVBUF on the source and SO_SNDBUF on the
// destination of every flow that turns bulk from now on; 0 leaves sockets
// to the kernel's autotuning (setting a buffer turns that off for the
// socket for good). Call it on the pool's loop.
func (p *Pool) SetSockBuf(n int) { p.sockBuf = max(n, 0) }

// Counters returns the pool's running totals and the flows counted since
// the interval began. Call it on the pool's loop.
func (p *Pool) Counters() Counters { return p.counts }

// NextInterval starts a new interval for flow counting: flows are counted
// again when they next move bytes. Call it on the pool's loop.
func (p *Pool) NextInterval() {
	p.epoch++
	p.counts.SplicedFlows, p.counts.CopiedFlows = 0, 0
}

func (p *Pool) getBuf() []byte {
	if n := len(p.bufs); n > 0 {
		b := p.bufs[n-1]
		p.bufs[n-1] = nil
		p.bufs = p.bufs[:n-1]
		return b
	}
	return make([]byte, p.bufSize)
}

func (p *Pool) putBuf(b []byte) {
	if len(p.bufs) < keptBufs && len(b) == p.bufSize {
		p.bufs = append(p.bufs, b)
	}
}

// LendBuf lends one of the pool's copy buffers (BufSize bytes) to a caller
// on the pool's loop, for bytes that are in flight only; give it back with
// ReturnBuf once drained.
func (p *Pool) LendBuf() []byte { return p.getBuf() }

// ReturnBuf gives back a buffer from LendBuf.
func (p *Pool) ReturnBuf(b []byte) { p.putBuf(b) }
