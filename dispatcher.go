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

// Dispatcher defaults.
const (
	// DefaultBatchSize is how many outbox rows one relay transaction claims.
	DefaultBatchSize = 500
	// DefaultDispatchConcurrency is how many enqueues a Dispatcher keeps in
	// flight within a batch.
	DefaultDispatchConcurrency = 16
	// DefaultPollInterval is how often an idle Dispatcher looks for rows
	// committed by senders in other processes. Senders in the same process
	// wake it at once, without any database cost.
	DefaultPollInterval = 100 * time.Millisecond
	// DefaultRetention is how long asynq keeps a finished task, during which
	// enqueueing the same outbox row again is recognized as a duplicate.
	DefaultRetention = 15 * time.Minute
	// DefaultRelayBackoffMin is the first wait after a failed batch (Redis
	// or PostgreSQL unreachable); it doubles per failure, with jitter.
	DefaultRelayBackoffMin = 100 * time.Millisecond
	// DefaultRelayBackoffMax caps the wait between failed batches.
	DefaultRelayBackoffMax = 30 * time.Second
	// DefaultMaxEnqueueAttempts is how many times a row may fail to enqueue
	// while Redis is up before it is set aside.
	DefaultMaxEnqueueAttempts = 10
	// DefaultBatchTimeout bounds one batch, from claim to commit.
	DefaultBatchTimeout = 30 * time.Second
)

// DispatcherConfig configures a Dispatcher. The zero value is valid; every
// zero field takes its default.
type DispatcherConfig struct {
	// Schema is the PostgreSQL schema of the outbox, as in RegistryConfig.
	// Defaults to DefaultSchema.
	Schema string
	// BatchSize is how many rows one transaction claims. Defaults to
	// DefaultBatchSize.
	BatchSize int
	// Concurrency is how many enqueues run at once within a batch. Defaults
	// to DefaultDispatchConcurrency.
	Concurrency int
	// PollInterval is how often an idle Dispatcher checks for rows sent from
	// other processes. Shorter means quicker pickup of those rows for one
	// cheap indexed query per interval. Defaults to DefaultPollInterval.
	PollInterval time.Duration
	// Retention is how long asynq keeps each finished task, which is how
	// long a re-enqueue of the same row (after a relay crash between enqueue
	// and delete) is recognized as a duplicate. Longer costs Redis memory.
	// Defaults to DefaultRetention.
	Retention time.Duration
	// BackoffMin and BackoffMax bound the capped exponential backoff, with
	// jitter, after a failed batch. Default to DefaultRelayBackoffMin and
	// DefaultRelayBackoffMax.
	BackoffMin, BackoffMax time.Duration
	// MaxEnqueueAttempts is how many failed enqueues (while Redis answers)
	// a row gets before it is set aside; see Dispatcher.Failed. Rows that can
	// never be enqueued, such as one with an invalid queue name, are set
	// aside at once. Defaults to DefaultMaxEnqueueAttempts.
	MaxEnqueueAttempts int
	// BatchTimeout bounds one batch from claim to commit. A batch in flight
	// when Run's ctx is canceled still finishes within it. Defaults to
	// DefaultBatchTimeout.
	BatchTimeout time.Duration
	// Logger receives batch failures and set-aside rows. Payloads are never
	// logged. Defaults to slog.Default().
	Logger *slog.Logger
}

// Dispatcher is the relay: it moves committed outbox rows into asynq
// queues. Any number of Dispatchers, in one process or many, may run on the
// same outbox; each row is enqueued once, under its task ID.
type Dispatcher struct {
	db      TxBeginner
	redis   asynq.RedisConnOpt
	cfg     DispatcherConfig
	queries *store.Queries
}

// NewDispatcher returns a Dispatcher reading the outbox through db (a
// *pgxpool.Pool) and enqueueing to the Redis that redisOpt describes. It
// never closes db; Run opens its own Redis connections and closes them when
// it returns. It returns ErrInvalidSchema or ErrInvalidConfig for a config
// it cannot use.
func NewDispatcher(db TxBeginner, redisOpt asynq.RedisConnOpt, cfg DispatcherConfig) (*Dispatcher, error) {
	if db == nil || redisOpt == nil {
		return nil, fmt.Errorf("%w: NewDispatcher needs a database pool and a Redis connection option", ErrInvalidConfig)
	}
	if cfg.Schema == "" {
		cfg.Schema = DefaultSchema
	}
	q, err := store.New(cfg.Schema)
	if err != nil {
		return nil, err
	}
	setDefault(&cfg.BatchSize, DefaultBatchSize)
	setDefault(&cfg.Concurrency, DefaultDispatchConcurrency)
	setDefault(&cfg.PollInterval, DefaultPollInterval)
	setDefault(&cfg.Retention, DefaultRetention)
	setDefault(&cfg.BackoffMin, DefaultRelayBackoffMin)
	setDefault(&cfg.BackoffMax, DefaultRelayBackoffMax)
	setDefault(&cfg.MaxEnqueueAttempts, DefaultMaxEnqueueAttempts)
	setDefault(&cfg.BatchTimeout, DefaultBatchTimeout)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	switch {
	case cfg.BatchSize < 0, cfg.Concurrency < 0, cfg.MaxEnqueueAttempts < 0:
		return nil, fmt.Errorf("%w: BatchSize, Concurrency and MaxEnqueueAttempts must not be negative", ErrInvalidConfig)
	case cfg.PollInterval < 0, cfg.BackoffMin < 0, cfg.BatchTimeout < 0:
		return nil, fmt.Errorf("%w: PollInterval, BackoffMin and BatchTimeout must not be negative", ErrInvalidConfig)
	case cfg.Retention < time.Second:
		return nil, fmt.Errorf("%w: Retention %v is below asynq's 1s resolution", ErrInvalidConfig, cfg.Retention)
	case cfg.BackoffMax < cfg.BackoffMin:
		return nil, fmt.Errorf("%w: BackoffMax %v is below BackoffMin %v", ErrInvalidConfig, cfg.BackoffMax, cfg.BackoffMin)
	}
	return &Dispatcher{db: db, redis: redisOpt, cfg: cfg, queries: q}, nil
}

// setDefault replaces a zero config value with its default.
func setDefault[V int | time.Duration](v *V, def V) {
	if *v == 0 {
		*v = def
	}
}

// Run relays until ctx is canceled, then returns nil, so it drops into an
// errgroup. Outages never end it: when Redis or PostgreSQL cannot be
// reached it backs off (capped exponential, with jitter) and resumes by
// itself. It returns an error only if redisOpt does not make a go-redis
// client. Run may be called again after it returns.
func (d *Dispatcher) Run(ctx context.Context) error {
	r, closeRedis, err := d.relay()
	if err != nil {
		return err
	}
	defer closeRedis()
	return r.Run(ctx)
}

func (d *Dispatcher) relay() (*relay.Relay, func(), error) {
	rc, ok := d.redis.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return nil, nil, fmt.Errorf("%w: %T does not make a go-redis client", ErrInvalidConfig, d.redis)
	}
	r := relay.New(relay.Config{
		Queries:      d.queries,
		DB:           d.db,
		Redis:        rc,
		BatchSize:    d.cfg.BatchSize,
		Concurrency:  d.cfg.Concurrency,
		PollInterval: d.cfg.PollInterval,
		Retention:    d.cfg.Retention,
		BackoffMin:   d.cfg.BackoffMin,
		BackoffMax:   d.cfg.BackoffMax,
		MaxAttempts:  d.cfg.MaxEnqueueAttempts,
		BatchTimeout: d.cfg.BatchTimeout,
		Logger:       d.cfg.Logger,
	})
	return r, func() { _ = rc.Close() }, nil
}

// FailedRow is an outbox row the relay set aside because it could not be
// enqueued; Dispatcher.Requeue puts it back.
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

// Failed lists up to limit rows set aside by the relay, oldest first, so an
// operator can see what could not be enqueued and why.
func (d *Dispatcher) Failed(ctx context.Context, limit int) ([]FailedRow, error) {
	var rows []store.FailedRow
	err := pgx.BeginFunc(ctx, d.db, func(tx pgx.Tx) (err error) {
		rows, err = d.queries.Failed(ctx, tx, limit)
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
// counts reset, for the relay to try again once their cause is fixed. It
// returns how many rows moved; unknown IDs are ignored.
func (d *Dispatcher) Requeue(ctx context.Context, taskIDs ...ulid.ULID) (int, error) {
	ids := make([][16]byte, len(taskIDs))
	for i, id := range taskIDs {
		ids[i] = id
	}
	var n int64
	err := pgx.BeginFunc(ctx, d.db, func(tx pgx.Tx) (err error) {
		n, err = d.queries.Requeue(ctx, tx, ids)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("signals: requeue outbox rows: %w", err)
	}
	return int(n), nil
}
