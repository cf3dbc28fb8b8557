package relay

import (
	"context"
	"fmt"
)

// dueBatch enqueues rows without an ordering key whose next_attempt_at has
// come — rows that failed to enqueue, and rows repair sent back — and
// records each: they are behind the position, so once in Redis they count
// as enqueued like the rest. Rows are claimed with SKIP LOCKED: relays
// never take the same row. It reports how many rows it took.
func (r *Relay) dueBatch(ctx context.Context) (int, error) {
	tx, err := r.db.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("begin due batch transaction: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit

	rows, err := r.queries.ClaimDue(ctx, tx, r.cfg.BatchSize, r.cfg.BatchBytes)
	if err != nil {
		return 0, fmt.Errorf("claim due outbox rows: %w", err)
	}
	if len(rows) == 0 {
		return 0, tx.Commit(ctx)
	}
	s := r.send(ctx, rows)
	if len(s.done) > 0 {
		if err := r.queries.SentDue(ctx, tx, s.done); err != nil {
			return 0, fmt.Errorf("record rows sent again: %w", err)
		}
	}
	if err := r.record(ctx, tx, s); err != nil {
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("commit due batch: %w", err)
	}
	return r.done(s)
}
