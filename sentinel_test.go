package signals_test

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/testenv"
)

// The messages the Dispatcher logs when it sends again what Redis lost: by
// stale-row repair, because the ledger's marker key is gone, or because
// Redis went back in time.
const (
	logRepaired   = "signals: repaired enqueued rows whose tasks redis no longer held as running or queued"
	logMarkerGone = "signals: redis lost its data (the ledger's marker key is gone); sending every enqueued row again"
	logRewound    = "signals: redis went back in time (a failover to a replica that missed the latest writes?); sending the rows enqueued since then again"
)

// TestSentinelFailoverLosesNoEvent runs the relay and a worker against a
// primary, a replica and three sentinels, makes the replica fall behind,
// kills the primary (SIGKILL) mid-stream with tasks that only it held, and
// requires that every committed event's receiver ran once the sentinels
// promoted the replica (missing = 0) and nothing else did (phantom = 0).
// The ledger's marker survives such a failover: with stale-row repair
// (RepairAge) set far beyond the test, what must find the lost tasks is
// the relay noticing that Redis went back in time.
func TestSentinelFailoverLosesNoEvent(t *testing.T) {
	t.Parallel()
	s := testenv.StartSentinels(t)
	f := setup(t)
	opt := asynq.RedisFailoverClientOpt{MasterName: s.MasterName, SentinelAddrs: s.Addrs}

	st := newStream(t, f, f.queue)
	// A probe on a queue of its own, sent right after the kill, times the
	// first delivery after the failover without waiting behind the backlog.
	probeQueue := f.queue + "_probe"
	var probeRan atomic.Int64 // Unix ms
	probe := signals.Register[orderPlaced](f.reg, "probe")
	probe.Connect("p", func(context.Context, signals.Event[orderPlaced]) error {
		probeRan.CompareAndSwap(0, time.Now().UnixMilli())
		return nil
	}, signals.Queue(probeQueue))
	logs := &testenv.Logs{}
	// RepairAge far beyond the test: what finds the lost tasks must be the
	// relay noticing that Redis went back in time.
	runRelayAndWorker(t, f, opt, []string{f.queue, probeQueue}, 10*time.Minute, slog.New(logs))

	st.send(t, f.pool, 4, 200, 5*time.Millisecond)
	require.Eventually(t, func() bool { return st.committed.Load() >= 200 }, eventually, tick)

	s.CutReplication(t)
	primary := redis.NewClient(&redis.Options{Addr: s.Primary.Addr})
	t.Cleanup(func() { _ = primary.Close() })
	replica := redis.NewClient(&redis.Options{Addr: s.Replica.Addr})
	t.Cleanup(func() { _ = replica.Close() })
	require.Eventually(t, func() bool {
		return unreplicatedPending(t.Context(), primary, replica, f.queue) >= 10
	}, eventually, tick, "the primary holds queued tasks the replica never got")

	killedAt := time.Now()
	s.Primary.Stop(t)
	require.NoError(t, primary.Close())
	send(t, f.pool, probe, orderPlaced{OrderID: "probe"})
	require.Eventually(t, func() bool {
		addr, err := s.MasterAddr(t.Context())
		return err == nil && addr == s.Replica.Addr
	}, eventually, tick, "the sentinels promote the replica")
	promoted := since(killedAt)
	require.Eventually(t, func() bool { return probeRan.Load() != 0 }, eventually, tick, "an event sent after the kill runs")
	firstDelivery := time.UnixMilli(probeRan.Load()).Sub(killedAt).Round(time.Millisecond)

	st.wait()
	st.requireAllRan(t, f, 25*time.Second)
	done := since(killedAt)
	rewound := logs.Find(logRewound)
	require.NotEmpty(t, rewound, "the relay noticed Redis went back in time")
	t.Logf("%d events committed, %d ran more than once; from the kill: replica promoted in %v, first delivery (a probe sent after the kill) in %v, every row done in %v; marker renewals: %d",
		st.committed.Load(), st.twice(), promoted, firstDelivery, done, len(logs.Find(logMarkerGone)))
	for _, r := range rewound {
		t.Logf("rewind: sent again %s rows enqueued since %s", r["rows"], r["since"])
	}
}

// unreplicatedPending counts the tasks waiting in queue on primary whose
// hash replica does not hold: tasks a failover to replica loses before any
// worker ran them.
func unreplicatedPending(ctx context.Context, primary, replica *redis.Client, queue string) int {
	ids, err := primary.LRange(ctx, pendingKey(queue), 0, -1).Result()
	if err != nil || len(ids) == 0 {
		return 0
	}
	exists := make([]*redis.IntCmd, len(ids))
	if _, err := replica.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			exists[i] = p.Exists(ctx, "asynq:{"+queue+"}:t:"+id)
		}
		return nil
	}); err != nil {
		return 0
	}
	n := 0
	for _, e := range exists {
		if e.Val() == 0 {
			n++
		}
	}
	return n
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }

// runRelayAndWorker runs a Dispatcher and a Worker on the fixture's
// registry and outbox, both on the Redis that opt describes, until the test
// ends. The Dispatcher checks rows enqueued repairAge ago and logs to logger;
// the Worker serves queues with two receivers at a time, so that a stream
// builds a backlog in Redis for an outage to lose.
func runRelayAndWorker(t *testing.T, f *testBundle, opt asynq.RedisConnOpt, queues []string, repairAge time.Duration, logger *slog.Logger) {
	t.Helper()
	d, err := signals.NewDispatcher(f.reg, f.pool, opt, signals.DispatcherConfig{
		RepairAge: repairAge,
		Logger:    logger,
	})
	require.NoError(t, err)
	run(t, d.Run)
	weights := map[string]int{}
	for _, q := range queues {
		weights[q] = 1
	}
	w, err := signals.NewWorker(f.reg, f.pool, opt, signals.WorkerConfig{
		Queues:                   weights,
		Concurrency:              2,
		DelayedTaskCheckInterval: 50 * time.Millisecond,
		ShutdownTimeout:          2 * time.Second,
		Logger:                   quietLogger(),
	})
	require.NoError(t, err)
	run(t, w.Run)
}

// stream is one ledger run: events sent by several senders at once, each
// an order with a fresh ULID, and the runs of their one receiver. cluster_test.go uses it too.
type stream struct {
	sig       *signals.Signal[orderPlaced]
	runs      *counter
	sent      sync.Map // order ID → struct{}, once its transaction committed
	committed atomic.Int64
	senders   sync.WaitGroup
}

// newStream registers "order.placed" with a receiver, "r", on queue, that
// takes a few milliseconds and counts its run.
func newStream(t *testing.T, f *testBundle, queue string) *stream {
	t.Helper()
	st := &stream{sig: signals.Register[orderPlaced](f.reg, "order.placed"), runs: newCounter()}
	st.sig.Connect("r", func(_ context.Context, e signals.Event[orderPlaced]) error {
		time.Sleep(5 * time.Millisecond) // a receiver that takes a moment, so tasks pile up in Redis
		st.runs.add(e.Payload.OrderID)
		return nil
	}, signals.Queue(queue), fastRetry)
	return st
}

// send starts senders goroutines, each committing each events, one per
// every (0: as fast as it can).
func (st *stream) send(t *testing.T, pool *pgxpool.Pool, senders, each int, every time.Duration) {
	for s := range senders {
		st.senders.Add(1)
		go func() {
			defer st.senders.Done()
			var pace <-chan time.Time
			if every > 0 {
				ticker := time.NewTicker(every)
				defer ticker.Stop()
				pace = ticker.C
			}
			for i := range each {
				if pace != nil {
					<-pace
				}
				id := ulid.Make().String()
				if _, err := commit(context.Background(), pool, st.sig, orderPlaced{OrderID: id, Cents: i}); err != nil {
					t.Errorf("sender %d, event %d: %v", s, i, err)
					return
				}
				st.sent.Store(id, struct{}{})
				st.committed.Add(1)
			}
		}()
	}
}

// wait waits for the senders to finish.
func (st *stream) wait() { st.senders.Wait() }

// requireAllRan waits up to timeout for the outbox to empty, then requires
// that every committed event's receiver ran (missing = 0) and that no other
// event's did (phantom = 0).
func (st *stream) requireAllRan(t *testing.T, f *testBundle, timeout time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool { return f.pending(t) == 0 }, timeout, tick, "every row done")
	missing, phantom := 0, 0
	st.sent.Range(func(id, _ any) bool {
		if st.runs.get(id.(string)) == 0 {
			missing++
		}
		return true
	})
	for id := range st.runs.snapshot() {
		if _, ok := st.sent.Load(id); !ok {
			phantom++
		}
	}
	require.Zero(t, missing, "committed events whose receiver never ran")
	require.Zero(t, phantom, "runs of events never committed")
}

// twice counts the events whose receiver ran more than once: at least
// once is the promise.
func (st *stream) twice() int {
	n := 0
	for _, runs := range st.runs.snapshot() {
		if runs > 1 {
			n++
		}
	}
	return n
}
