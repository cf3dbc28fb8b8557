// Package acks removes the outbox rows whose receivers succeeded, many per
// statement: a worker hands each success to a Batcher, which deletes them
// together within a few milliseconds, one statement per flush. A crash
// before a flush loses no event: the rows stay enqueued until repair finds
// their tasks completed.
package acks

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/dj-signals/signals/internal/store"
	"github.com/dj-signals/signals/internal/throttle"
	"github.com/dj-signals/signals/internal/wake"
)

// MaxBatch is the most row IDs one statement removes.
const MaxBatch = 1000

// Batcher collects acks and flushes them every Interval, or sooner once
// MaxBatch are waiting. It is safe for concurrent use.
type Batcher struct {
	queries  *store.Queries
	db       store.Executor
	interval time.Duration
	logger   *throttle.Logger

	mu      sync.Mutex
	pending []store.Ref
	ordered bool          // a pending row has an ordering key
	full    chan struct{} // signaled when pending reaches MaxBatch or an ordered row waits
}

// logWindow is how often a failing flush may say so: while PostgreSQL is
// down a flush fails every interval, and one line per 30 s, with the count
// of those held back, tells as much.
const logWindow = 30 * time.Second

// New returns a Batcher removing rows through db every interval.
func New(queries *store.Queries, db store.Executor, interval time.Duration, logger *slog.Logger) *Batcher {
	return &Batcher{queries: queries, db: db, interval: interval, logger: throttle.New(logger, logWindow), full: make(chan struct{}, 1)}
}

// Add queues the ack of one row. An ordered row (one with an ordering key)
// frees its key's next row, which waits for it: it is flushed at once, and
// relays in this process are woken to enqueue the next row rather than
// wait for their next poll.
func (b *Batcher) Add(row store.Ref, ordered bool) {
	b.mu.Lock()
	b.pending = append(b.pending, row)
	b.ordered = b.ordered || ordered
	n := len(b.pending)
	b.mu.Unlock()
	if n >= MaxBatch || ordered {
		select {
		case b.full <- struct{}{}:
		default:
		}
	}
}

// Run flushes until ctx is done, then flushes what is left once more,
// bounded by a few seconds, and returns.
func (b *Batcher) Run(ctx context.Context) {
	t := time.NewTicker(b.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			b.flush(fctx)
			return
		case <-t.C:
		case <-b.full:
		}
		b.flush(ctx)
	}
}

// flush removes the rows acked before it began, MaxBatch per statement.
// Acks that arrive meanwhile wait for the next flush: chasing them would
// send a statement per handful of rows under steady load, and each
// statement costs PostgreSQL more than its rows do. On failure the rows
// not removed wait for the next flush.
func (b *Batcher) flush(ctx context.Context) {
	b.mu.Lock()
	refs, ordered := b.pending, b.ordered
	b.pending, b.ordered = nil, false
	b.mu.Unlock()
	for len(refs) > 0 {
		n := min(len(refs), MaxBatch)
		if err := b.queries.Delete(ctx, b.db, refs[:n]); err != nil {
			b.mu.Lock()
			b.pending = append(refs, b.pending...)
			b.ordered = b.ordered || ordered
			b.mu.Unlock()
			if ctx.Err() == nil { // a shutdown's last flush retries them at once
				b.logger.Log(slog.LevelWarn, "signals: remove acked outbox rows; will retry", "rows", len(refs), "error", err)
			}
			return
		}
		refs = refs[n:]
	}
	if ordered {
		wake.Notify(b.queries.Schema())
	}
}
