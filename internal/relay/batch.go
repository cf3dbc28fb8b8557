package relay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"

	"github.com/dj-signals/signals/internal/backoff"
	"github.com/dj-signals/signals/internal/store"
)

// errRedisLostData says the ledger's marker changed under a batch.
var errRedisLostData = errors.New("redis lost its data while the batch enqueued (the ledger's marker key is gone or new): its rows stay pending")

// result of one row's enqueue.
type result struct {
	kind kind
	err  error
}

// Batch relays at most one batch and reports how many rows it claimed.
// Rows that went into Redis are recorded as enqueued; a row that failed
// waits out its own backoff, or is buried once it can never go; rows left
// untried because Redis is down stay as they were. An error means the batch
// could not run (PostgreSQL) or Redis is down, so the caller backs off; a
// row's own failure is not an error. The batch finishes (commits or rolls
// back) even if ctx is canceled meanwhile, bounded by BatchTimeout, so a
// shutdown never abandons enqueued rows half-way.
func (r *Relay) Batch(ctx context.Context) (int, error) {
	if ctx.Err() != nil {
		return 0, nil
	}
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.BatchTimeout)
	defer cancel()
	if err := r.prepare(bctx); err != nil {
		return 0, err
	}
	// The marker before and after enqueueing tells whether Redis kept what
	// this batch put in it.
	before, err := r.markerValue(bctx)
	if err != nil {
		return 0, err
	}

	tx, err := r.db.Begin(bctx)
	if err != nil {
		return 0, fmt.Errorf("begin batch transaction: %w", err)
	}
	defer tx.Rollback(bctx) //nolint:errcheck // no-op after commit

	rows, err := r.queries.Claim(bctx, tx, r.cfg.BatchSize, r.cfg.BatchBytes, r.walkKeys())
	if err != nil {
		return 0, fmt.Errorf("claim outbox rows: %w", err)
	}
	if len(rows) == 0 {
		return 0, tx.Commit(bctx)
	}

	results := r.enqueueAll(bctx, rows)

	var done [][16]byte
	var later []store.Failure
	var dead []store.Burial
	var outageErr error
	for i, res := range results {
		row := rows[i]
		switch {
		case res.kind == enqueued:
			done = append(done, row.ID)
		case res.kind == outage:
			if outageErr == nil {
				outageErr = res.err
			}
		case res.kind == untried:
		case res.kind == invalid || row.Attempts+1 >= r.cfg.MaxEnqueueAttempts:
			dead = append(dead, store.Burial{ID: row.ID, Reason: store.ReasonUnenqueueable, Error: res.err.Error(), Attempts: row.Attempts + 1})
		default:
			later = append(later, store.Failure{ID: row.ID, Error: res.err.Error(), Delay: backoff.Delay(row.Attempts+1, r.cfg.BackoffMin, r.cfg.BackoffMax)})
		}
	}
	// asynq flattens errors into text once it has registered a queue, so a
	// connection lost mid-batch can look like the rows' fault: if Redis does
	// not answer a ping, it is an outage after all. During an outage no row
	// is blamed: every row not enqueued stays as it was.
	if outageErr == nil && len(later)+len(dead) > 0 {
		outageErr = r.redis.Ping(bctx).Err()
	}
	if outageErr != nil {
		later, dead = nil, nil
	}
	// A Redis that lost its data while this batch enqueued may have lost
	// these tasks too: leave the rows pending rather than record them.
	// The clock, advanced after the enqueues, tells a Redis that went back
	// in time (rewind.go).
	if len(done) > 0 {
		var after *redis.StringCmd
		var clock *redis.IntCmd
		_, err := r.redis.Pipelined(bctx, func(p redis.Pipeliner) error {
			after, clock = p.Get(bctx, r.marker.key), p.Incr(bctx, r.clockKey())
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
	}
	if len(done) > 0 {
		if err := r.queries.MarkEnqueued(bctx, tx, done); err != nil {
			return 0, fmt.Errorf("record enqueued rows: %w", err)
		}
	}
	if len(later) > 0 {
		if err := r.queries.RetryLater(bctx, tx, later); err != nil {
			return 0, fmt.Errorf("record enqueue failures: %w", err)
		}
	}
	if len(dead) > 0 {
		if _, err := r.queries.Bury(bctx, tx, dead); err != nil {
			return 0, fmt.Errorf("bury unenqueueable rows: %w", err)
		}
	}
	if err := tx.Commit(bctx); err != nil {
		return 0, fmt.Errorf("commit batch: %w", err)
	}
	if len(later)+len(dead) > 0 {
		r.logRowFailures(rows, later, dead)
	}
	if outageErr != nil {
		return len(rows), fmt.Errorf("enqueue to redis: %w", outageErr)
	}
	return len(rows), nil
}

// enqueueAll enqueues rows with at most Concurrency requests in flight. Once
// one enqueue finds Redis down, the rows not yet started are left untried.
func (r *Relay) enqueueAll(ctx context.Context, rows []store.Row) []result {
	results := make([]result, len(rows))
	workers := min(r.cfg.Concurrency, len(rows))
	var next atomic.Int64
	var down atomic.Bool
	var wg sync.WaitGroup
	wg.Add(workers)
	for range workers {
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < len(rows); i = int(next.Add(1) - 1) {
				if down.Load() {
					results[i] = result{kind: untried}
					continue
				}
				results[i] = r.enqueue(ctx, rows[i])
				if results[i].kind == outage {
					down.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	return results
}

func (r *Relay) enqueue(ctx context.Context, row store.Row) result {
	task, opts, err := Task(row, r.queries.Schema(), r.cfg.Retention)
	if err != nil {
		return result{kind: classify(err), err: err}
	}
	enqueue := func(ctx context.Context) (bool, error) {
		_, err := r.client.EnqueueContext(ctx, task, opts...)
		if errors.Is(err, asynq.ErrTaskIDConflict) {
			// An earlier relay enqueued this row and died before recording
			// it: the task is in Redis already.
			return true, nil
		}
		return false, err
	}
	if r.hook == nil {
		_, err = enqueue(ctx)
	} else {
		err = r.hook(ctx, row, enqueue)
	}
	return result{kind: classify(err), err: err}
}

// logRowFailures logs the rows of a committed batch that failed to
// enqueue, named as the worker names a delivery.
func (r *Relay) logRowFailures(rows []store.Row, later []store.Failure, dead []store.Burial) {
	byID := make(map[[16]byte]store.Row, len(rows))
	for _, row := range rows {
		byID[row.ID] = row
	}
	for _, f := range later {
		r.cfg.Logger.Warn("signals: outbox row failed to enqueue; it alone waits before the next try",
			append(rowAttrs(byID[f.ID]), "retry_in", f.Delay, "error", f.Error)...)
	}
	for _, b := range dead {
		r.cfg.Logger.Error("signals: outbox row cannot be enqueued; recorded as dead: requeue it once the cause is fixed",
			append(rowAttrs(byID[b.ID]), "attempts", b.Attempts, "error", b.Error)...)
	}
}

// rowAttrs are the log attributes naming a row, as the worker names a
// delivery: signal, receiver, event_id, task_id. Never the payload.
func rowAttrs(row store.Row) []any {
	return []any{"signal", row.Signal, "receiver", row.Receiver,
		"event_id", ulid.ULID(row.EventID).String(), "task_id", ulid.ULID(row.ID).String()}
}
