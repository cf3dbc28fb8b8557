package signals_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/testenv"
)

// TestRedisLosingItsDataLosesNoEvent sends a stream of events from eight
// senders while Redis loses everything mid-stream, and requires that every
// committed event's receiver ran (missing = 0) and nothing else did
// (phantom = 0).
func TestRedisLosingItsDataLosesNoEvent(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		lose func(t *testing.T, srv *testenv.Redis, rc *redis.Client)
	}{
		{"FLUSHALL", func(t *testing.T, _ *testenv.Redis, rc *redis.Client) {
			require.NoError(t, rc.FlushAll(context.Background()).Err())
		}},
		{"restarted empty", func(t *testing.T, srv *testenv.Redis, _ *redis.Client) {
			srv.Stop(t)
			srv.Start(t)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			srv := testenv.StartRedis(t)
			f := setup(t)
			f.redis = asynq.RedisClientOpt{Addr: srv.Addr}
			rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
			t.Cleanup(func() { _ = rc.Close() })

			sig := register[orderPlaced](t, f.reg, "order.placed")
			runs := newCounter()
			sig.Connect("r", func(_ context.Context, e signals.Event[orderPlaced]) error {
				time.Sleep(time.Millisecond) // a receiver that takes a moment, so tasks pile up
				runs.add(e.Payload.OrderID)
				return nil
			}, signals.Queue(f.queue), fastRetry)
			f.runDispatcher(t, signals.DispatcherConfig{})
			f.runWorker(t)

			const senders, each = 8, 150
			var sent sync.Map
			var committed atomic.Int64
			var wg sync.WaitGroup
			for s := range senders {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range each {
						id := ulid.Make().String()
						_, err := commit(context.Background(), f.pool, sig, orderPlaced{OrderID: id})
						if err != nil {
							t.Errorf("sender %d, event %d: %v", s, i, err)
							return
						}
						sent.Store(id, true)
						committed.Add(1)
					}
				}()
			}
			require.Eventually(t, func() bool { return committed.Load() >= senders*each/3 }, eventually, tick)
			c.lose(t, srv, rc)
			wg.Wait()

			require.Eventually(t, func() bool { return f.pending(t) == 0 }, 2*eventually, tick, "every row done")
			missing, phantom, twice := 0, 0, 0
			sent.Range(func(id, _ any) bool {
				if runs.get(id.(string)) == 0 {
					missing++
				}
				return true
			})
			for id, n := range runs.snapshot() {
				if _, ok := sent.Load(id); !ok {
					phantom++
				}
				if n > 1 {
					twice++
				}
			}
			require.Zero(t, missing, "committed events whose receiver never ran")
			require.Zero(t, phantom, "runs of events never committed")
			t.Logf("%d events committed; %d ran more than once (at least once is the promise)", committed.Load(), twice)
		})
	}
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
	// A flush is two DELETEs (see store.Delete), for up to 1,000 acks.
	require.LessOrEqual(t, n*2, int64(events), "at most half a statement per delivery: %d statements for %d acks", n, events)
	t.Logf("%d acks in %d statements (%.1f per statement)", events, n, float64(events)/float64(n))
}

func TestARowRedisRefusesHoldsBackNoOther(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedis(t)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = rc.Close() })
	require.NoError(t, rc.ConfigSet(t.Context(), "proto-max-bulk-len", "1048576").Err())

	f := setupRegistry(t, signals.RegistryConfig{MaxPayloadBytes: 3 << 20})
	f.redis = asynq.RedisClientOpt{Addr: srv.Addr}
	sig, runs := countedSignal(t, f)
	huge := orderPlaced{OrderID: "huge:" + strings.Repeat("x", 2<<20)}
	send(t, f.pool, sig, huge)
	const events = 200
	sendOrders(t, f, sig, "small", events)

	f.runDispatcher(t, signals.DispatcherConfig{MaxEnqueueAttempts: 3, BackoffMin: 50 * time.Millisecond, BackoffMax: 100 * time.Millisecond})
	f.runWorker(t)
	require.Eventually(t, func() bool { return len(runs.snapshot()) == events }, eventually, tick, "the other rows flow")

	d := f.ledger(t)
	var dead []signals.DeadLetter
	require.Eventually(t, func() bool {
		var err error
		dead, err = d.DeadLetters(t.Context(), signals.DeadFilter{})
		return err == nil && len(dead) == 1
	}, eventually, tick)
	require.Equal(t, signals.ReasonUnenqueueable, dead[0].Reason)
	require.Equal(t, 3, dead[0].Attempts)
	require.NotEmpty(t, dead[0].Error)
	require.Equal(t, 0, runs.get(huge.OrderID))
	require.Eventually(t, func() bool { return f.pending(t) == 0 }, eventually, tick)
}

func TestRequeuedDeadLetterKeepsItsTaskID(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := register[orderPlaced](t, f.reg, "order.placed")
	var broken atomic.Bool
	broken.Store(true)
	var mu sync.Mutex
	var seen []ulid.ULID
	var applied atomic.Int64
	sig.Connect("r", func(ctx context.Context, e signals.Event[orderPlaced]) error {
		mu.Lock()
		seen = append(seen, e.TaskID)
		mu.Unlock()
		return pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error {
			first, err := signals.Once(ctx, tx, e)
			if err != nil || !first {
				return err
			}
			applied.Add(1)
			if broken.Load() {
				return signals.Permanent(errors.New("card declined"))
			}
			return nil
		})
	}, signals.Queue(f.queue))
	f.runDispatcher(t, signals.DispatcherConfig{})
	f.runWorker(t)
	send(t, f.pool, sig, orderPlaced{OrderID: "o-1"})

	d := f.ledger(t)
	var dead []signals.DeadLetter
	require.Eventually(t, func() bool {
		var err error
		dead, err = d.DeadLetters(t.Context(), signals.DeadFilter{Receiver: "r"})
		return err == nil && len(dead) == 1
	}, eventually, tick)
	require.Equal(t, signals.ReasonPermanent, dead[0].Reason)

	broken.Store(false)
	n, err := d.RequeueDead(t.Context(), dead[0].TaskID)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == 2
	}, eventually, tick, "a fresh asynq task runs the receiver again")
	require.Eventually(t, func() bool { return f.pending(t) == 0 }, eventually, tick)
	mu.Lock()
	require.Equal(t, seen[0], seen[1], "the receiver sees the same Event.TaskID")
	mu.Unlock()
	require.Equal(t, int64(2), applied.Load(), "Once rolled back with the failed run, so the retry applies")

	n, err = d.DiscardDead(t.Context(), dead[0].TaskID)
	require.NoError(t, err)
	require.Zero(t, n, "requeued, so no longer dead")
}

func TestUnknownReceiverWaitsForANewerWorker(t *testing.T) {
	t.Parallel()
	f := setup(t)
	// The sending binary (and the newer worker) connects "welcome"; the
	// older worker's registry, on the same schema, does not have it.
	sig := register[orderPlaced](t, f.reg, "order.placed")
	var ran atomic.Int64
	sig.Connect("welcome", func(context.Context, signals.Event[orderPlaced]) error {
		ran.Add(1)
		return nil
	}, signals.Queue(f.queue), signals.MaxRetries(5))
	old := signals.MustNewRegistry(signals.RegistryConfig{Schema: f.schema, Logger: quietLogger()})
	register[orderPlaced](t, old, "order.placed").Connect("other", nop[orderPlaced], signals.Queue(f.queue))

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

func TestAReceiverPastItsTimeoutNeverRunsBesideItself(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := register[orderPlaced](t, f.reg, "order.placed")
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

func TestDefaultQueueIsTheApplications(t *testing.T) {
	t.Parallel()
	// Named after the main module, as the binary's build info gives it:
	// here, this module's test binary.
	reg := signals.MustNewRegistry(signals.RegistryConfig{})
	require.Equal(t, "signals.github.com-dj-signals-signals", reg.Queue())
	sig := register[orderPlaced](t, reg, "order.placed")
	sig.Connect("r", nop[orderPlaced])
	mail := testenv.Queue(t) // queues are claimed per schema for the whole process
	sig.Connect("elsewhere", nop[orderPlaced], signals.Queue(mail))
	require.Equal(t, []string{mail, reg.Queue()}, reg.Queues(), "sorted")

	other := signals.MustNewRegistry(signals.RegistryConfig{Queue: "billing"})
	require.Equal(t, "billing", other.Queue())
	_, err := signals.NewRegistry(signals.RegistryConfig{Queue: "has spaces"})
	require.ErrorIs(t, err, signals.ErrInvalidName)
}
