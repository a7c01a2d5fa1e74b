// Package ratelog keeps repeated log lines from flooding a router's small
// log buffer: each kind of message is written at most once per interval,
// and the next one written says how many were suppressed in between.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// DefaultInterval is used when Logger.Interval is zero.
const DefaultInterval = time.Second

// Logger rate-limits records by message text. It is safe for concurrent use.
type Logger struct {
	// Out receives the records that get through. If nil, slog.Default().
	Out *slog.Logger
	// Interval is the least time between two records with the same message.
	// If zero, DefaultInterval.
	Interval time.Duration

	mu    sync.Mutex
	kinds map[string]*kind
}

type kind struct {
	last       time.Time
	suppressed int
}

// Log writes a record at level unless one with the same msg was written
// less than Interval ago, in which case it is counted and dropped.
func (l *Logger) Log(level slog.Level, msg string, args ...any) {
	now := time.Now()
	interval := l.Interval
	if interval == 0 {
		interval = DefaultInterval
	}
	l.mu.Lock()
	if l.kinds == nil {
		l.kinds = make(map[string]*kind)
	}
	k := l.kinds[msg]
	if k == nil {
		k = &kind{}
		l.kinds[msg] = k
	} else if now.Sub(k.last) < interval {
		k.suppressed++
		l.mu.Unlock()
		return
	}
	k.last = now
	suppressed := k.suppressed
	k.suppressed = 0
	l.mu.Unlock()
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	log := l.Out
	if log == nil {
		log = slog.Default()
	}
	log.Log(context.Background(), level, msg, args...)
}
