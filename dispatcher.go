package signals

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"

	"github.com/dj-signals/signals/internal/asynqlayout"
	"github.com/dj-signals/signals/internal/relay"
	"github.com/dj-signals/signals/internal/store"
)

// DispatcherConfig configures a [Dispatcher]. The zero value is valid; every
// zero field takes its default. The outbox's schema is not set here: it is
// the [Registry]'s, given to [NewDispatcher].
type DispatcherConfig struct {
	// BatchSize is how many rows one batch reads and enqueues. Defaults to
	// 500.
	BatchSize int
	// Concurrency is how many enqueues run at once within a batch. Defaults
	// to 16.
	Concurrency int
	// PollInterval is how often an idle Dispatcher checks for rows sent from
	// other processes; senders in its own process wake it at once. Shorter
	// means quicker pickup of those rows for one cheap indexed query per
	// interval. Defaults to 100ms.
	PollInterval time.Duration
	// Retention is how long asynq keeps each finished task, which is how
	// long a re-enqueue of the same row (after a Dispatcher crash between
	// enqueue and recording it) is recognized as a duplicate, and how long
	// repair can tell a task that completed from one Redis lost. Longer
	// costs Redis memory; at least 1s, and longer than RepairAge. Defaults
	// to 15min.
	Retention time.Duration
	// BackoffMin and BackoffMax bound the capped exponential backoff, with
	// jitter, after a failed batch (PostgreSQL or Redis unreachable).
	// Default to 100ms and 30s.
	BackoffMin, BackoffMax time.Duration
	// MaxEnqueueAttempts is how many failed enqueues (while Redis answers)
	// a row gets before it is recorded as dead (see [Ledger.DeadLetters]);
	// after each failure the row alone waits, BackoffMin doubling up to
	// BackoffMax, while the other rows flow. Rows that can never be
	// enqueued, such as one with an invalid queue name, are dead at once.
	// Defaults to 10.
	MaxEnqueueAttempts int
	// BatchTimeout bounds one batch, from reading its rows to recording
	// them. A batch in flight
	// when Run's ctx is canceled still finishes within it. Defaults to 30s.
	BatchTimeout time.Duration
	// BatchBytes caps the payload bytes one batch holds: a batch holds
	// BatchSize rows or BatchBytes of payload, whichever is less (at least
	// one row), so large payloads cannot balloon the Dispatcher's memory.
	// Defaults to 16 MiB.
	BatchBytes int
	// RepairAge is how long a row may stay enqueued, its receiver not done,
	// before the Dispatcher checks its task in Redis: a task still queued,
	// running or retrying is left alone; one Redis completed is acked; one
	// asynq archived is recorded as dead; one Redis no longer has is
	// enqueued again under the same task ID. A Redis that lost all its data,
	// or went back in time (a failover to a replica that missed the latest
	// writes), is noticed within a second, whatever RepairAge. Defaults to
	// 1min.
	RepairAge time.Duration
	// RecoverAfter is how long a running task's lease may go unrenewed
	// before the Dispatcher puts the task back in its queue, for another
	// worker to run: a live worker renews it every 5 s, so a lease
	// unrenewed this long means the worker was killed, or lost Redis (a
	// Worker that has not reached Redis for 10 s stops its runs first).
	// A killed worker's receivers run again within about RecoverAfter + 1s
	// of the kill. From 20s (the Worker's 10 s, after a last renewal up to
	// 5 s earlier, and 5 s for clocks and slow heartbeats) to 30s, the
	// lease's own length, after which asynq's recoverer takes over, 30 s
	// to 90 s later. Defaults to 20s.
	RecoverAfter time.Duration
	// Logger receives outages and rows that fail to enqueue. Payloads are never
	// logged. Defaults to slog.Default().
	Logger *slog.Logger
}

// WithDefaults returns c with every zero field set to its default: the
// settings a Dispatcher made with c runs with ([NewDispatcher] calls it).
// The README's defaults table lists the same values.
func (c DispatcherConfig) WithDefaults() DispatcherConfig {
	c.BatchSize = cmp.Or(c.BatchSize, 500)
	c.Concurrency = cmp.Or(c.Concurrency, 16)
	c.PollInterval = cmp.Or(c.PollInterval, 100*time.Millisecond)
	c.Retention = cmp.Or(c.Retention, 15*time.Minute)
	c.BackoffMin = cmp.Or(c.BackoffMin, 100*time.Millisecond)
	c.BackoffMax = cmp.Or(c.BackoffMax, 30*time.Second)
	c.MaxEnqueueAttempts = cmp.Or(c.MaxEnqueueAttempts, 10)
	c.BatchTimeout = cmp.Or(c.BatchTimeout, 30*time.Second)
	c.BatchBytes = cmp.Or(c.BatchBytes, 16<<20)
	c.RepairAge = cmp.Or(c.RepairAge, time.Minute)
	c.RecoverAfter = cmp.Or(c.RecoverAfter, 20*time.Second)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return c
}

// validate checks a defaulted config.
func (c DispatcherConfig) validate() error {
	switch {
	case c.BatchSize < 0, c.Concurrency < 0, c.MaxEnqueueAttempts < 0:
		return fmt.Errorf("%w: BatchSize, Concurrency and MaxEnqueueAttempts must not be negative", ErrInvalidConfig)
	case c.BatchBytes < 0:
		return fmt.Errorf("%w: BatchBytes must not be negative", ErrInvalidConfig)
	case c.PollInterval < 0, c.BackoffMin < 0, c.BatchTimeout < 0, c.RepairAge < 0:
		return fmt.Errorf("%w: PollInterval, BackoffMin, BatchTimeout and RepairAge must not be negative", ErrInvalidConfig)
	case c.Retention < time.Second:
		return fmt.Errorf("%w: Retention %v is below asynq's 1s resolution", ErrInvalidConfig, c.Retention)
	case c.Retention <= c.RepairAge:
		return fmt.Errorf("%w: Retention %v must exceed RepairAge %v, or repair cannot tell a completed task from a lost one", ErrInvalidConfig, c.Retention, c.RepairAge)
	case c.RecoverAfter < 20*time.Second || c.RecoverAfter > asynqlayout.LeaseDuration:
		return fmt.Errorf("%w: RecoverAfter %v is outside 20s to 30s: a Worker that lost Redis stops its runs only after 10 s, its last lease renewal up to 5 s before, and asynq's lease lasts 30 s", ErrInvalidConfig, c.RecoverAfter)
	case c.BackoffMax < c.BackoffMin:
		return fmt.Errorf("%w: BackoffMax %v is below BackoffMin %v", ErrInvalidConfig, c.BackoffMax, c.BackoffMin)
	}
	return nil
}

// Dispatcher is the relay: it moves committed outbox rows into asynq queues
// and keeps them in the outbox, as the ledger, until their receivers
// succeed; it sends again whatever Redis loses. It writes nothing per row
// in PostgreSQL on the way: which rows are enqueued follows from its
// position over the sending transactions, which it keeps in Redis beside
// the tasks. Any number of Dispatchers, in one process or many, may run on
// the same outbox, with no leader: they take turns at the position, batch by
// batch (a Dispatcher that dies mid-batch holds it at most 5 s), each row is
// enqueued under its task ID, so Redis turns away a second copy, and rows
// that need a write of their own (failed enqueues, ordering keys, repair)
// are claimed with SKIP LOCKED. Each second it also takes back the running
// tasks of the registry's queues whose worker died (their asynq lease
// unrenewed for RecoverAfter), so that their receivers run again about 20 s
// after the crash rather than asynq's 60 to 120 s.
type Dispatcher struct {
	reg   *Registry
	db    DB
	redis asynq.RedisConnOpt
	cfg   DispatcherConfig
}

// NewDispatcher returns a Dispatcher for reg's outbox (its schema), reading
// it through db (a *pgxpool.Pool) and enqueueing to the Redis that redisOpt
// describes. Pass [DefaultRegistry] for signals made with [New]. It never
// closes db; Run opens its own Redis connections and closes them when it
// returns. It returns [ErrInvalidConfig] for a config it cannot use.
func NewDispatcher(reg *Registry, db DB, redisOpt asynq.RedisConnOpt, cfg DispatcherConfig) (*Dispatcher, error) {
	if reg == nil || db == nil || redisOpt == nil {
		return nil, fmt.Errorf("%w: NewDispatcher needs a registry (signals.DefaultRegistry for signals made with New), a database pool and a Redis connection option", ErrInvalidConfig)
	}
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Dispatcher{reg: reg, db: db, redis: redisOpt, cfg: cfg}, nil
}

// Run relays until ctx is canceled, then returns nil, so it drops into an
// errgroup. Outages never end it: when Redis or PostgreSQL cannot be
// reached it backs off (capped exponential, with jitter) and resumes by
// itself. It returns an error only if redisOpt does not make a go-redis
// client. Run may be called again after it returns.
func (d *Dispatcher) Run(ctx context.Context) error {
	rc, ok := d.redis.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return fmt.Errorf("%w: %T does not make a go-redis client", ErrInvalidConfig, d.redis)
	}
	defer rc.Close()
	recovered := make(chan struct{})
	go func() {
		defer close(recovered)
		relay.NewRecoverer(rc, d.reg.Queues, relay.Config(d.cfg)).Run(ctx)
	}()
	defer func() { <-recovered }()
	return relay.New(d.reg.queries, d.db, rc, relay.Config(d.cfg), d.enqueueHook()).Run(ctx)
}

// enqueueHook runs each enqueue inside the registry's middleware.
func (d *Dispatcher) enqueueHook() relay.EnqueueHook {
	mws := d.reg.wraps()
	if len(mws) == 0 {
		return nil
	}
	return func(ctx context.Context, row store.Row, enqueue func(context.Context) (bool, error)) error {
		info := &EnqueueInfo{
			Signal: row.Signal, Receiver: row.Receiver, Queue: row.Queue,
			TaskID: row.ID, EventID: row.EventID,
			SentAt:  time.UnixMilli(int64(ulid.ULID(row.EventID).Time())),
			Headers: row.Headers,
			Resent:  row.Enqueues > 0,
		}
		return wrap(ctx, mws, Middleware.enqueueHook, info, func(ctx context.Context) (err error) {
			info.Duplicate, err = enqueue(ctx)
			return err
		})
	}
}
