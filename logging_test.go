package signals_test

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/testenv"
)

func TestDispatcherOnAnUnmigratedSchemaSaysHowToFixItOnce(t *testing.T) {
	t.Parallel()
	logs := &testenv.Logs{}
	reg := newRegistry(t, signals.RegistryConfig{Schema: testenv.Schema(t)}) // never migrated
	d, err := signals.NewDispatcher(reg, testenv.Pool(t), setup(t).redis, signals.DispatcherConfig{
		BackoffMin: time.Millisecond, BackoffMax: 5 * time.Millisecond, Logger: slog.New(logs),
	})
	require.NoError(t, err)
	run(t, d.Run)
	require.Eventually(t, func() bool {
		return len(logs.Find("signals: dispatcher batch failed; backing off")) >= 5
	}, eventually, tick, "it keeps trying")
	hints := logs.Find("signals: the outbox tables are missing: run Registry.Migrate (or apply signals.Migrations) for this schema; the Dispatcher waits until they exist")
	require.Len(t, hints, 1, "said once, with the fix")
	require.Equal(t, "ERROR", hints[0]["level"])
	require.Equal(t, reg.Schema(), hints[0]["schema"])
	for _, l := range logs.Find("signals: dispatcher batch failed; backing off") {
		require.Equal(t, "DEBUG", l["level"], "each retry only at debug")
	}
}

func TestWorkerSaysAtStartWhatWorkItDoesNotKnow(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sender := newRegistry(t, signals.RegistryConfig{Schema: f.schema})
	newer := signals.Register[orderPlaced](sender, "order.placed")
	newer.Connect("known", nop[orderPlaced], signals.Queue(f.queue))
	newer.Connect("added-later", nop[orderPlaced], signals.Queue(f.queue))
	for range 3 {
		send(t, f.pool, newer, orderPlaced{OrderID: "o"})
	}

	signals.Register[orderPlaced](f.reg, "order.placed").Connect("known", nop[orderPlaced], signals.Queue(f.queue))
	logs := &testenv.Logs{}
	w, err := signals.NewWorker(f.reg, f.pool, f.redis, signals.WorkerConfig{Queues: map[string]int{f.queue: 1}, Logger: slog.New(logs)})
	require.NoError(t, err)
	run(t, w.Run)
	msg := "signals: the ledger holds work for a receiver this worker does not know: a worker that connects it must run it"
	require.Eventually(t, func() bool { return len(logs.Find(msg)) > 0 }, eventually, tick)
	lines := logs.Find(msg)
	require.Len(t, lines, 1, "said once, for the one receiver it lacks")
	require.Equal(t, "added-later", lines[0]["receiver"])
	require.Equal(t, "3", lines[0]["pending"])
}

// TestOutagesLogEachWarningOncePerHalfMinute cuts PostgreSQL for 3 s while
// acks are due, then stops Redis for 3 s, under a Dispatcher and a Worker
// sharing one logger, and requires that no warning or error repeated in
// either outage: the ack flush, the relay and asynq each say it once per
// 30 s, with a count of what they held back.
func TestOutagesLogEachWarningOncePerHalfMinute(t *testing.T) {
	t.Parallel()
	f := setup(t)
	srv := testenv.StartRedis(t)
	f.redis = asynq.RedisClientOpt{Addr: srv.Addr}
	proxy := testenv.StartProxy(t, postgresAddr(t))
	db := testenv.PoolFor(t, testenv.URLVia(t, proxy))
	logs := &testenv.Logs{}
	logger := slog.New(logs)

	release := make(chan struct{})
	var ran atomic.Int64
	sig := signals.Register[orderPlaced](f.reg, "order.placed")
	sig.Connect("r", func(context.Context, signals.Event[orderPlaced]) error {
		ran.Add(1)
		<-release
		return nil
	}, signals.Queue(f.queue))
	d, err := signals.NewDispatcher(f.reg, db, f.redis, signals.DispatcherConfig{Logger: logger, BackoffMin: 20 * time.Millisecond, BackoffMax: 500 * time.Millisecond})
	require.NoError(t, err)
	run(t, d.Run)
	w, err := signals.NewWorker(f.reg, db, f.redis, signals.WorkerConfig{Queues: map[string]int{f.queue: 1}, ShutdownTimeout: 2 * time.Second, Logger: logger})
	require.NoError(t, err)
	run(t, w.Run)

	const events = 10
	sendOrders(t, f, sig, "o", events)
	testenv.Eventually(t, eventually, func() bool { return ran.Load() == events }, "every receiver started")

	// PostgreSQL: the receivers return while it is cut, and their acks
	// fail every flush (5 ms) until it is back.
	from := logs.Len()
	proxy.Block()
	close(release)
	cutAt := time.Now()
	testenv.Eventually(t, eventually, func() bool { return time.Since(cutAt) >= 3*time.Second }, "a 3 s outage")
	during := logs.WarningsSince(from)
	proxy.Unblock()
	testenv.Eventually(t, eventually, func() bool { return f.pending(t) == 0 }, "the acks go through once it is back")
	requireNoRepeats(t, "a 3 s PostgreSQL outage", during)
	require.Contains(t, during, "signals: remove acked outbox rows; will retry", "the failing acks said so, once")

	// Redis: stopped for 3 s while events keep coming.
	from = logs.Len()
	srv.Stop(t)
	stoppedAt := time.Now()
	sendOrders(t, f, sig, "during", events)
	testenv.Eventually(t, eventually, func() bool { return time.Since(stoppedAt) >= 3*time.Second }, "a 3 s outage")
	during = logs.WarningsSince(from)
	srv.Start(t)
	testenv.Eventually(t, eventually, func() bool { return f.pending(t) == 0 }, "delivered once it is back")
	requireNoRepeats(t, "a 3 s Redis outage", during)
	require.NotEmpty(t, during, "the outage was noticed")
	t.Logf("warnings and errors in all: %v", logs.WarningsSince(0))
}

// requireNoRepeats requires each message in lines at most once.
func requireNoRepeats(t *testing.T, what string, lines []string) {
	t.Helper()
	seen := map[string]int{}
	for _, l := range lines {
		seen[l]++
	}
	for msg, n := range seen {
		require.Equal(t, 1, n, "%s: %q logged %d times: %v", what, msg, n, lines)
	}
}
