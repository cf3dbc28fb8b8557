package signals_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/testenv"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

func TestWorkerWithoutReceiversSaysWhy(t *testing.T) {
	t.Parallel()
	f := setup(t)
	w, err := signals.NewWorker(f.reg, f.pool, f.redis, signals.WorkerConfig{})
	require.NoError(t, err)
	require.ErrorIs(t, w.Run(t.Context()), signals.ErrNoReceivers)
}

func TestDispatcherAndWorkerStopCleanlyOnCancel(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := nopSignal(t, f, "r")
	sendOrders(t, f, sig, "o", 50)
	stopDispatcher := start(t, f.dispatcher(t, signals.DispatcherConfig{BatchSize: 5}).Run)
	require.Eventually(t, func() bool { return f.notEnqueued(t) < 50 }, eventually, tick)
	stopDispatcher(10 * time.Second)
	// Whatever was claimed was either committed (recorded and queued) or
	// rolled back (still pending): rows plus tasks account for every event.
	info, err := f.inspector(t).GetQueueInfo(f.queue)
	require.NoError(t, err)
	require.Equal(t, 50, f.notEnqueued(t)+info.Size)

	w, err := signals.NewWorker(f.reg, f.pool, f.redis, signals.WorkerConfig{Queues: map[string]int{f.queue: 1}, Logger: quietLogger()})
	require.NoError(t, err)
	start(t, w.Run)(15 * time.Second)
}

func TestWorkerAcksManyDeliveriesPerStatement(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig, runs := countedSignal(t, f)
	const events = 600
	sendOrders(t, f, sig, "o", events)
	f.runDispatcher(t, signals.DispatcherConfig{})
	require.Eventually(t, func() bool { return f.notEnqueued(t) == 0 }, eventually, tick)

	deletes := &testenv.Statements{Prefix: "DELETE"}
	workerPool := newPool(t, func(c *pgxpool.Config) { c.ConnConfig.Tracer = deletes })
	w, err := signals.NewWorker(f.reg, workerPool, f.redis, signals.WorkerConfig{Queues: map[string]int{f.queue: 1}, Logger: quietLogger()})
	require.NoError(t, err)
	run(t, w.Run)

	require.Eventually(t, func() bool { return f.pending(t) == 0 }, eventually, tick)
	require.Len(t, runs.snapshot(), events)
	n := deletes.Count()
	require.Positive(t, n)
	// A flush is two DELETEs (see store.Delete), for up to 1,000 acks: each
	// flush carried several (how many depends on the machine's load).
	require.Less(t, n, int64(events), "fewer statements than deliveries: %d statements for %d acks", n, events)
	t.Logf("%d acks in %d statements (%.1f per statement)", events, n, float64(events)/float64(n))
}

func TestAReceiverPastItsTimeoutNeverRunsBesideItself(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := signals.Register[orderPlaced](f.reg, "order.placed")
	var running, most, runs atomic.Int64
	sig.Connect("stubborn", func(context.Context, signals.Event[orderPlaced]) error {
		now := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); now > m && !most.CompareAndSwap(m, now); m = most.Load() {
		}
		runs.Add(1)
		time.Sleep(1500 * time.Millisecond) // ignores ctx, well past Timeout and asynq's lease
		return nil
	}, signals.Queue(f.queue), signals.Timeout(100*time.Millisecond), signals.MaxRetries(10), fastRetry)
	f.runDispatcher(t, signals.DispatcherConfig{})
	f.runWorker(t)
	send(t, f.pool, sig, orderPlaced{OrderID: "o-1"})

	require.Eventually(t, func() bool { return f.pending(t) == 0 }, eventually, tick, "the first run's success is recorded")
	require.Equal(t, int64(1), most.Load(), "never two runs of one delivery at once in one worker")
	t.Logf("%d run(s) in all", runs.Load())
}

func TestUnknownReceiverWaitsForANewerWorker(t *testing.T) {
	t.Parallel()
	f := setup(t)
	// The sending binary (and the newer worker) connects "welcome"; the
	// older worker's registry, on the same schema, does not have it.
	sig := signals.Register[orderPlaced](f.reg, "order.placed")
	var ran atomic.Int64
	sig.Connect("welcome", func(context.Context, signals.Event[orderPlaced]) error {
		ran.Add(1)
		return nil
	}, signals.Queue(f.queue), signals.MaxRetries(5))
	old := newRegistry(t, signals.RegistryConfig{Schema: f.schema})
	signals.Register[orderPlaced](old, "order.placed").Connect("other", nop[orderPlaced], signals.Queue(f.queue))

	f.runDispatcher(t, signals.DispatcherConfig{})
	oldWorker, err := signals.NewWorker(old, f.pool, f.redis, signals.WorkerConfig{Queues: map[string]int{f.queue: 1}, Logger: quietLogger()})
	require.NoError(t, err)
	stopOld := start(t, oldWorker.Run)
	send(t, f.pool, sig, orderPlaced{OrderID: "o-1"})

	ins := f.inspector(t)
	require.Eventually(t, func() bool {
		tasks, err := ins.ListRetryTasks(f.queue)
		return err == nil && len(tasks) == 1 && strings.Contains(tasks[0].LastErr, `has no receiver "welcome"`)
	}, eventually, tick, "the older worker retries it rather than burying it")
	stopOld(10 * time.Second)

	f.runWorker(t)
	require.Eventually(t, func() bool { return ran.Load() == 1 }, eventually, tick, "the newer worker runs it")
	require.Eventually(t, func() bool { return f.pending(t) == 0 }, eventually, tick)
	dead, err := f.ledger(t).DeadLetters(t.Context(), signals.DeadFilter{})
	require.NoError(t, err)
	require.Empty(t, dead)
}
