package signals_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/testenv"
)

// Limits across processes: four worker processes (this test binary
// re-executed, each running TestLimitsChild) share one Redis and one
// outbox, and run three receivers of one signal: "capped" with
// ConcurrencyLimit, "paced" with RateLimit, and "free" with no limit.
const (
	limitsChildEnv  = "SIGNALS_TEST_LIMITS_CHILD"
	limitsProcesses = 4
	// limitsEvents are sent to "order.placed", whose receivers are "paced"
	// and "free"; limitsCappedEvents to "order.shipped", whose receiver is
	// "capped".
	limitsEvents       = 750
	limitsCappedEvents = 250
	// limitsConcurrency and limitsHold: at most 5 "capped" runs at once, each
	// 50ms long, 100/s at best: its backlog takes 2.5s at least.
	limitsConcurrency = 5
	limitsHold        = 50 * time.Millisecond
	// limitsRate and limitsBurst: "paced" starts 50 runs a second after a
	// burst of 5: its backlog takes 15s. The test measures the 10s that
	// follow the last start of "free": while the workers are busy with
	// free's backlog, paced's waiting tasks queue behind it and its tokens
	// go partly unused (asynq's pending list is first in, first out).
	limitsRate   = 50
	limitsBurst  = 5
	limitsWindow = 10 * time.Second
)

// limitsReceivers registers the two signals in reg and connects the three
// receivers; record is called at the end of each run with its start.
func limitsReceivers(t *testing.T, reg *signals.Registry, queue string, record func(ctx context.Context, e signals.Event[orderPlaced], start time.Time) error) (placed, shipped *signals.Signal[orderPlaced]) {
	placed = signals.Register[orderPlaced](reg, "order.placed")
	shipped = signals.Register[orderPlaced](reg, "order.shipped")
	shipped.Connect("capped", func(ctx context.Context, e signals.Event[orderPlaced]) error {
		start := time.Now()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(limitsHold):
		}
		return record(ctx, e, start)
	}, signals.Queue(queue), signals.ConcurrencyLimit(limitsConcurrency))
	placed.Connect("paced", func(ctx context.Context, e signals.Event[orderPlaced]) error {
		return record(ctx, e, time.Now())
	}, signals.Queue(queue), signals.RateLimit(limitsRate, limitsBurst))
	placed.Connect("free", func(ctx context.Context, e signals.Event[orderPlaced]) error {
		return record(ctx, e, time.Now())
	}, signals.Queue(queue))
	return placed, shipped
}

// TestLimitsHoldAcrossProcesses requires of four worker processes that
// ConcurrencyLimit(5) is never exceeded (counted from the runs' recorded
// start and end times), that RateLimit(50, 5) starts 50 runs/s within 10%
// over 10s, that the unlimited receiver's events all finish while the rate
// limited one still has most of its backlog, and that waiting is no
// failure: every run is its event's first attempt, asynq counts no failed
// task, nothing is dead, and the workers log nothing at warn level.
func TestLimitsHoldAcrossProcesses(t *testing.T) {
	t.Parallel()
	f := setup(t)
	s := pgx.Identifier{f.schema}.Sanitize()
	_, err := f.pool.Exec(t.Context(), `
CREATE TABLE `+s+`.ready_processes (process int PRIMARY KEY);
CREATE TABLE `+s+`.limit_runs (order_id text NOT NULL, receiver text NOT NULL, process int NOT NULL,
    attempt int NOT NULL, started_at timestamptz NOT NULL, ended_at timestamptz NOT NULL)`)
	require.NoError(t, err)

	placed, shipped := limitsReceivers(t, f.reg, f.queue, func(context.Context, signals.Event[orderPlaced], time.Time) error {
		return errors.New("the parent runs no receiver")
	})
	children := make([]*childProcess, limitsProcesses)
	for i := range children {
		children[i] = startLimitsChild(t, limitsChild{Process: i, Schema: f.schema, Queue: f.queue})
	}
	waitFor(t, children, "every process ready", func() (bool, error) {
		var n int
		err := f.pool.QueryRow(context.Background(), `SELECT count(*) FROM `+s+`.ready_processes`).Scan(&n)
		return n == limitsProcesses, err
	})
	for batch := 0; batch < limitsEvents; batch += 50 {
		err := pgx.BeginFunc(t.Context(), f.pool, func(tx pgx.Tx) error {
			for i := batch; i < batch+50; i++ {
				if _, err := placed.SendReliable(t.Context(), tx, orderPlaced{OrderID: fmt.Sprintf("o-%d", i)}); err != nil {
					return err
				}
				if i >= limitsCappedEvents {
					continue
				}
				if _, err := shipped.SendReliable(t.Context(), tx, orderPlaced{OrderID: fmt.Sprintf("o-%d", i)}); err != nil {
					return err
				}
			}
			return nil
		})
		require.NoError(t, err)
	}
	f.runDispatcher(t, signals.DispatcherConfig{})

	runs := func(receiver string, want int) func() (bool, error) {
		return func() (bool, error) {
			var n int
			err := f.pool.QueryRow(context.Background(), `SELECT count(*) FROM `+s+`.limit_runs WHERE receiver = $1`, receiver).Scan(&n)
			return n == want, err
		}
	}
	waitFor(t, children, "every free run", runs("free", limitsEvents))
	var pacedWhenFreeDone int
	require.NoError(t, f.pool.QueryRow(t.Context(), `SELECT count(*) FROM `+s+`.limit_runs WHERE receiver = 'paced'`).Scan(&pacedWhenFreeDone))
	waitFor(t, children, "every capped run", runs("capped", limitsCappedEvents))
	waitFor(t, children, "every paced run", runs("paced", limitsEvents))
	waitFor(t, children, "every outbox row done", func() (bool, error) {
		counts, err := f.queries.Count(context.Background(), f.pool)
		return counts.Live == 0, err
	})
	for _, c := range children {
		c.stop(t)
	}

	counts, err := f.queries.Count(t.Context(), f.pool)
	require.NoError(t, err)
	require.Zero(t, counts.Dead, "dead letters")
	var runsTotal, distinct, maxAttempt int
	require.NoError(t, f.pool.QueryRow(t.Context(),
		`SELECT count(*), count(DISTINCT (order_id, receiver)), max(attempt) FROM `+s+`.limit_runs`).Scan(&runsTotal, &distinct, &maxAttempt))
	require.Equal(t, 2*limitsEvents+limitsCappedEvents, runsTotal, "one run per event and receiver")
	require.Equal(t, 2*limitsEvents+limitsCappedEvents, distinct)
	require.Equal(t, 1, maxAttempt, "a wait for a limit uses no attempt")
	info, err := f.inspector(t).GetQueueInfo(f.queue)
	require.NoError(t, err)
	require.Zero(t, info.FailedTotal, "asynq counts no wait as a failure")
	for _, c := range children {
		for _, level := range []string{"level=WARN", "level=ERROR"} {
			require.NotContains(t, c.output.String(), level, "%s logged at warn level or above", c.name)
		}
	}

	var overlap int
	require.NoError(t, f.pool.QueryRow(t.Context(), `
SELECT max((SELECT count(*) FROM `+s+`.limit_runs o
            WHERE o.receiver = 'capped' AND o.started_at <= r.started_at AND o.ended_at > r.started_at))
FROM `+s+`.limit_runs r WHERE r.receiver = 'capped'`).Scan(&overlap))
	require.LessOrEqual(t, overlap, limitsConcurrency, "capped runs at once")
	require.GreaterOrEqual(t, overlap, 2, "the capped receiver ran in parallel at all")
	var capped []int
	require.NoError(t, f.pool.QueryRow(t.Context(),
		`SELECT array_agg(n ORDER BY p) FROM (SELECT process p, count(*) n FROM `+s+`.limit_runs WHERE receiver = 'capped' GROUP BY process) x`).Scan(&capped))

	var inWindow int
	var span, after float64
	require.NoError(t, f.pool.QueryRow(t.Context(), `
WITH p AS (SELECT started_at FROM `+s+`.limit_runs WHERE receiver = 'paced'),
     w AS (SELECT max(started_at) AS start FROM `+s+`.limit_runs WHERE receiver = 'free')
SELECT (SELECT count(*) FROM p, w WHERE started_at >= w.start AND started_at < w.start + $1 * interval '1 millisecond'),
       extract(epoch FROM max(started_at) - min(started_at))::float8,
       extract(epoch FROM max(started_at) - (SELECT start FROM w))::float8
FROM p`, limitsWindow.Milliseconds()).Scan(&inWindow, &span, &after))
	require.Greater(t, after, limitsWindow.Seconds(), "paced's backlog lasted the window")
	rate := float64(inWindow) / limitsWindow.Seconds()
	var perSecond []int
	require.NoError(t, f.pool.QueryRow(t.Context(), `
WITH p AS (SELECT started_at FROM `+s+`.limit_runs WHERE receiver = 'paced')
SELECT array_agg(n ORDER BY sec) FROM (
    SELECT floor(extract(epoch FROM started_at - (SELECT min(started_at) FROM p))) sec, count(*) n FROM p GROUP BY 1) x`).Scan(&perSecond))
	t.Logf("paced runs started per second: %v", perSecond)
	t.Logf("ConcurrencyLimit(%d): at most %d capped runs at once; capped runs per process %v", limitsConcurrency, overlap, capped)
	t.Logf("RateLimit(%d, %d): %d runs started in the %v after free's backlog: %.1f/s; all %d in %.2fs (%.1f/s)",
		limitsRate, limitsBurst, inWindow, limitsWindow, rate, limitsEvents, span, float64(limitsEvents-limitsBurst)/span)
	t.Logf("when the free receiver's %d runs were done, the paced one had run %d", limitsEvents, pacedWhenFreeDone)
	// A token bucket never lets more through than its rate (and burst): the
	// upper bound is the limit's promise. How close it gets from below
	// depends on the machine keeping up (50.0 ± 0.5/s on 2 loaded cores), so
	// the lower bound only catches a limiter that starves its receiver.
	require.LessOrEqual(t, rate, 1.1*limitsRate, "paced runs per second over %v: never above the rate", limitsWindow)
	require.GreaterOrEqual(t, rate, 0.8*limitsRate, "paced runs per second over %v: close to the rate", limitsWindow)
	require.Less(t, pacedWhenFreeDone, limitsEvents/2, "the free receiver is not held back by the paced one's backlog")
}

// TestLimitsChild is one worker process of TestLimitsHoldAcrossProcesses,
// run only in a child process. It runs a Worker, records itself ready,
// and stops when stdin closes. It logs at warn level and above to stderr,
// which the parent reads.
func TestLimitsChild(t *testing.T) {
	raw := os.Getenv(limitsChildEnv)
	if raw == "" {
		t.Skip("runs only as a child process of TestLimitsHoldAcrossProcesses")
	}
	var c limitsChild
	require.NoError(t, json.Unmarshal([]byte(raw), &c))
	s := pgx.Identifier{c.Schema}.Sanitize()
	pool := newPool(t, func(cfg *pgxpool.Config) { cfg.MaxConns = 8 })
	reg, err := signals.NewRegistry(signals.RegistryConfig{Schema: c.Schema})
	require.NoError(t, err)
	limitsReceivers(t, reg, c.Queue, func(ctx context.Context, e signals.Event[orderPlaced], start time.Time) error {
		_, err := pool.Exec(ctx, `INSERT INTO `+s+`.limit_runs (order_id, receiver, process, attempt, started_at, ended_at) VALUES ($1, $2, $3, $4, $5, $6)`,
			e.Payload.OrderID, e.Receiver, c.Process, e.Attempt, start, time.Now())
		return err
	})
	w, err := signals.NewWorker(reg, pool, asynq.RedisClientOpt{Addr: testenv.RedisAddr()}, signals.WorkerConfig{
		Queues:          map[string]int{c.Queue: 1},
		ShutdownTimeout: 2 * time.Second,
		Logger:          slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	require.NoError(t, err)
	run(t, w.Run)
	_, err = pool.Exec(t.Context(), `INSERT INTO `+s+`.ready_processes (process) VALUES ($1)`, c.Process)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes it: stop
}

// limitsChild is one child's part, passed in limitsChildEnv.
type limitsChild struct {
	Process       int
	Schema, Queue string
}

// startLimitsChild starts TestLimitsChild in a new process with part c,
// killed when the test ends if it has not exited by then.
func startLimitsChild(t *testing.T, c limitsChild) *childProcess {
	t.Helper()
	return startTestProcess(t, "TestLimitsChild", limitsChildEnv, c.Process, c)
}

// TestLimitsInOneWorker covers what a limit does to one delivery: its
// retry budget, its dead letter, and the options' validation.
func TestLimitsInOneWorker(t *testing.T) {
	t.Parallel()

	t.Run("a limited receiver with MaxRetries(0) runs every task that waited", func(t *testing.T) {
		t.Parallel()
		f := setup(t)
		var mu sync.Mutex
		var infos []signals.ReceiveInfo
		f.reg = must(signals.NewRegistry(signals.RegistryConfig{Schema: f.schema, Middleware: []signals.Middleware{receiveRecorder(&mu, &infos)}}))
		logs := &testenv.Logs{}
		f.logger = slog.New(logs)
		sig := signals.Register[orderPlaced](f.reg, "order.placed")
		var running, most, ran atomic.Int32
		sig.Connect("once", func(ctx context.Context, e signals.Event[orderPlaced]) error {
			n := running.Add(1)
			defer running.Add(-1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
			ran.Add(1)
			if e.Attempt != 1 || e.Receiver != "once" {
				return signals.Permanent(fmt.Errorf("attempt %d", e.Attempt))
			}
			return nil
		}, signals.Queue(f.queue), signals.MaxRetries(0), signals.ConcurrencyLimit(1))
		f.runDispatcher(t, signals.DispatcherConfig{})
		f.runWorker(t)
		sendOrders(t, f, sig, "o", 10)
		require.Eventually(t, func() bool {
			counts, err := f.queries.Count(context.Background(), f.pool)
			return err == nil && counts.Live == 0
		}, eventually, tick)
		counts, err := f.queries.Count(t.Context(), f.pool)
		require.NoError(t, err)
		require.Zero(t, counts.Dead, "no task was dead-lettered for waiting")
		require.EqualValues(t, 10, ran.Load())
		require.EqualValues(t, 1, most.Load(), "one at a time")
		mu.Lock()
		require.Len(t, infos, 10, "middleware sees runs, not waits")
		mu.Unlock()
		info, err := f.inspector(t).GetQueueInfo(f.queue)
		require.NoError(t, err)
		require.Zero(t, info.FailedTotal, "asynq counts no wait as a failure")
		require.NotEmpty(t, logs.Find("signals: receiver limit reached; task waits"), "tasks waited, at debug level")
		require.Empty(t, logs.WarningsSince(0), "nothing at warn level or above")
	})

	t.Run("a limited receiver that keeps failing is dead after its own MaxRetries", func(t *testing.T) {
		t.Parallel()
		f := setup(t)
		var mu sync.Mutex
		var infos []signals.ReceiveInfo
		f.reg = must(signals.NewRegistry(signals.RegistryConfig{Schema: f.schema, Middleware: []signals.Middleware{receiveRecorder(&mu, &infos)}}))
		sig := signals.Register[orderPlaced](f.reg, "order.placed")
		var runs atomic.Int32
		sig.Connect("failing", func(context.Context, signals.Event[orderPlaced]) error {
			runs.Add(1)
			return errors.New("partner said no")
		}, signals.Queue(f.queue), signals.MaxRetries(2), fastRetry, signals.RateLimit(100, 1))
		f.runDispatcher(t, signals.DispatcherConfig{})
		f.runWorker(t)
		send(t, f.pool, sig, orderPlaced{OrderID: "o-1"})
		dead := f.awaitDead(t, 1)
		require.Equal(t, signals.ReasonRetriesExhausted, dead[0].Reason)
		require.Equal(t, 3, dead[0].Attempts)
		require.EqualValues(t, 3, runs.Load(), "MaxRetries(2): three runs, no more")
		mu.Lock()
		defer mu.Unlock()
		require.Len(t, infos, 3)
		for i, info := range infos {
			require.Equal(t, 2, info.MaxRetry, "middleware sees the receiver's own budget")
			require.Equal(t, i+1, info.Attempt)
		}
		require.Equal(t, signals.ReasonRetriesExhausted, infos[2].Dead)
	})

	t.Run("options out of range are refused, naming the option", func(t *testing.T) {
		t.Parallel()
		f := setup(t)
		sig := signals.Register[orderPlaced](f.reg, "order.placed")
		for _, tc := range []struct {
			opt  signals.ReceiverOption
			name string
		}{
			{signals.ConcurrencyLimit(0), "ConcurrencyLimit(0)"},
			{signals.ConcurrencyLimit(-1), "ConcurrencyLimit(-1)"},
			{signals.RateLimit(0, 1), "RateLimit(0, 1)"},
			{signals.RateLimit(-5, 1), "RateLimit(-5, 1)"},
			{signals.RateLimit(math.NaN(), 1), "RateLimit(NaN, 1)"},
			{signals.RateLimit(math.Inf(1), 1), "RateLimit(+Inf, 1)"},
			{signals.RateLimit(10, 0), "RateLimit(10, 0)"},
		} {
			err := wiringError(t, func() { sig.Connect("r", nop[orderPlaced], tc.opt) })
			require.ErrorIs(t, err, signals.ErrInvalidConfig, tc.name)
			require.True(t, strings.Contains(err.Error(), tc.name), "%q names %s", err, tc.name)
		}
		sig.Connect("r", nop[orderPlaced], signals.ConcurrencyLimit(1), signals.RateLimit(0.5, 1))
	})
}

// receiveRecorder is a middleware that records the ReceiveInfo of every
// run it wraps in infos.
func receiveRecorder(mu *sync.Mutex, infos *[]signals.ReceiveInfo) signals.Middleware {
	return signals.Middleware{Receive: func(ctx context.Context, info *signals.ReceiveInfo, next func(context.Context) error) error {
		err := next(ctx)
		mu.Lock()
		defer mu.Unlock()
		*infos = append(*infos, *info)
		return err
	}}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
