package main

// The delivery systems the e2e and latency scenarios compare, each behind
// the same two funcs: start the delivery side, send one business transaction.

import (
	"context"
	"encoding/json"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/otelsignals"
)

// The library's defaults that the benchmark mirrors in its baselines and
// states in its report, named once here: a receiver's, as the doc comments
// of signals.MaxRetries and signals.Timeout state them, and the configs'.
const (
	receiverMaxRetries = 20
	receiverTimeout    = time.Minute
)

var (
	dispatcherDefaults             = signals.DispatcherConfig{}.WithDefaults()
	dispatcherBatchSize            = dispatcherDefaults.BatchSize
	dispatcherConcurrency          = dispatcherDefaults.Concurrency
	dispatcherPollInterval         = dispatcherDefaults.PollInterval
	dispatcherRetention            = dispatcherDefaults.Retention
	workerDefaults                 = signals.WorkerConfig{}.WithDefaults()
	workerConcurrency              = workerDefaults.Concurrency
	workerTaskCheckInterval        = workerDefaults.TaskCheckInterval
	workerDelayedTaskCheckInterval = workerDefaults.DelayedTaskCheckInterval
)

// riverMaxWorkers is River's queue size as in its package docs (doc.go).
const riverMaxWorkers = 100

// newRiver returns a River client on f's River schema, working f's queue
// as queue says with no-op workers that report to the tracker once started.
func (f *fixture) newRiver(pool *pgxpool.Pool, queue river.QueueConfig) (*river.Client[pgx.Tx], error) {
	workers := river.NewWorkers()
	river.AddWorker(workers, river.WorkFunc(func(_ context.Context, j *river.Job[order]) error {
		f.track.Load().started(j.Args.Seq)
		return nil
	}))
	return river.NewClient(riverpgxv5.New(pool), &river.Config{
		Schema:  f.riverSchema,
		Queues:  map[string]river.QueueConfig{f.queue: queue},
		Workers: workers,
		Logger:  quiet,
	})
}

// system is one way of getting from a committed order to a receiver run.
type system struct {
	name string
	// start starts the delivery side (relay, workers) and returns its stop.
	start func(ctx context.Context) (stop func(), err error)
	// send runs one business transaction for seq; it calls committed right
	// after the commit returns.
	send func(ctx context.Context, pool *pgxpool.Pool, seq int64, committed func()) error
}

// Names of the systems the e2e and latency scenarios compare.
const (
	sysSignals     = "dj-signals"
	sysSignalsOTel = "dj-signals + OpenTelemetry"
	sysAsynq       = "plain asynq"
	sysRiver       = "River"
	sysRiverTuned  = "River, MaxWorkers 1000"
)

// systems are the delivery paths the e2e and latency scenarios compare:
// dj-signals with its defaults (SendReliable in the tx, Dispatcher + Worker
// in this process), plain asynq (enqueue after commit: fast, not safe), and
// River (InsertTx in the tx) with MaxWorkers 100 (River's docs), and with
// 1000: River fetches at most MaxWorkers jobs per FetchCooldown (100 ms).
func (f *fixture) systems() []system {
	return []system{
		f.signalsSystem(sysSignals, signals.DispatcherConfig{}, signals.WorkerConfig{}),
		f.asynqSystem(),
		f.riverSystem(sysRiver, river.QueueConfig{MaxWorkers: riverMaxWorkers}),
		f.riverSystem(sysRiverTuned, river.QueueConfig{MaxWorkers: 1000}),
	}
}

// signalsSystem is dj-signals with the given configs, on f's schema and
// queue. The relay gets its own pool of pgxpool's default size.
func (f *fixture) signalsSystem(name string, dcfg signals.DispatcherConfig, wcfg signals.WorkerConfig) system {
	return f.signalsSystemOn(name, f.registry, f.one, dcfg, wcfg)
}

// signalsSystemOn is signalsSystem sending sig, of registry reg.
func (f *fixture) signalsSystemOn(name string, reg *signals.Registry, sig *signals.Signal[order], dcfg signals.DispatcherConfig, wcfg signals.WorkerConfig) system {
	e := f.env
	dcfg.Logger = quiet
	wcfg.Queues, wcfg.Logger = map[string]int{f.queue: 1}, quiet
	var relayRedis asynq.RedisConnOpt = e.redis
	if f.traceEnqueue {
		relayRedis = tracedRedis{e.redis, f}
	}
	return system{
		name: name,
		start: func(ctx context.Context) (func(), error) {
			pool, err := pgxpool.New(ctx, e.dbURL)
			if err != nil {
				return nil, err
			}
			d, err := signals.NewDispatcher(reg, pool, relayRedis, dcfg)
			if err != nil {
				pool.Close()
				return nil, err
			}
			w, err := signals.NewWorker(reg, pool, e.redis, wcfg)
			if err != nil {
				pool.Close()
				return nil, err
			}
			stop := runAll(ctx, d.Run, w.Run)
			return func() { stop(); pool.Close() }, nil
		},
		send: func(ctx context.Context, pool *pgxpool.Pool, seq int64, committed func()) error {
			err := f.placeOrder(ctx, pool, seq, func(ctx context.Context, tx pgx.Tx, o order) error {
				_, err := sig.SendReliable(ctx, tx, o)
				f.track.Load().sentAt(seq)
				return err
			})
			if err == nil {
				committed()
			}
			return err
		},
	}
}

// otelSystem is dj-signals with its defaults and otelsignals' middleware on
// a registry of its own, on f's schema and queue, sending f.one's signal to
// a receiver like f.one's. The OpenTelemetry SDK samples every span and
// hands it to a batch span processor, as in production, whose exporter
// drops it: what is measured is the application's side (spans, their
// attributes, the trace context in each row and task, the batch queue, the
// metrics' aggregation), not an exporter's serialization and network, which
// run on the batch processor's goroutine and depend on the backend. Metrics
// go to a manual reader that the run never collects, as a periodic reader
// collects once a minute by default. Call shutdown when done.
func (f *fixture) otelSystem() (s system, shutdown func(), err error) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithBatcher(dropSpans{}))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	shutdown = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = tp.Shutdown(ctx)
		_ = mp.Shutdown(ctx)
	}
	reg, err := signals.NewRegistry(signals.RegistryConfig{
		Schema:     f.schema,
		Middleware: []signals.Middleware{otelsignals.New(otelsignals.Config{TracerProvider: tp, MeterProvider: mp})},
	})
	if err != nil {
		shutdown()
		return system{}, nil, err
	}
	sig := signals.Register[order](reg, f.one.Name())
	sig.Connect("noop", func(_ context.Context, e signals.Event[order]) error {
		t := f.track.Load()
		t.started(e.Payload.Seq)
		t.tasks.Store(e.Payload.Seq, e.TaskID.String())
		return nil
	}, signals.Queue(f.queue))
	return f.signalsSystemOn(sysSignalsOTel, reg, sig, signals.DispatcherConfig{}, signals.WorkerConfig{}), shutdown, nil
}

// dropSpans is a span exporter that drops what it is given.
type dropSpans struct{}

func (dropSpans) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (dropSpans) Shutdown(context.Context) error                             { return nil }

// otelVersion is the OpenTelemetry SDK's module version in this binary.
func otelVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "go.opentelemetry.io/otel/sdk" {
				return d.Version
			}
		}
	}
	return "(unknown version)"
}

// tracedRedis makes the relay's Redis client record, per task ID, when
// asynq's enqueue script returned: the end of the relay's leg.
type tracedRedis struct {
	asynq.RedisClientOpt
	f *fixture
}

func (t tracedRedis) MakeRedisClient() any {
	c := t.RedisClientOpt.MakeRedisClient().(*redis.Client)
	c.AddHook(enqueueHook{t.f})
	return c
}

type enqueueHook struct{ f *fixture }

func (enqueueHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (enqueueHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// ProcessHook spots asynq's enqueue script by its first key,
// asynq:{<queue>}:t:<task id>.
func (h enqueueHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if args := cmd.Args(); err == nil && len(args) > 3 && (cmd.Name() == "evalsha" || cmd.Name() == "eval") {
			if key, ok := args[3].(string); ok {
				if _, id, ok := strings.Cut(key, "}:t:"); ok {
					t := h.f.track.Load()
					t.enqueued.Store(id, t.now())
				}
			}
		}
		return err
	}
}

// asynqSystem commits, then enqueues to asynq; its server has the
// dj-signals Worker's defaults.
func (f *fixture) asynqSystem() system {
	e := f.env
	client := asynq.NewClientFromRedisClient(e.rdb)
	return system{
		name: sysAsynq,
		start: func(ctx context.Context) (func(), error) {
			srv := f.newAsynqServer()
			err := srv.Start(asynq.HandlerFunc(func(_ context.Context, t *asynq.Task) error {
				var o order
				if err := json.Unmarshal(t.Payload(), &o); err != nil {
					return err
				}
				f.track.Load().started(o.Seq)
				return nil
			}))
			return srv.Shutdown, err
		},
		send: func(ctx context.Context, pool *pgxpool.Pool, seq int64, committed func()) error {
			var o order
			err := f.placeOrder(ctx, pool, seq, func(_ context.Context, _ pgx.Tx, placed order) error {
				o = placed
				return nil
			})
			if err != nil {
				return err
			}
			committed()
			body, _ := json.Marshal(o)
			_, err = client.EnqueueContext(ctx, asynq.NewTask("bench:order", body), asynq.Queue(f.queue))
			return err
		},
	}
}

// newAsynqServer returns an asynq server on f's queue with the dj-signals
// Worker's defaults.
func (f *fixture) newAsynqServer() *asynq.Server {
	return asynq.NewServer(f.env.redis, asynq.Config{
		Concurrency:              workerConcurrency,
		Queues:                   map[string]int{f.queue: 1},
		TaskCheckInterval:        workerTaskCheckInterval,
		DelayedTaskCheckInterval: workerDelayedTaskCheckInterval,
		LogLevel:                 asynq.WarnLevel,
	})
}

// riverSystem inserts River jobs in the business transaction; the River
// client (started per run) has its own pool of pgxpool's default size.
func (f *fixture) riverSystem(name string, queue river.QueueConfig) system {
	e := f.env
	var rc atomic.Pointer[river.Client[pgx.Tx]]
	return system{
		name: name,
		start: func(ctx context.Context) (func(), error) {
			pool, err := pgxpool.New(ctx, e.dbURL)
			if err != nil {
				return nil, err
			}
			c, err := f.newRiver(pool, queue)
			if err == nil {
				err = c.Start(context.WithoutCancel(ctx))
			}
			if err != nil {
				pool.Close()
				return nil, err
			}
			rc.Store(c)
			return func() {
				sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				_ = c.Stop(sctx)
				pool.Close()
			}, nil
		},
		send: func(ctx context.Context, pool *pgxpool.Pool, seq int64, committed func()) error {
			err := f.placeOrder(ctx, pool, seq, func(ctx context.Context, tx pgx.Tx, o order) error {
				_, err := rc.Load().InsertTx(ctx, tx, o, &river.InsertOpts{Queue: f.queue})
				return err
			})
			if err == nil {
				committed()
			}
			return err
		},
	}
}

// runAll runs each fn(ctx) in its own goroutine; the returned stop cancels
// them and waits until all have returned.
func runAll(ctx context.Context, fns ...func(context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{}, len(fns))
	for _, fn := range fns {
		go func() {
			if err := fn(ctx); err != nil {
				quiet.Error("bench: component failed", "error", err)
			}
			done <- struct{}{}
		}()
	}
	return func() {
		cancel()
		for range fns {
			<-done
		}
	}
}
