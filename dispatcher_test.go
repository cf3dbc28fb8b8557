package signals_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/testenv"
)

// heldFor is how long TestEventsCommittedOutOfOrderAreAllDelivered holds a
// transaction open while others flow.
const heldFor = 30 * time.Second

// deliveries records when each order's receiver first ran.
type deliveries struct {
	mu  sync.Mutex
	ran map[string]time.Time
}

func (d *deliveries) add(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.ran[id]; !ok {
		d.ran[id] = time.Now()
	}
}

func (d *deliveries) at(id string) (time.Time, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	at, ok := d.ran[id]
	return at, ok
}

// TestEventsCommittedOutOfOrderAreAllDelivered commits transactions in
// another order than their events' IDs and their transaction IDs, and holds
// one open for 30 s while a stream of others flows through a Dispatcher and
// a Worker: the stream is delivered as it commits, and every late
// transaction's event as soon as it commits.
func TestEventsCommittedOutOfOrderAreAllDelivered(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := signals.Register[orderPlaced](f.reg, "order.placed")
	runs := &deliveries{ran: map[string]time.Time{}}
	sig.Connect("r", func(_ context.Context, e signals.Event[orderPlaced]) error {
		runs.add(e.Payload.OrderID)
		return nil
	}, signals.Queue(f.queue))
	f.runDispatcher(t, signals.DispatcherConfig{})
	f.runWorker(t)
	delivered := func(id string) bool { _, ok := runs.at(id); return ok }

	// held sends first, so its event has the lowest ID and its transaction
	// the lowest ID of the test's, and commits last.
	held := f.begin(t)
	_, err := sig.SendReliable(t.Context(), held, orderPlaced{OrderID: "held"})
	require.NoError(t, err)
	heldAt := time.Now()

	// early takes a transaction ID before late does but sends after it:
	// its event's ID is later, its transaction ID earlier, and it commits
	// after late.
	early := f.begin(t)
	require.NoError(t, early.QueryRow(t.Context(), `SELECT pg_current_xact_id()`).Scan(new(uint64)))
	late := f.begin(t)
	_, err = sig.SendReliable(t.Context(), late, orderPlaced{OrderID: "late"})
	require.NoError(t, err)
	_, err = sig.SendReliable(t.Context(), early, orderPlaced{OrderID: "early"})
	require.NoError(t, err)
	require.NoError(t, late.Commit(t.Context()))
	testenv.Eventually(t, eventually, func() bool { return delivered("late") }, "the transaction that committed first")
	require.NoError(t, early.Commit(t.Context()))
	testenv.Eventually(t, eventually, func() bool { return delivered("early") }, "the transaction that committed second, with the earlier transaction ID")

	// A stream flows while held stays open.
	var worst time.Duration
	pace := time.NewTicker(50 * time.Millisecond)
	defer pace.Stop()
	for i := 0; time.Since(heldAt) < heldFor; i++ {
		<-pace.C
		id := "stream-" + strconv.Itoa(i)
		sentAt := time.Now()
		send(t, f.pool, sig, orderPlaced{OrderID: id})
		if i%20 == 0 { // every second, wait for one: the stream is delivered as it commits
			testenv.Eventually(t, eventually, func() bool { return delivered(id) }, "%s while a transaction is held open", id)
			at, _ := runs.at(id)
			worst = max(worst, at.Sub(sentAt))
		}
	}
	require.False(t, delivered("held"), "an open transaction's event is not delivered")
	committed := time.Now()
	require.NoError(t, held.Commit(t.Context()))
	testenv.Eventually(t, eventually, func() bool { return delivered("held") }, "the held transaction's event, once it commits")
	at, _ := runs.at("held")
	require.Eventually(t, func() bool { return f.pending(t) == 0 }, eventually, tick, "every row done")
	t.Logf("while a transaction was held open %v, the slowest sampled delivery took %v; the held event ran %v after its commit",
		heldFor, worst.Round(time.Millisecond), at.Sub(committed).Round(time.Millisecond))
}

// TestDispatcherRunReturnsNilOnShutdown requires Run to return nil when its
// ctx ends, so it drops into an errgroup, and to be callable again.
func TestDispatcherRunReturnsNilOnShutdown(t *testing.T) {
	t.Parallel()
	f := setup(t)
	nopSignal(t, f, "r")
	d := f.dispatcher(t, signals.DispatcherConfig{})
	for range 2 {
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx) }()
		cancel()
		require.NoError(t, <-done)
	}
	_, err := signals.NewDispatcher(nil, f.pool, f.redis, signals.DispatcherConfig{})
	require.ErrorIs(t, err, signals.ErrInvalidConfig)
}

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

			sig := signals.Register[orderPlaced](f.reg, "order.placed")
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

	dead := f.awaitDead(t, 1)
	require.Equal(t, signals.ReasonUnenqueueable, dead[0].Reason)
	require.Equal(t, 3, dead[0].Attempts)
	require.NotEmpty(t, dead[0].Error)
	require.Equal(t, 0, runs.get(huge.OrderID))
	require.Eventually(t, func() bool { return f.pending(t) == 0 }, eventually, tick)
}

func TestTwoDispatchersEnqueueEachRowOnce(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := signals.Register[orderPlaced](f.reg, "order.placed")
	runs := newCounter()
	sig.Connect("r", func(ctx context.Context, e signals.Event[orderPlaced]) error {
		runs.add(e.TaskID.String())
		return nil
	}, signals.Queue(f.queue))

	const events = 400
	sendOrders(t, f, sig, "o", events)
	// Small batches and two relays racing over the same backlog.
	f.runDispatcher(t, signals.DispatcherConfig{BatchSize: 7})
	f.runDispatcher(t, signals.DispatcherConfig{BatchSize: 11})

	require.Eventually(t, func() bool { return f.notEnqueued(t) == 0 }, eventually, tick)
	info, err := f.inspector(t).GetQueueInfo(f.queue)
	require.NoError(t, err)
	require.Equal(t, events, info.Size, "each row became exactly one task")

	f.runWorker(t)
	require.Eventually(t, func() bool { return len(runs.snapshot()) == events }, eventually, tick)
	for id, n := range runs.snapshot() {
		require.Equal(t, 1, n, "task %s", id)
	}
}

func TestLocalSendWakesTheRelayBeforeItsPoll(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig, runs := countedSignal(t, f)
	// An hour between polls: only the sender's in-process hint can explain
	// a prompt delivery.
	f.runDispatcher(t, signals.DispatcherConfig{PollInterval: time.Hour})
	f.runWorker(t)
	// The relay's first look happens at start; wait until it is idle.
	require.Eventually(t, func() bool { return f.pending(t) == 0 }, eventually, tick)

	for i := range 3 {
		send(t, f.pool, sig, orderPlaced{OrderID: fmt.Sprint(i)})
		require.Eventually(t, func() bool { return runs.get(fmt.Sprint(i)) == 1 }, 10*time.Second, tick)
	}
}

func TestConstructorsRejectBadConfig(t *testing.T) {
	t.Parallel()
	f := setup(t)
	for _, cfg := range []signals.DispatcherConfig{
		{BatchSize: -1},
		{Retention: 500 * time.Millisecond},
		{BackoffMin: time.Second, BackoffMax: time.Millisecond},
		{RecoverAfter: 10 * time.Second}, // below the Worker's own 10 s stop, with no margin
		{RecoverAfter: time.Minute},      // past asynq's lease, its recoverer's turn
	} {
		_, err := signals.NewDispatcher(f.reg, f.pool, f.redis, cfg)
		require.Error(t, err, "%+v", cfg)
	}
	_, err := signals.NewDispatcher(f.reg, nil, f.redis, signals.DispatcherConfig{})
	require.ErrorIs(t, err, signals.ErrInvalidConfig)
	_, err = signals.NewWorker(f.reg, f.pool, f.redis, signals.WorkerConfig{Queues: map[string]int{"q": 0}})
	require.ErrorIs(t, err, signals.ErrInvalidConfig)
	_, err = signals.NewWorker(f.reg, f.pool, nil, signals.WorkerConfig{})
	require.ErrorIs(t, err, signals.ErrInvalidConfig)
	_, err = signals.NewDispatcher(nil, f.pool, f.redis, signals.DispatcherConfig{})
	require.ErrorIs(t, err, signals.ErrInvalidConfig)
	_, err = signals.NewWorker(nil, f.pool, f.redis, signals.WorkerConfig{})
	require.ErrorIs(t, err, signals.ErrInvalidConfig)
	_, err = signals.NewRegistry(signals.RegistryConfig{Schema: "No"})
	require.ErrorIs(t, err, signals.ErrInvalidName)
}
