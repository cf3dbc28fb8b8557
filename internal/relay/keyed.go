package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dj-signals/signals/internal/store"
	"github.com/dj-signals/signals/internal/wake"
)

// errRedisLostData says the ledger's marker changed under a batch.
var errRedisLostData = errors.New("redis lost its data while the batch enqueued (the ledger's marker key is gone or new): its rows stay pending")

// keyedBatch enqueues the first rows of keys that are free, at most half a
// batch, and records each enqueue on its row: a key is busy until its row
// is acked or dead. Each key is locked for the batch's transaction, so no
// two relays put two rows of one key in flight; a Redis that lost its data
// or went back in time while the batch enqueued (the marker and the clock
// tell) leaves the rows pending. It reports how many rows it took.
func (r *Relay) keyedBatch(ctx context.Context, cursor *store.KeyCursor) (int, error) {
	// The marker before and after enqueueing tells whether Redis kept what
	// this batch put in it.
	before, err := r.markerValue(ctx)
	if err != nil {
		return 0, err
	}
	tx, err := r.db.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("begin keyed batch transaction: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit

	rows, err := r.queries.ClaimKeyed(ctx, tx, (r.cfg.BatchSize+1)/2, r.cfg.BatchBytes, cursor)
	if err != nil {
		return 0, fmt.Errorf("claim keyed outbox rows: %w", err)
	}
	if len(rows) == 0 {
		return 0, tx.Commit(ctx)
	}
	s := r.send(ctx, rows)
	if len(s.done) > 0 {
		var after *redis.StringCmd
		var clock *redis.IntCmd
		_, err := r.redis.Pipelined(ctx, func(p redis.Pipeliner) error {
			after, clock = p.Get(ctx, r.marker.key), p.Incr(ctx, r.clockKey())
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return 0, fmt.Errorf("read the ledger's marker in redis: %w", err)
		}
		if before == "" || after.Val() != before {
			return 0, errRedisLostData
		}
		if r.observeClock(clock.Val(), time.Now()) {
			return 0, errRedisWentBack
		}
		if err := r.queries.MarkEnqueued(ctx, tx, s.done); err != nil {
			return 0, fmt.Errorf("record enqueued keyed rows: %w", err)
		}
	}
	if err := r.record(ctx, tx, s); err != nil {
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("commit keyed batch: %w", err)
	}
	if len(s.dead) > 0 {
		wake.Notify(r.queries.Schema()) // a buried row frees its key's next one
	}
	return r.done(s)
}
