package main

// Shared setup: connections, one fixture (PostgreSQL schemas, asynq queue,
// signals) per scenario, the business transaction, and the tracker of
// commit and receiver times.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/store"
)

// quiet logs warnings and errors only, so the tables stay readable.
var quiet = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

// env holds the connections every scenario shares.
type env struct {
	dbURL string
	redis asynq.RedisClientOpt
	rdb   *redis.Client
	admin *pgxpool.Pool // DDL, truncates, counts
}

func newEnv(ctx context.Context, dbURL, redisAddr string) (*env, error) {
	admin, err := newPool(ctx, dbURL, 2)
	if err != nil {
		return nil, err
	}
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	if err := rdb.Ping(ctx).Err(); err != nil {
		admin.Close()
		return nil, fmt.Errorf("redis %s: %w", redisAddr, err)
	}
	return &env{dbURL: dbURL, redis: asynq.RedisClientOpt{Addr: redisAddr}, rdb: rdb, admin: admin}, nil
}

func (e *env) close() {
	e.admin.Close()
	_ = e.rdb.Close()
}

// newPool opens a pool of exactly size connections, all opened up front.
func newPool(ctx context.Context, dbURL string, size int) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns, cfg.MinConns = int32(size), int32(size)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	return pool, nil
}

// order is the business event: the payload of the signal, the River job and
// the asynq task alike. Seq numbers the events of one run from 0.
type order struct {
	OrderID int64 `json:"order_id"`
	Seq     int64 `json:"seq"`
}

// Kind makes order a River job.
func (order) Kind() string { return "bench_order" }

// fixture is one scenario's private world: a fresh outbox schema with the
// business tables, a River schema, an asynq queue, and a registry whose
// receivers report to the current tracker.
type fixture struct {
	env         *env
	schema      string // outbox + business tables
	riverSchema string
	queue       string // asynq queue (dj-signals and plain asynq) and River queue

	insertOrder, insertNote string // SQL of the business transaction
	customer                string // the order row's; its length sets the row's size
	outbox                  outboxTables
	report                  *report // receives cleanup warnings

	registry *signals.Registry
	one      *signals.Signal[order] // 1 receiver
	three    *signals.Signal[order] // 3 receivers

	track atomic.Pointer[tracker]
	// traceEnqueue makes dj-signals' relay record, through a go-redis hook,
	// when each task's enqueue returned (latency scenario only).
	traceEnqueue bool
}

func (e *env) newFixture(ctx context.Context, name string, r *report) (*fixture, error) {
	id := fmt.Sprintf("bench_%s_%d", name, os.Getpid())
	f := &fixture{env: e, schema: id, riverSchema: id + "_river", queue: id, customer: "customer", report: r}
	f.track.Store(newTracker(0))
	if err := f.setup(ctx); err != nil {
		f.close()
		return nil, err
	}
	return f, nil
}

func (f *fixture) setup(ctx context.Context) error {
	var err error
	if f.registry, err = signals.NewRegistry(signals.RegistryConfig{Schema: f.schema}); err != nil {
		return err
	}
	if err := f.registry.Migrate(ctx, f.env.admin); err != nil {
		return err
	}
	if f.outbox, err = newOutboxTables(f.schema); err != nil {
		return err
	}
	s := pgx.Identifier{f.schema}.Sanitize()
	f.insertOrder = `INSERT INTO ` + s + `.orders (customer, cents) VALUES ($1, $2) RETURNING id`
	f.insertNote = `INSERT INTO ` + s + `.order_notes (order_id, note) VALUES ($1, $2)`
	if _, err := f.env.admin.Exec(ctx, `
CREATE TABLE `+s+`.orders (id bigserial PRIMARY KEY, customer text NOT NULL, cents integer NOT NULL);
CREATE TABLE `+s+`.order_notes (id bigserial PRIMARY KEY, order_id bigint NOT NULL, note text NOT NULL)`); err != nil {
		return fmt.Errorf("create business tables: %w", err)
	}
	if _, err := f.env.admin.Exec(ctx, `CREATE SCHEMA `+pgx.Identifier{f.riverSchema}.Sanitize()); err != nil {
		return fmt.Errorf("create river schema: %w", err)
	}
	migrator, err := rivermigrate.New(riverpgxv5.New(f.env.admin), &rivermigrate.Config{Schema: f.riverSchema, Logger: quiet})
	if err != nil {
		return err
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("river migrate: %w", err)
	}

	f.one = signals.Register[order](f.registry, "bench.order_placed")
	f.three = signals.Register[order](f.registry, "bench.order_placed_3")
	receive := func(_ context.Context, e signals.Event[order]) error {
		t := f.track.Load()
		t.started(e.Payload.Seq)
		t.tasks.Store(e.Payload.Seq, e.TaskID.String())
		return nil
	}
	f.one.Connect("noop", receive, signals.Queue(f.queue))
	for _, name := range []string{"noop", "noop-2", "noop-3"} {
		f.three.Connect(name, receive, signals.Queue(f.queue))
	}
	return nil
}

// sentRow returns the outbox row SendReliable writes for o through f.one:
// fresh ULIDs, the JSON payload, and the receiver's default options.
func (f *fixture) sentRow(o order) store.Row {
	body, _ := json.Marshal(o)
	event := ulid.Make()
	return store.Row{ID: ulid.Make(), EventID: event, CorrelationID: event, Signal: f.one.Name(),
		Receiver: "noop", Queue: f.queue, MaxRetry: receiverMaxRetries, TimeoutMS: receiverTimeout.Milliseconds(), Payload: body}
}

// reset empties the tables and the queue between runs and installs a new
// tracker for n events.
func (f *fixture) reset(ctx context.Context, n int) (*tracker, error) {
	t := newTracker(n)
	f.track.Store(t)
	s, r := pgx.Identifier{f.schema}.Sanitize(), pgx.Identifier{f.riverSchema}.Sanitize()
	if _, err := f.env.admin.Exec(ctx, `TRUNCATE `+s+`.orders, `+s+`.order_notes, `+r+`.river_job`); err != nil {
		return nil, fmt.Errorf("truncate: %w", err)
	}
	if err := f.outbox.truncate(ctx, f.env.admin); err != nil {
		return nil, err
	}
	// A checkpoint now rather than in the middle of the next run.
	if _, err := f.env.admin.Exec(ctx, `CHECKPOINT`); err != nil {
		return nil, err
	}
	return t, deleteQueue(ctx, f.env.rdb, f.queue)
}

// close drops the schemas and the queue; a failure is a warning in the
// report, never the scenario's result. It uses its own context so that it
// also cleans up after an interrupt.
func (f *fixture) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, s := range []string{f.schema, f.riverSchema} {
		if _, err := f.env.admin.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{s}.Sanitize()+` CASCADE`); err != nil {
			f.report.warn("drop schema %s: %v", s, err)
		}
	}
	if err := deleteQueue(ctx, f.env.rdb, f.queue); err != nil {
		f.report.warn("delete asynq queue %s: %v", f.queue, err)
	}
}

// placeOrder is the business transaction: insert one order, run extra (the
// variant under test) in the same transaction, commit. It returns once the
// commit has returned.
func (f *fixture) placeOrder(ctx context.Context, pool *pgxpool.Pool, seq int64, extra func(ctx context.Context, tx pgx.Tx, o order) error) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		o := order{Seq: seq}
		err := tx.QueryRow(ctx, f.insertOrder, f.customer, 1234).Scan(&o.OrderID)
		if err != nil || extra == nil {
			return err
		}
		return extra(ctx, tx, o)
	})
}

// tracker records, per event of one run, when its commit returned and when
// its receiver first started, as nanoseconds since the tracker was made.
type tracker struct {
	base   time.Time
	sent   []atomic.Int64 // dj-signals: SendReliable returned (and woke the relay)
	commit []atomic.Int64
	start  []atomic.Int64 // 0: not started yet
	left   atomic.Int64
	// dj-signals with traceEnqueue: seq → task ID, task ID → enqueue time.
	tasks, enqueued sync.Map
	done            chan struct{} // closed once every event's receiver has started
}

func newTracker(n int) *tracker {
	t := &tracker{base: time.Now(), sent: make([]atomic.Int64, n), commit: make([]atomic.Int64, n), start: make([]atomic.Int64, n), done: make(chan struct{})}
	t.left.Store(int64(n))
	return t
}

func (t *tracker) now() int64 { return max(1, int64(time.Since(t.base))) }

func (t *tracker) sentAt(seq int64) { t.sent[seq].Store(t.now()) }

func (t *tracker) committed(seq int64) { t.commit[seq].Store(t.now()) }

// started records the first start of seq's receiver; later ones (redeliveries)
// and events from an earlier run are ignored.
func (t *tracker) started(seq int64) {
	if seq < 0 || seq >= int64(len(t.start)) {
		return
	}
	if t.start[seq].CompareAndSwap(0, t.now()) && t.left.Add(-1) == 0 {
		close(t.done)
	}
}
