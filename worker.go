package signals

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/hibiken/asynq"

	"github.com/dj-signals/signals/internal/envelope"
)

// Worker defaults, for the [WorkerConfig] fields of the same names.
const (
	// DefaultWorkerConcurrency is how many receivers a Worker runs at once.
	DefaultWorkerConcurrency = 20
	// DefaultWorkerTaskCheckInterval is how long an idle Worker waits
	// between checks for new tasks: asynq polls rather than blocks, so a
	// task that arrives at an idle worker starts after this long on
	// average. Each check is one Redis call: 5 ms costs about 200 calls/s
	// per idle worker. asynq's own default is 1 s.
	DefaultWorkerTaskCheckInterval = 5 * time.Millisecond
	// DefaultWorkerDelayedTaskCheckInterval is how often a Worker moves due
	// delayed and retrying tasks into their queues, which bounds how late a
	// delayed signal or a retry may start. asynq's own default is 5 s.
	DefaultWorkerDelayedTaskCheckInterval = 250 * time.Millisecond
	// DefaultWorkerShutdownTimeout is how long Run waits, after its ctx is
	// canceled, for running receivers to return. A receiver still running
	// then has its task put back in the queue, to run again elsewhere.
	DefaultWorkerShutdownTimeout = 10 * time.Second
)

// WorkerConfig configures a [Worker]. The zero value is valid; every zero
// field takes its default.
type WorkerConfig struct {
	// Queues maps each asynq queue to serve to its priority weight (at
	// least 1). Defaults to every queue of the registry's receivers, with
	// weight 1, read when Run starts.
	Queues map[string]int
	// Concurrency is how many receivers run at once. Defaults to
	// DefaultWorkerConcurrency.
	Concurrency int
	// TaskCheckInterval is how long an idle worker waits between polls for
	// new tasks. Defaults to DefaultWorkerTaskCheckInterval.
	TaskCheckInterval time.Duration
	// DelayedTaskCheckInterval is how often due delayed and retrying tasks
	// are moved into their queues. Defaults to
	// DefaultWorkerDelayedTaskCheckInterval.
	DelayedTaskCheckInterval time.Duration
	// ShutdownTimeout is how long Run waits for running receivers when
	// stopping. Defaults to DefaultWorkerShutdownTimeout.
	ShutdownTimeout time.Duration
	// Logger receives asynq's warnings and errors. Receiver failures are
	// logged by the registry's logger. Defaults to slog.Default().
	Logger *slog.Logger
}

// withDefaults returns c with every zero field set to its default.
func (c WorkerConfig) withDefaults() WorkerConfig {
	if c.Concurrency == 0 {
		c.Concurrency = DefaultWorkerConcurrency
	}
	if c.TaskCheckInterval == 0 {
		c.TaskCheckInterval = DefaultWorkerTaskCheckInterval
	}
	if c.DelayedTaskCheckInterval == 0 {
		c.DelayedTaskCheckInterval = DefaultWorkerDelayedTaskCheckInterval
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultWorkerShutdownTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
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
// receiver's backoff until its MaxRetries, then dead-lettering the task in
// asynq's archive with its error.
type Worker struct {
	reg   *Registry
	redis asynq.RedisConnOpt
	cfg   WorkerConfig
}

// NewWorker returns a Worker running reg's receivers on tasks from the
// Redis that redisOpt describes. Pass [DefaultRegistry] for signals made
// with [New]. Run opens the Redis connections and closes them when it
// returns. It returns [ErrInvalidConfig] for a config it cannot use.
func NewWorker(reg *Registry, redisOpt asynq.RedisConnOpt, cfg WorkerConfig) (*Worker, error) {
	if reg == nil || redisOpt == nil {
		return nil, fmt.Errorf("%w: NewWorker needs a registry (signals.DefaultRegistry for signals made with New) and a Redis connection option", ErrInvalidConfig)
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Worker{reg: reg, redis: redisOpt, cfg: cfg}, nil
}

// Run serves tasks until ctx is canceled, then stops taking tasks, waits up
// to ShutdownTimeout for running receivers, and returns nil, so it drops
// into an errgroup. A Redis outage does not end it: asynq keeps retrying.
// It returns an error if there is no queue to serve, which usually means
// the receivers' package was not imported.
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
	srv := asynq.NewServer(w.redis, asynq.Config{
		Concurrency:              w.cfg.Concurrency,
		Queues:                   queues,
		TaskCheckInterval:        w.cfg.TaskCheckInterval,
		DelayedTaskCheckInterval: w.cfg.DelayedTaskCheckInterval,
		ShutdownTimeout:          w.cfg.ShutdownTimeout,
		RetryDelayFunc:           w.reg.RetryDelay,
		Logger:                   asynqLogger{w.cfg.Logger},
		LogLevel:                 asynq.WarnLevel,
	})
	if err := srv.Start(w.reg); err != nil {
		return fmt.Errorf("signals: start worker: %w", err)
	}
	<-ctx.Done()
	srv.Shutdown()
	return nil
}

// asynqLogger routes asynq's logs to slog.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug("asynq: " + fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.l.Info("asynq: " + fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn("asynq: " + fmt.Sprint(args...)) }
func (a asynqLogger) Error(args ...any) { a.l.Error("asynq: " + fmt.Sprint(args...)) }

// Fatal logs and exits, as asynq's Logger contract requires.
func (a asynqLogger) Fatal(args ...any) {
	a.l.Error("asynq: " + fmt.Sprint(args...))
	os.Exit(1)
}
