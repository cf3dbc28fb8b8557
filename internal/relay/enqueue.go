package relay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"

	"github.com/dj-signals/signals/internal/backoff"
	"github.com/dj-signals/signals/internal/store"
)

// sent is what enqueueing a batch's rows came to.
type sent struct {
	rows []store.Row
	// done are the rows in Redis now; handled counts them and the rows
	// whose failures are recorded, in order up to the first that is
	// neither (len(rows) when every row was handled).
	done    []store.Ref
	handled int
	later   []store.Failure
	dead    []store.Burial
	outage  error // Redis is down: no row is blamed, every row not in Redis stays as it was
}

// send enqueues rows, at most Concurrency at once, and sorts out each
// row's fate: in Redis, wait out its own backoff, or dead (a row that can
// never be enqueued, or has failed MaxEnqueueAttempts times). Once an
// enqueue finds Redis down, the rows not yet started are left untried.
func (r *Relay) send(ctx context.Context, rows []store.Row) sent {
	kinds, errs := r.enqueueAll(ctx, rows)
	s := sent{rows: rows}
	handledSoFar := true
	for i, row := range rows {
		handled := true
		switch {
		case kinds[i] == enqueued:
			s.done = append(s.done, row.Ref())
		case kinds[i] == outage:
			handled = false
			if s.outage == nil {
				s.outage = errs[i]
			}
		case kinds[i] == untried:
			handled = false
		case kinds[i] == invalid || row.Attempts+1 >= r.cfg.MaxEnqueueAttempts:
			s.dead = append(s.dead, store.Burial{Ref: row.Ref(), Reason: store.ReasonUnenqueueable, Error: errs[i].Error(), Attempts: row.Attempts + 1})
		default:
			s.later = append(s.later, store.Failure{Ref: row.Ref(), Error: errs[i].Error(), Delay: backoff.Delay(row.Attempts+1, r.cfg.BackoffMin, r.cfg.BackoffMax)})
		}
		if handledSoFar = handledSoFar && handled; handledSoFar {
			s.handled = i + 1
		}
	}
	// asynq flattens errors into text once it has registered a queue, so a
	// connection lost mid-batch can look like the rows' fault: if Redis does
	// not answer a ping, it is an outage after all.
	if s.outage == nil && len(s.later)+len(s.dead) > 0 {
		s.outage = r.redis.Ping(ctx).Err()
	}
	if s.outage != nil {
		s.later, s.dead = nil, nil
		s.handled = 0
		for s.handled < len(rows) && kinds[s.handled] == enqueued {
			s.handled++
		}
	}
	return s
}

// record writes the failures and deaths of s through db (a transaction).
func (r *Relay) record(ctx context.Context, db store.Executor, s sent) error {
	if len(s.later) > 0 {
		if err := r.queries.RetryLater(ctx, db, s.later); err != nil {
			return fmt.Errorf("record enqueue failures: %w", err)
		}
	}
	if len(s.dead) > 0 {
		if _, err := r.queries.Bury(ctx, db, s.dead); err != nil {
			return fmt.Errorf("bury unenqueueable rows: %w", err)
		}
	}
	return nil
}

// done reports, after s was recorded, what the caller returns: how many
// rows it took, and the outage that stopped it, if any. It logs the rows
// that failed.
func (r *Relay) done(s sent) (int, error) {
	if len(s.later)+len(s.dead) > 0 {
		r.logRowFailures(s)
	}
	if s.outage != nil {
		return len(s.rows), fmt.Errorf("enqueue to redis: %w", s.outage)
	}
	return len(s.rows), nil
}

// enqueueAll enqueues rows with at most Concurrency requests in flight and
// returns each row's kind and error.
func (r *Relay) enqueueAll(ctx context.Context, rows []store.Row) ([]kind, []error) {
	kinds := make([]kind, len(rows))
	errs := make([]error, len(rows))
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
					kinds[i] = untried
					continue
				}
				errs[i] = r.enqueue(ctx, rows[i])
				if kinds[i] = classify(errs[i]); kinds[i] == outage {
					down.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	return kinds, errs
}

func (r *Relay) enqueue(ctx context.Context, row store.Row) error {
	task, opts, err := Task(row, r.queries.Schema(), r.cfg.Retention)
	if err != nil {
		return err
	}
	client := r.asynq()
	enqueue := func(ctx context.Context) (bool, error) {
		_, err := client.EnqueueContext(ctx, task, opts...)
		if errors.Is(err, asynq.ErrTaskIDConflict) {
			// Redis holds the task already: an earlier relay enqueued the
			// row and died before recording it, or a position that went
			// back sends it again.
			return true, nil
		}
		return false, err
	}
	if r.hook == nil {
		_, err = enqueue(ctx)
		return err
	}
	return r.hook(ctx, row, enqueue)
}

// logRowFailures logs the rows of a recorded batch that failed to enqueue,
// named as the worker names a delivery.
func (r *Relay) logRowFailures(s sent) {
	byID := make(map[[16]byte]store.Row, len(s.rows))
	for _, row := range s.rows {
		byID[row.ID] = row
	}
	for _, f := range s.later {
		r.cfg.Logger.Warn("signals: outbox row failed to enqueue; it alone waits before the next try",
			append(rowAttrs(byID[f.ID]), "retry_in", f.Delay, "error", f.Error)...)
	}
	for _, b := range s.dead {
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
