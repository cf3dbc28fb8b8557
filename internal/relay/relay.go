// Package relay moves committed outbox rows into asynq queues: claim a batch
// with SKIP LOCKED, enqueue each row as a task whose ID is the row's ID,
// delete what was enqueued, commit.
package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"

	"github.com/dj-signals/signals/internal/backoff"
	"github.com/dj-signals/signals/internal/envelope"
	"github.com/dj-signals/signals/internal/store"
	"github.com/dj-signals/signals/internal/wake"
)

// Config is the relay's tuning: the fields of signals.DispatcherConfig,
// which converts to it, already defaulted and validated there. The
// conversion keeps the two in step: a field added to one and not the other
// does not compile.
type Config struct {
	BatchSize          int
	Concurrency        int
	PollInterval       time.Duration
	Retention          time.Duration
	BackoffMin         time.Duration
	BackoffMax         time.Duration
	MaxEnqueueAttempts int
	BatchTimeout       time.Duration
	Logger             *slog.Logger
}

// Relay is one relay loop. Many may run on one outbox, in one process or
// many; one Relay's methods must not be called concurrently.
type Relay struct {
	queries *store.Queries
	db      store.Beginner
	redis   redis.UniversalClient
	cfg     Config
	client  *asynq.Client
}

// New returns a relay moving the rows of queries' outbox, read through db,
// into the Redis behind rc, which the caller owns.
func New(queries *store.Queries, db store.Beginner, rc redis.UniversalClient, cfg Config) *Relay {
	return &Relay{queries: queries, db: db, redis: rc, cfg: cfg, client: newClient(rc)}
}

// newClient shares rc; closing the client leaves rc open.
func newClient(rc redis.UniversalClient) *asynq.Client {
	return asynq.NewClientFromRedisClient(rc)
}

// firstChase is the first re-check after a local sender's hint: the hint
// arrives before the sender commits, so the first look often finds nothing.
const firstChase = time.Millisecond

// Run relays until ctx is done, then returns nil. Errors are logged and
// retried with capped exponential backoff; they never end the loop.
func (r *Relay) Run(ctx context.Context) error {
	hints, unsubscribe := wake.Subscribe(r.queries.Schema())
	defer unsubscribe()

	timer := time.NewTimer(0)
	defer timer.Stop()
	var failures int
	chase := time.Duration(0) // >0 while following up a hint
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-hints:
			chase = firstChase
		}

		var n int
		var err error
		if failures > 0 {
			// Check Redis before claiming: during an outage, claiming and
			// trying rows only holds their locks longer.
			if err = r.redis.Ping(ctx).Err(); err == nil {
				// The asynq client remembers which queues it registered in
				// Redis; a Redis that came back empty has forgotten them, and
				// a fresh client registers them again.
				r.client = newClient(r.redis)
			}
		}
		if err == nil {
			n, err = r.Batch(ctx)
		}
		var wait time.Duration
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			failures++
			wait = backoff.Delay(failures, r.cfg.BackoffMin, r.cfg.BackoffMax)
			r.cfg.Logger.Warn("signals: relay batch failed; backing off", "error", err, "failures", failures, "retry_in", wait)
			chase = 0
		case n > 0:
			if failures > 0 {
				r.cfg.Logger.Info("signals: relay recovered", "failures", failures)
			}
			failures = 0
			chase = firstChase // more may be committing right behind these
		case chase > 0 && chase < r.cfg.PollInterval:
			wait, chase = chase, chase*2
		default:
			wait, chase = r.cfg.PollInterval, 0
		}
		resetTimer(timer, wait)
		if err != nil {
			// Back off for real: hints must not cut an outage's wait short.
			select {
			case <-ctx.Done():
				return nil
			case <-timer.C:
				resetTimer(timer, 0)
			}
		}
	}
}

func resetTimer(t *time.Timer, d time.Duration) {
	if !t.Stop() {
		select {
		case <-t.C:
		default:
		}
	}
	t.Reset(d)
}

// outcome of one row's enqueue.
type outcome struct {
	err       error
	permanent bool // no retry can enqueue the row
	outage    bool // Redis is unreachable or refusing work: not the row's fault
	skipped   bool // not attempted because Redis was found down
}

// Batch relays at most one batch and reports how many rows it claimed. The
// batch finishes (commits or rolls back) even if ctx is canceled meanwhile,
// bounded by BatchTimeout, so a shutdown never abandons enqueued rows
// half-way.
func (r *Relay) Batch(ctx context.Context) (int, error) {
	if ctx.Err() != nil {
		return 0, nil
	}
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.BatchTimeout)
	defer cancel()

	tx, err := r.db.Begin(bctx)
	if err != nil {
		return 0, fmt.Errorf("begin relay transaction: %w", err)
	}
	defer tx.Rollback(bctx) //nolint:errcheck // no-op after commit

	rows, err := r.queries.Claim(bctx, tx, r.cfg.BatchSize)
	if err != nil {
		return 0, fmt.Errorf("claim outbox rows: %w", err)
	}
	if len(rows) == 0 {
		return 0, tx.Commit(bctx)
	}

	outcomes := r.enqueueAll(bctx, rows)

	var done, failed, aside [][16]byte
	var failedErrs, asideErrs []string
	var firstErr, outageErr error
	for i, o := range outcomes {
		switch {
		case o.skipped:
		case o.outage:
			if outageErr == nil {
				outageErr = o.err
			}
		case o.err == nil:
			done = append(done, rows[i].ID)
		case o.permanent || rows[i].Attempts+1 >= r.cfg.MaxEnqueueAttempts:
			aside = append(aside, rows[i].ID)
			asideErrs = append(asideErrs, o.err.Error())
		default:
			failed = append(failed, rows[i].ID)
			failedErrs = append(failedErrs, o.err.Error())
			if firstErr == nil {
				firstErr = o.err
			}
		}
	}
	// Nothing went through and the errors were of an unknown kind: if Redis
	// does not answer a ping this is an outage too, not the rows' fault.
	if len(done) == 0 && firstErr != nil && outageErr == nil {
		if err := r.redis.Ping(bctx).Err(); err != nil {
			failed, failedErrs, outageErr = nil, nil, firstErr
		}
	}
	if len(done) > 0 {
		if err := r.queries.Delete(bctx, tx, done); err != nil {
			return 0, fmt.Errorf("delete enqueued rows: %w", err)
		}
	}
	if len(failed) > 0 {
		if err := r.queries.RecordFailures(bctx, tx, failed, failedErrs); err != nil {
			return 0, fmt.Errorf("record enqueue failures: %w", err)
		}
	}
	if len(aside) > 0 {
		if err := r.queries.SetAside(bctx, tx, aside, asideErrs); err != nil {
			return 0, fmt.Errorf("set aside rows: %w", err)
		}
		for i, id := range aside {
			r.cfg.Logger.Error("signals: outbox row set aside; requeue it once the cause is fixed",
				"task_id", ulid.ULID(id).String(), "error", asideErrs[i])
		}
	}
	if err := tx.Commit(bctx); err != nil {
		return 0, fmt.Errorf("commit relay batch: %w", err)
	}
	if outageErr != nil {
		return len(rows), fmt.Errorf("enqueue to redis: %w", outageErr)
	}
	if firstErr != nil {
		return len(rows), fmt.Errorf("enqueue %d of %d rows: %w", len(failed), len(rows), firstErr)
	}
	return len(rows), nil
}

// enqueueAll enqueues rows with at most Concurrency requests in flight. Once
// one enqueue finds Redis down, the rows not yet started are skipped.
func (r *Relay) enqueueAll(ctx context.Context, rows []store.Row) []outcome {
	outcomes := make([]outcome, len(rows))
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
					outcomes[i] = outcome{skipped: true}
					continue
				}
				outcomes[i] = r.enqueue(ctx, rows[i])
				if outcomes[i].outage {
					down.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	return outcomes
}

// isOutage reports whether err says Redis is unreachable or refusing work
// (out of memory, loading, read-only): conditions of the server, not of a
// row.
func isOutage(err error) bool {
	var netErr net.Error
	var serverErr redis.Error
	return errors.As(err, &netErr) || errors.As(err, &serverErr) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, redis.ErrClosed) || errors.Is(err, context.DeadlineExceeded)
}

// errInvalidRow marks a row that no retry can enqueue.
var errInvalidRow = errors.New("row cannot be enqueued")

func (r *Relay) enqueue(ctx context.Context, row store.Row) outcome {
	task, opts, err := Task(row, r.cfg.Retention)
	if err != nil {
		return outcome{err: err, permanent: true}
	}
	_, err = r.client.EnqueueContext(ctx, task, opts...)
	if err == nil || errors.Is(err, asynq.ErrTaskIDConflict) {
		// A conflict means an earlier relay enqueued this row and died before
		// deleting it: already delivered to the queue.
		return outcome{}
	}
	return outcome{err: err, outage: isOutage(err)}
}

// Task turns an outbox row into its asynq task and enqueue options, or
// explains why no retry could ever enqueue it.
func Task(row store.Row, retention time.Duration) (*asynq.Task, []asynq.Option, error) {
	if row.TimeoutMS <= 0 || row.MaxRetry < 0 || row.Depth < 0 {
		return nil, nil, fmt.Errorf("%w: timeout_ms %d, max_retry %d, depth %d out of range",
			errInvalidRow, row.TimeoutMS, row.MaxRetry, row.Depth)
	}
	for _, err := range []error{
		envelope.ValidateSignal(row.Signal),
		envelope.ValidateReceiver(row.Receiver),
		envelope.ValidateQueue(row.Queue),
	} {
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %w", errInvalidRow, err)
		}
	}
	meta := envelope.Meta{
		Signal:        row.Signal,
		Receiver:      row.Receiver,
		TaskID:        row.ID,
		EventID:       row.EventID,
		CorrelationID: row.CorrelationID,
		Depth:         row.Depth,
		Timeout:       time.Duration(row.TimeoutMS) * time.Millisecond,
	}
	if row.CausationID != nil {
		meta.CausationID = *row.CausationID
	}
	// asynq keeps timeouts in whole seconds; the worker enforces the exact
	// value from the header, asynq only needs a lease at least that long.
	seconds := time.Duration(math.Ceil(meta.Timeout.Seconds())) * time.Second
	opts := []asynq.Option{
		asynq.TaskID(ulid.ULID(row.ID).String()),
		asynq.Queue(row.Queue),
		asynq.MaxRetry(row.MaxRetry),
		asynq.Timeout(seconds),
		asynq.Retention(retention),
	}
	if row.ProcessAt != nil {
		// asynq schedules in whole Unix seconds and forwards a task once the
		// clock's second reaches it: round up so it never runs early.
		opts = append(opts, asynq.ProcessAt(ceilSecond(*row.ProcessAt)))
	}
	return asynq.NewTaskWithHeaders(envelope.TaskType(row.Signal, row.Receiver), row.Payload, envelope.Headers(meta)), opts, nil
}

func ceilSecond(t time.Time) time.Time {
	if s := t.Truncate(time.Second); !s.Equal(t) {
		return s.Add(time.Second)
	}
	return t
}
