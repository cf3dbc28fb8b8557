package signals

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"

	"github.com/dj-signals/signals/internal/acks"
	"github.com/dj-signals/signals/internal/leasewatch"
	"github.com/dj-signals/signals/internal/limit"
	"github.com/dj-signals/signals/internal/store"
	"github.com/dj-signals/signals/internal/throttle"
	"github.com/dj-signals/signals/internal/wake"

	"github.com/dj-signals/signals/internal/envelope"
)

// WorkerConfig configures a [Worker]. The zero value is valid; every zero
// field takes its default.
type WorkerConfig struct {
	// Queues maps each asynq queue to serve to its priority weight (at
	// least 1). Defaults to every queue of the registry's receivers, with
	// weight 1, read when Run starts.
	Queues map[string]int
	// Concurrency is how many receivers run at once. Defaults to 20.
	Concurrency int
	// TaskCheckInterval is how long an idle worker waits between polls for
	// new tasks: asynq polls rather than blocks, so a task that arrives at
	// an idle worker starts after this long on average, and each poll is
	// one Redis call (5ms costs about 200 calls/s per idle worker).
	// Defaults to 5ms; asynq's own default is 1s.
	TaskCheckInterval time.Duration
	// DelayedTaskCheckInterval is how often due delayed and retrying tasks
	// are moved into their queues, which bounds how late a delayed signal
	// or a retry may start. Defaults to 250ms; asynq's own default is 5s.
	DelayedTaskCheckInterval time.Duration
	// ShutdownTimeout is how long Run waits, after its ctx is canceled, for
	// running receivers to return; a receiver still running then has its
	// task put back in the queue, to run again elsewhere. Defaults to 10s.
	ShutdownTimeout time.Duration
	// Logger receives receiver failures (never payloads) and asynq's
	// warnings and errors, the latter at most once per 30s. Defaults to
	// slog.Default().
	Logger *slog.Logger
}

// WithDefaults returns c with every zero field set to its default: the
// settings a Worker made with c runs with ([NewWorker] calls it). Queues
// stays nil when unset: Run reads the registry's queues when it starts.
// The README's defaults table lists the same values.
func (c WorkerConfig) WithDefaults() WorkerConfig {
	c.Concurrency = cmp.Or(c.Concurrency, 20)
	c.TaskCheckInterval = cmp.Or(c.TaskCheckInterval, 5*time.Millisecond)
	c.DelayedTaskCheckInterval = cmp.Or(c.DelayedTaskCheckInterval, 250*time.Millisecond)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, 10*time.Second)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return c
}

// validate checks a defaulted config.
func (c WorkerConfig) validate() error {
	if c.Concurrency < 0 || c.TaskCheckInterval < 0 || c.DelayedTaskCheckInterval < 0 || c.ShutdownTimeout < 0 {
		return fmt.Errorf("%w: Concurrency and the intervals must not be negative", ErrInvalidConfig)
	}
	for q, weight := range c.Queues {
		if err := envelope.ValidateQueue(q); err != nil {
			return err
		}
		if weight < 1 {
			return fmt.Errorf("%w: queue %q has weight %d; weights start at 1", ErrInvalidConfig, q, weight)
		}
	}
	return nil
}

// Worker is an asynq server running a registry's receivers: each delivery
// decodes into [Event] and calls the receiver, retrying failures with the
// receiver's backoff until its MaxRetries. It keeps the ledger: a success
// removes the delivery's outbox row (in batches, within milliseconds); a
// failure for good moves it to the dead letters with its reason (see
// [Ledger.DeadLetters]). A Worker that has not reached Redis for 10 s
// (Redis unreachable; or the process stalled, noticed as it resumes) stops
// its runs: their ctx is canceled, with a cause that says so, and the
// failure counts no retry. The Dispatcher puts the task back in its
// queue once the lease has gone unrenewed for its RecoverAfter, as it does
// for the runs of a worker that was killed.
type Worker struct {
	reg   *Registry
	db    DB
	redis asynq.RedisConnOpt
	cfg   WorkerConfig

	deliverer deliverer
	acks      *acks.Batcher
	leases    *leasewatch.Watch // set by Run
	running   sync.Map          // row ID → struct{}: deliveries whose receiver is running here
	busy      atomic.Int64      // handlers running now
}

// ackInterval is how long a success waits, at most, before its row is
// removed together with the others of that interval. An ack delays no
// receiver (a keyed row's goes at once, for its key's next row), and each
// DELETE costs PostgreSQL more per call than per row: in the cost
// scenario, 5 ms made one statement per 3.6 rows at 82 µs a call.
const ackInterval = 20 * time.Millisecond

// leaseStopAfter is how long a Worker goes without reaching its runs'
// leases in Redis before it stops them: with the last renewal up to 5 s
// before, 5 s below the 20 s least DispatcherConfig.RecoverAfter, for the
// clocks of different hosts.
const leaseStopAfter = 10 * time.Second

// NewWorker returns a Worker running reg's receivers on tasks from the
// Redis that redisOpt describes and recording their outcomes in reg's
// outbox through db (a *pgxpool.Pool, never closed by the Worker). Pass
// [DefaultRegistry] for signals made with [New]. Run opens the Redis
// connections and closes them when it returns. It returns
// [ErrInvalidConfig] for a config it cannot use.
func NewWorker(reg *Registry, db DB, redisOpt asynq.RedisConnOpt, cfg WorkerConfig) (*Worker, error) {
	if reg == nil || db == nil || redisOpt == nil {
		return nil, fmt.Errorf("%w: NewWorker needs a registry (signals.DefaultRegistry for signals made with New), a database pool and a Redis connection option", ErrInvalidConfig)
	}
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	for q := range cfg.Queues {
		if err := reg.useQueue(q); err != nil {
			return nil, err
		}
	}
	w := &Worker{
		reg: reg, db: db, redis: redisOpt, cfg: cfg,
		acks: acks.New(reg.queries, db, ackInterval, cfg.Logger),
	}
	w.deliverer = deliverer{
		reg: reg, log: cfg.Logger,
		limitLog: throttle.New(cfg.Logger, asynqLogWindow),
		seats:    newLimitSeats(cfg.DelayedTaskCheckInterval, cfg.Concurrency, &w.busy),
	}
	return w, nil
}

// Run serves tasks until ctx is canceled, then stops taking tasks, waits up
// to ShutdownTimeout for running receivers, records their outcomes, and
// returns nil, so it drops into an errgroup. A Redis outage does not end
// it: asynq keeps retrying. It returns an error if there is no queue to
// serve, which usually means the receivers' package was not imported.
func (w *Worker) Run(ctx context.Context) error {
	queues := w.cfg.Queues
	if len(queues) == 0 {
		queues = map[string]int{}
		for _, q := range w.reg.Queues() {
			queues[q] = 1
		}
	}
	if len(queues) == 0 {
		return fmt.Errorf("%w: the worker has no queue to serve: connect receivers before Run (import their package), or set WorkerConfig.Queues",
			ErrNoReceivers)
	}
	// The client of the receiver limits and the lease watch; it is closed
	// after the server stopped, once its last runs released their slots.
	rdb, ok := w.redis.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return fmt.Errorf("%w: the Redis connection option makes no go-redis client, which receiver limits and the lease watch need", ErrInvalidConfig)
	}
	defer rdb.Close()
	w.deliverer.limiter = limit.New(rdb)
	w.leases = leasewatch.New(rdb, leaseStopAfter, throttle.New(w.cfg.Logger, asynqLogWindow))
	srv := asynq.NewServer(w.redis, asynq.Config{
		Concurrency:              w.cfg.Concurrency,
		Queues:                   queues,
		TaskCheckInterval:        w.cfg.TaskCheckInterval,
		DelayedTaskCheckInterval: w.cfg.DelayedTaskCheckInterval,
		ShutdownTimeout:          w.cfg.ShutdownTimeout,
		RetryDelayFunc:           w.deliverer.retryDelay,
		IsFailure:                isFailure,
		Logger:                   asynqLogger{throttle.New(w.cfg.Logger, asynqLogWindow)},
		LogLevel:                 asynq.WarnLevel,
	})
	// The acks and the lease watch stop after the server stopped: its last
	// runs are watched, and their successes flush.
	bgCtx, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	var bg sync.WaitGroup
	bg.Add(2)
	go func() {
		defer bg.Done()
		w.acks.Run(bgCtx)
	}()
	go func() {
		defer bg.Done()
		w.leases.Run(bgCtx)
	}()
	defer func() {
		stopBg()
		bg.Wait()
	}()
	w.reportUnknownWork(ctx)
	if err := srv.Start(asynq.HandlerFunc(w.process)); err != nil {
		return fmt.Errorf("signals: start worker: %w", err)
	}
	<-ctx.Done()
	srv.Shutdown()
	return nil
}

// reportUnknownWork says once, at start, how much of the ledger's work is
// for signals or receivers this worker does not know: during a rolling
// deploy, a newer worker's to run; otherwise, work nobody will do.
// Ledger.Stats and the signals command show it too.
func (w *Worker) reportUnknownWork(ctx context.Context) {
	var rows []store.ReceiverStats
	err := pgx.BeginFunc(ctx, w.db, func(tx pgx.Tx) (err error) {
		rows, _, err = w.reg.queries.Stats(ctx, tx, store.Start)
		return err
	})
	if err != nil {
		w.cfg.Logger.Warn("signals: read the ledger at start", "error", w.reg.explain(err))
		return
	}
	for _, r := range rows {
		if r.Pending+r.InFlight == 0 || w.reg.knows(r.Signal, r.Receiver) {
			continue
		}
		w.cfg.Logger.Warn("signals: the ledger holds work for a receiver this worker does not know: a worker that connects it must run it",
			"signal", r.Signal, "receiver", r.Receiver, "pending", r.Pending, "in_flight", r.InFlight)
	}
}

// errStillRunning refuses a run of a delivery whose earlier run has not
// returned in this process: asynq gave up on it (its Timeout passed) but a
// receiver that ignores its ctx goes on, and two runs side by side would
// each apply the effect.
var errStillRunning = errors.New("signals: an earlier run of this delivery is still executing in this worker (its receiver ignored ctx past Timeout); will retry")

// process runs one task and records its outcome in the outbox.
func (w *Worker) process(ctx context.Context, t *asynq.Task) error {
	w.busy.Add(1)
	defer w.busy.Add(-1)
	at := attemptOf(ctx)
	if rowID, ok := envelope.RowID(at.taskID); ok {
		if _, dup := w.running.LoadOrStore(rowID, struct{}{}); dup {
			return errStillRunning
		}
		defer w.running.Delete(rowID)
	}
	ctx, done := w.leases.Track(ctx, at.queue, at.taskID)
	defer done()
	res := w.deliverer.deliver(ctx, t, at)
	switch {
	case res.row.ID == [16]byte{}:
	case res.err == nil && res.consumed:
		if res.ordered {
			wake.Notify(w.reg.Schema()) // its key's next row is free
		}
	case res.err == nil:
		w.acks.Add(res.row, res.ordered)
	case res.dead != "":
		if w.bury(ctx, res) {
			// The ledger holds the dead letter: asynq has nothing left to
			// keep, so its archive and its "retry exhausted" warning stay
			// for tasks the ledger does not know of.
			return nil
		}
	}
	return res.err
}

// bury records a dead delivery in the outbox's dead letters and reports
// whether it did. If it did not, asynq archives the task, and the
// Dispatcher's repair finds it there and buries it then.
func (w *Worker) bury(ctx context.Context, res outcome) bool {
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err := pgx.BeginFunc(bctx, w.db, func(tx pgx.Tx) error {
		_, err := w.reg.queries.Bury(bctx, tx, []store.Burial{{
			Ref: res.row, Reason: string(res.dead), Error: res.err.Error(), Attempts: res.attempt, EnqueuedAt: timeOrNil(res.enqueued),
		}})
		return err
	})
	if err != nil {
		w.cfg.Logger.Warn("signals: record a dead delivery; the Dispatcher's repair will record it from asynq's archive",
			"task_id", ulid.ULID(res.row.ID).String(), "error", w.reg.explain(err))
		return false
	}
	if res.ordered {
		wake.Notify(w.reg.Schema()) // its key's next row is free
	}
	return true
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// asynqLogWindow is how often asynq's warnings and errors may reach the
// log: while Redis is down asynq repeats them many times a second.
const asynqLogWindow = 30 * time.Second

// asynqLogger routes asynq's logs to slog, throttling its warnings and
// errors to one per asynqLogWindow.
type asynqLogger struct{ l *throttle.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Log(slog.LevelDebug, "asynq: "+fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.l.Log(slog.LevelInfo, "asynq: "+fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any)  { a.l.Log(slog.LevelWarn, "asynq: "+fmt.Sprint(args...)) }
func (a asynqLogger) Error(args ...any) { a.l.Log(slog.LevelError, "asynq: "+fmt.Sprint(args...)) }

// Fatal logs and exits, as asynq's Logger contract requires.
func (a asynqLogger) Fatal(args ...any) {
	a.l.Log(slog.LevelError, "asynq: "+fmt.Sprint(args...))
	os.Exit(1)
}
