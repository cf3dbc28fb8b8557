// Package relay moves committed outbox rows into asynq queues and keeps the
// ledger honest: read the rows past the position, enqueue each as a task
// whose ID is the row's, move the position (position.go, window.go); keyed
// rows one per key (keyed.go); rows due again after a failure (due.go);
// check that Redis still holds what was enqueued and send again what it
// lost (marker.go, rewind.go, repair.go). Beside it, on a cadence of its
// own, a Recoverer takes back the tasks of a worker that died (leases.go).
package relay

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
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
	RecoverAfter       time.Duration
	Logger             *slog.Logger
}

// Relay is one relay loop. Many may run on one outbox, in one process or
// many; one Relay's methods must not be called concurrently.
type Relay struct {
	queries *store.Queries
	db      store.DB
	redis   redis.UniversalClient
	cfg     Config
	hook    EnqueueHook // nil: none
	client  atomic.Pointer[asynq.Client]
	marker  *marker      // nil until the ledger's ID is read
	keys    positionKeys // the position's keys, named after the marker
	kept    *held        // the position's lock, kept from the last batch
	cursor  store.KeyCursor

	ticks         []tick    // the ledger's clock as this relay saw it (rewind.go)
	rewindSince   time.Time // set when Redis went back in time: keyed rows enqueued since go out again
	repairHorizon horizon   // the position as this relay saw it (repair.go)
	passed        uint64    // the highest xmax of a covered snapshot this relay saw (markResends)

	// When to walk the ordering keys (see walkKeys) and look for due rows.
	keyedSends      uint64    // wake.KeyedSends when last read
	keyedAt, walked time.Time // when it last changed; the last walk
	dueAt           time.Time // the last look for due rows that found none
}

// EnqueueHook wraps one row's enqueue, for the Dispatcher's middleware. It
// must call enqueue once and return its error; enqueue reports whether
// Redis turned the task away as one it already had.
type EnqueueHook func(ctx context.Context, row store.Row, enqueue func(context.Context) (duplicate bool, err error)) error

// New returns a relay moving the rows of queries' outbox, read through db,
// into the Redis behind rc, which the caller owns, each enqueue wrapped in
// hook unless it is nil.
func New(queries *store.Queries, db store.DB, rc redis.UniversalClient, cfg Config, hook EnqueueHook) *Relay {
	r := &Relay{queries: queries, db: db, redis: rc, cfg: cfg, hook: hook}
	r.renewClient()
	return r
}

// asynq returns the relay's asynq client.
func (r *Relay) asynq() *asynq.Client { return r.client.Load() }

// renewClient makes the one asynq client the relay enqueues with, sharing
// the caller's Redis client (closing it leaves that open). asynq's client
// remembers which queues it registered in Redis; a Redis that lost its data
// has forgotten them, and a fresh client registers them again on its first
// enqueue, for Stats and asynqmon.
func (r *Relay) renewClient() { r.client.Store(asynq.NewClientFromRedisClient(r.redis)) }

// firstChase is the first re-check after a local sender's hint: the hint
// arrives before the sender commits, so the first look often finds nothing.
const firstChase = time.Millisecond

// How often a relay checks its ledger's marker in Redis: a Redis that lost
// its data is noticed within this long.
const markerEvery = time.Second

// Run relays until ctx is done, then returns nil. Errors are logged and
// retried with capped exponential backoff; they never end the loop. Each
// turn runs the relay's duties, each at its own cadence: the marker, the
// clock and the database's transaction IDs (a Redis that lost its data or
// went back in time, a database restored behind the position; every
// second), repair (rows long enqueued, every RepairAge/4), the position's
// batch (whenever woken), keyed rows (while there may be any) and due rows
// (every PollInterval, or at once while there are). They share the
// position and what the relay saw of Redis and the database, so they run
// in turn, in this order.
func (r *Relay) Run(ctx context.Context) error {
	hints, unsubscribe := wake.Subscribe(r.queries.Schema())
	defer unsubscribe()
	defer func() {
		if r.kept != nil {
			r.releasePosition(*r.kept) // another relay goes on at once
		}
	}()

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
				r.renewClient() // a Redis that came back empty forgot the queues
			}
		}
		if err == nil && time.Since(lastMarker) >= markerEvery {
			if err = r.checkMarker(ctx); err == nil {
				if err = r.checkClock(ctx); err == nil {
					err = r.checkBehind(ctx)
				}
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
		busy := false
		if err == nil {
			n, err = r.Batch(ctx)
			if busy = isBusy(err); busy {
				err = nil
			}
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
		case busy && chase == 0:
			chase = firstChase // another relay is on it: look again soon
			wait = chase
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

// Batch runs one turn of the relay's batches: the position's, then keyed
// rows and due rows when their cadence says so. It reports how many rows
// they took, and errPositionBusy (with the others' rows) when another relay
// held the position. A batch finishes even if ctx is canceled meanwhile,
// bounded by BatchTimeout, so a shutdown never abandons enqueued rows
// half-way.
func (r *Relay) Batch(ctx context.Context) (int, error) {
	if ctx.Err() != nil {
		return 0, nil
	}
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.BatchTimeout)
	defer cancel()
	if err := r.prepare(bctx); err != nil {
		return 0, err
	}
	total, werr := r.windowBatch(bctx)
	if werr != nil && !isBusy(werr) {
		return total, werr
	}
	if cursor := r.walkKeys(); cursor != nil {
		n, err := r.keyedBatch(bctx, cursor)
		if total += n; err != nil {
			return total, err
		}
	}
	if time.Since(r.dueAt) >= r.cfg.PollInterval {
		n, err := r.dueBatch(bctx)
		if total += n; err != nil {
			return total, err
		}
		if n == 0 {
			r.dueAt = time.Now()
		}
	}
	return total, werr
}

// prepare reads the ledger's ID once, which names its marker and position
// in Redis, and gives rows that a restored database carried over from
// ahead of its transaction IDs a place in the position (see Restamp).
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
	if err := r.restamp(ctx); err != nil {
		return err
	}
	r.marker = newMarker(r.redis, id)
	r.keys = newPositionKeys(r.marker.key)
	return nil
}

// restamp gives rows carrying transaction IDs from ahead of the database's
// a place behind every position but Start, and logs how many it found.
func (r *Relay) restamp(ctx context.Context) error {
	var n int64
	err := pgx.BeginFunc(ctx, r.db, func(tx pgx.Tx) (err error) {
		n, err = r.queries.Restamp(ctx, tx)
		return err
	})
	if err != nil {
		return fmt.Errorf("look for rows from ahead of the database's transaction IDs: %w", err)
	}
	if n > 0 {
		r.cfg.Logger.Warn("signals: outbox rows carry transaction IDs from ahead of the database's (restored from another cluster's dump?); they go out again once the position starts over",
			"rows", n)
	}
	return nil
}

// walkKeys returns where the next batch walks the ordering keys from, or
// nil when it does not walk them: it walks while the last walk met some,
// for a PollInterval after a local send of keyed rows (its hint comes
// before the commit), and once per PollInterval otherwise, which finds
// keyed rows from other processes as soon as a poll finds any row. An
// outbox without keys so costs no statement per batch.
func (r *Relay) walkKeys() *store.KeyCursor {
	now := time.Now()
	if sends := wake.KeyedSends(r.queries.Schema()); sends != r.keyedSends {
		r.keyedSends, r.keyedAt = sends, now
	}
	if r.cursor.Met == 0 && now.Sub(r.keyedAt) >= r.cfg.PollInterval && now.Sub(r.walked) < r.cfg.PollInterval {
		return nil
	}
	r.walked = now
	return &r.cursor
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
