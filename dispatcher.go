package signals

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"

	"github.com/dj-signals/signals/internal/relay"
	"github.com/dj-signals/signals/internal/store"
)

// Dispatcher defaults, for the [DispatcherConfig] fields of the same names.
const (
	// DefaultDispatcherBatchSize is how many outbox rows one Dispatcher
	// transaction claims.
	DefaultDispatcherBatchSize = 500
	// DefaultDispatcherConcurrency is how many enqueues a Dispatcher keeps
	// in flight within a batch.
	DefaultDispatcherConcurrency = 16
	// DefaultDispatcherPollInterval is how often an idle Dispatcher looks
	// for rows committed by senders in other processes. Senders in the same
	// process wake it at once, without any database cost.
	DefaultDispatcherPollInterval = 100 * time.Millisecond
	// DefaultDispatcherRetention is how long asynq keeps a finished task,
	// during which enqueueing the same outbox row again is recognized as a
	// duplicate.
	DefaultDispatcherRetention = 15 * time.Minute
	// DefaultDispatcherBackoffMin is the first wait after a failed batch
	// (Redis or PostgreSQL unreachable); it doubles per failure, with
	// jitter.
	DefaultDispatcherBackoffMin = 100 * time.Millisecond
	// DefaultDispatcherBackoffMax caps the wait between failed batches.
	DefaultDispatcherBackoffMax = 30 * time.Second
	// DefaultDispatcherMaxEnqueueAttempts is how many times a row may fail
	// to enqueue while Redis is up before it is set aside.
	DefaultDispatcherMaxEnqueueAttempts = 10
	// DefaultDispatcherBatchTimeout bounds one batch, from claim to commit.
	DefaultDispatcherBatchTimeout = 30 * time.Second
)

// DispatcherConfig configures a [Dispatcher]. The zero value is valid; every
// zero field takes its default. The outbox's schema is not set here: it is
// the [Registry]'s, given to [NewDispatcher].
type DispatcherConfig struct {
	// BatchSize is how many rows one transaction claims. Defaults to
	// DefaultDispatcherBatchSize.
	BatchSize int
	// Concurrency is how many enqueues run at once within a batch. Defaults
	// to DefaultDispatcherConcurrency.
	Concurrency int
	// PollInterval is how often an idle Dispatcher checks for rows sent from
	// other processes. Shorter means quicker pickup of those rows for one
	// cheap indexed query per interval. Defaults to
	// DefaultDispatcherPollInterval.
	PollInterval time.Duration
	// Retention is how long asynq keeps each finished task, which is how
	// long a re-enqueue of the same row (after a Dispatcher crash between
	// enqueue and delete) is recognized as a duplicate. Longer costs Redis
	// memory; at least 1s. Defaults to DefaultDispatcherRetention.
	Retention time.Duration
	// BackoffMin and BackoffMax bound the capped exponential backoff, with
	// jitter, after a failed batch. Default to DefaultDispatcherBackoffMin
	// and DefaultDispatcherBackoffMax.
	BackoffMin, BackoffMax time.Duration
	// MaxEnqueueAttempts is how many failed enqueues (while Redis answers)
	// a row gets before it is set aside; see [Dispatcher.Failed]. Rows that
	// can never be enqueued, such as one with an invalid queue name, are set
	// aside at once. Defaults to DefaultDispatcherMaxEnqueueAttempts.
	MaxEnqueueAttempts int
	// BatchTimeout bounds one batch from claim to commit. A batch in flight
	// when Run's ctx is canceled still finishes within it. Defaults to
	// DefaultDispatcherBatchTimeout.
	BatchTimeout time.Duration
	// Logger receives batch failures and set-aside rows. Payloads are never
	// logged. Defaults to slog.Default().
	Logger *slog.Logger
}

// withDefaults returns c with every zero field set to its default.
func (c DispatcherConfig) withDefaults() DispatcherConfig {
	if c.BatchSize == 0 {
		c.BatchSize = DefaultDispatcherBatchSize
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultDispatcherConcurrency
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultDispatcherPollInterval
	}
	if c.Retention == 0 {
		c.Retention = DefaultDispatcherRetention
	}
	if c.BackoffMin == 0 {
		c.BackoffMin = DefaultDispatcherBackoffMin
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = DefaultDispatcherBackoffMax
	}
	if c.MaxEnqueueAttempts == 0 {
		c.MaxEnqueueAttempts = DefaultDispatcherMaxEnqueueAttempts
	}
	if c.BatchTimeout == 0 {
		c.BatchTimeout = DefaultDispatcherBatchTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// validate checks a defaulted config.
func (c DispatcherConfig) validate() error {
	switch {
	case c.BatchSize < 0, c.Concurrency < 0, c.MaxEnqueueAttempts < 0:
		return fmt.Errorf("%w: BatchSize, Concurrency and MaxEnqueueAttempts must not be negative", ErrInvalidConfig)
	case c.PollInterval < 0, c.BackoffMin < 0, c.BatchTimeout < 0:
		return fmt.Errorf("%w: PollInterval, BackoffMin and BatchTimeout must not be negative", ErrInvalidConfig)
	case c.Retention < time.Second:
		return fmt.Errorf("%w: Retention %v is below asynq's 1s resolution", ErrInvalidConfig, c.Retention)
	case c.BackoffMax < c.BackoffMin:
		return fmt.Errorf("%w: BackoffMax %v is below BackoffMin %v", ErrInvalidConfig, c.BackoffMax, c.BackoffMin)
	}
	return nil
}

// Dispatcher is the relay: it moves committed outbox rows into asynq
// queues. Any number of Dispatchers, in one process or many, may run on the
// same outbox; each row is enqueued once, under its task ID.
type Dispatcher struct {
	reg   *Registry
	db    TxBeginner
	redis asynq.RedisConnOpt
	cfg   DispatcherConfig
}

// NewDispatcher returns a Dispatcher for reg's outbox (its schema), reading
// it through db (a *pgxpool.Pool) and enqueueing to the Redis that redisOpt
// describes. Pass [DefaultRegistry] for signals made with [New]. It never
// closes db; Run opens its own Redis connections and closes them when it
// returns. It returns [ErrInvalidConfig] for a config it cannot use.
func NewDispatcher(reg *Registry, db TxBeginner, redisOpt asynq.RedisConnOpt, cfg DispatcherConfig) (*Dispatcher, error) {
	if reg == nil || db == nil || redisOpt == nil {
		return nil, fmt.Errorf("%w: NewDispatcher needs a registry (signals.DefaultRegistry for signals made with New), a database pool and a Redis connection option", ErrInvalidConfig)
	}
	cfg = cfg.withDefaults()
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
	return relay.New(d.reg.queries, d.db, rc, relay.Config(d.cfg)).Run(ctx)
}

// FailedRow is an outbox row the Dispatcher set aside because it could not
// be enqueued; [Dispatcher.Requeue] puts it back.
type FailedRow struct {
	// TaskID is the row's ID and its asynq task ID.
	TaskID ulid.ULID
	// EventID is the event the row belongs to.
	EventID ulid.ULID
	// Signal, Receiver and Queue address the task.
	Signal, Receiver, Queue string
	// Attempts is how many enqueues failed.
	Attempts int
	// Error is the last enqueue error.
	Error string
	// FailedAt is when the row was set aside.
	FailedAt time.Time
	// Payload is the event's JSON payload.
	Payload json.RawMessage
}

// Failed lists up to limit rows set aside by the Dispatcher, oldest first,
// so an operator can see what could not be enqueued and why.
func (d *Dispatcher) Failed(ctx context.Context, limit int) ([]FailedRow, error) {
	var rows []store.FailedRow
	err := pgx.BeginFunc(ctx, d.db, func(tx pgx.Tx) (err error) {
		rows, err = d.reg.queries.Failed(ctx, tx, limit)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("signals: list failed outbox rows: %w", err)
	}
	out := make([]FailedRow, len(rows))
	for i, r := range rows {
		out[i] = FailedRow{
			TaskID: r.ID, EventID: r.EventID,
			Signal: r.Signal, Receiver: r.Receiver, Queue: r.Queue,
			Attempts: r.Attempts, FailedAt: r.FailedAt, Payload: r.Payload,
		}
		if r.LastError != nil {
			out[i].Error = *r.LastError
		}
	}
	return out, nil
}

// Requeue moves set-aside rows back into the outbox, with their attempt
// counts reset, for the Dispatcher to try again once their cause is fixed.
// It returns how many rows moved; unknown IDs are ignored.
func (d *Dispatcher) Requeue(ctx context.Context, taskIDs ...ulid.ULID) (int, error) {
	ids := make([][16]byte, len(taskIDs))
	for i, id := range taskIDs {
		ids[i] = id
	}
	var n int64
	err := pgx.BeginFunc(ctx, d.db, func(tx pgx.Tx) (err error) {
		n, err = d.reg.queries.Requeue(ctx, tx, ids)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("signals: requeue outbox rows: %w", err)
	}
	return int(n), nil
}
