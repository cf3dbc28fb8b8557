// Package relay moves committed outbox rows into asynq queues and keeps the
// ledger honest: claim a batch with SKIP LOCKED, enqueue each row as a task
// whose ID is the row's, record it as enqueued; check that Redis still holds
// what was enqueued, and send again what it lost.
package relay

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/dj-signals/signals/internal/backoff"
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
	BatchBytes         int
	RepairAge          time.Duration
	Logger             *slog.Logger
}

// Relay is one relay loop. Many may run on one outbox, in one process or
// many; one Relay's methods must not be called concurrently.
type Relay struct {
	queries *store.Queries
	db      store.Beginner
	redis   redis.UniversalClient
	cfg     Config
	hook    EnqueueHook // nil: none
	client  *asynq.Client
	marker  *marker         // nil until the ledger's ID is read
	keys    store.KeyCursor // where the next batch's walk over ordering keys starts

	ticks       []tick    // the ledger's clock as this relay saw it (rewind.go)
	rewindSince time.Time // set when Redis went back in time: rows enqueued since go out again

	// When to walk the ordering keys (see walkKeys).
	keyedSends      uint64    // wake.KeyedSends when last read
	keyedAt, walked time.Time // when it last changed; the last walk
}

// EnqueueHook wraps one row's enqueue, for the Dispatcher's middleware. It
// must call enqueue once and return its error; enqueue reports whether
// Redis turned the task away as one it already had.
type EnqueueHook func(ctx context.Context, row store.Row, enqueue func(context.Context) (duplicate bool, err error)) error

// New returns a relay moving the rows of queries' outbox, read through db,
// into the Redis behind rc, which the caller owns, each enqueue wrapped in
// hook unless it is nil.
func New(queries *store.Queries, db store.Beginner, rc redis.UniversalClient, cfg Config, hook EnqueueHook) *Relay {
	return &Relay{queries: queries, db: db, redis: rc, cfg: cfg, hook: hook, client: newClient(rc)}
}

// newClient shares rc; closing the client leaves rc open.
func newClient(rc redis.UniversalClient) *asynq.Client {
	return asynq.NewClientFromRedisClient(rc)
}

// firstChase is the first re-check after a local sender's hint: the hint
// arrives before the sender commits, so the first look often finds nothing.
const firstChase = time.Millisecond

// How often a relay checks its ledger's marker in Redis: a Redis that lost
// its data is noticed within this long.
const markerEvery = time.Second

// Run relays until ctx is done, then returns nil. Errors are logged and
// retried with capped exponential backoff; they never end the loop.
func (r *Relay) Run(ctx context.Context) error {
	hints, unsubscribe := wake.Subscribe(r.queries.Schema())
	defer unsubscribe()

	timer := time.NewTimer(0)
	defer timer.Stop()
	outage := outageLog{logger: r.cfg.Logger, schema: r.queries.Schema()}
	var lastMarker, lastRepair time.Time
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
		err := r.prepare(ctx)
		if err == nil && outage.failures > 0 {
			// Check Redis before claiming: during an outage, claiming and
			// trying rows only holds their locks longer.
			if err = r.redis.Ping(ctx).Err(); err == nil {
				// The asynq client remembers which queues it registered in
				// Redis; a Redis that came back empty has forgotten them, and
				// a fresh client registers them again.
				r.client = newClient(r.redis)
			}
		}
		if err == nil && time.Since(lastMarker) >= markerEvery {
			if err = r.checkMarker(ctx); err == nil {
				err = r.checkClock(ctx)
			}
			lastMarker = time.Now()
		} else if err == nil && !r.rewindSince.IsZero() {
			err = r.checkClock(ctx) // a batch saw Redis go back in time
		}
		if err == nil && time.Since(lastRepair) >= r.repairEvery() {
			var checked int
			if checked, err = r.repair(ctx); checked < r.cfg.BatchSize {
				lastRepair = time.Now() // a full pass may have more: go on next turn
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
			wait = backoff.Delay(outage.failures+1, r.cfg.BackoffMin, r.cfg.BackoffMax)
			outage.failed(err, wait)
			chase = 0
		case n > 0:
			outage.recovered()
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

// prepare reads the ledger's ID once, which names its marker in Redis.
func (r *Relay) prepare(ctx context.Context) error {
	if r.marker != nil {
		return nil
	}
	var id [16]byte
	err := pgx.BeginFunc(ctx, r.db, func(tx pgx.Tx) (err error) {
		id, err = r.queries.LedgerID(ctx, tx)
		return err
	})
	if err != nil {
		return fmt.Errorf("read the ledger's ID: %w", err)
	}
	r.marker = newMarker(r.redis, id)
	return nil
}

// walkKeys says whether the next batch walks the ordering keys: while the
// last walk met some, for a PollInterval after a local send of keyed rows
// (its hint comes before the commit), and once per PollInterval otherwise,
// which finds keyed rows from other processes as soon as a poll finds
// any row. An outbox without keys so costs no statement per batch.
func (r *Relay) walkKeys() *store.KeyCursor {
	now := time.Now()
	if sends := wake.KeyedSends(r.queries.Schema()); sends != r.keyedSends {
		r.keyedSends, r.keyedAt = sends, now
	}
	if r.keys.Met == 0 && now.Sub(r.keyedAt) >= r.cfg.PollInterval && now.Sub(r.walked) < r.cfg.PollInterval {
		return nil
	}
	r.walked = now
	return &r.keys
}

// repairEvery is how often a relay looks for stale enqueued rows: often
// enough that a row waits little past RepairAge, seldom enough to cost
// nothing while there are none.
func (r *Relay) repairEvery() time.Duration {
	return max(r.cfg.RepairAge/4, markerEvery)
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
