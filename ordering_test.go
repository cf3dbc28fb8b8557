package signals_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/testenv"
)

// step is one event of an ordered stream: its key and its place among the
// key's events in commit order.
type step struct {
	Key string `json:"key"`
	N   int    `json:"n"`
}

// orderChecker records, per key, the order a receiver saw the events of
// each key in, and whether two events of one key ever ran at once.
type orderChecker struct {
	mu        sync.Mutex
	seen      map[string][]int // first runs, in the order they started
	ran       map[step]int     // runs per event, retries included
	active    map[string]int   // runs in progress per key
	busyKeys  int              // keys with a run in progress now
	maxBusy   int              // the most keys ever running at once
	overlaps  []string         // two runs of one key at once
	outOfTurn []string         // an event started before an earlier one of its key
}

func newOrderChecker() *orderChecker {
	return &orderChecker{seen: map[string][]int{}, ran: map[step]int{}, active: map[string]int{}}
}

// start records the start of a run of s; end must follow.
func (c *orderChecker) start(s step) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.active[s.Key] > 0 {
		c.overlaps = append(c.overlaps, fmt.Sprintf("key %s: event %d started while another of its key ran", s.Key, s.N))
	}
	if c.active[s.Key] == 0 {
		c.busyKeys++
		c.maxBusy = max(c.maxBusy, c.busyKeys)
	}
	c.active[s.Key]++
	if c.ran[s] == 0 {
		seen := c.seen[s.Key]
		if len(seen) > 0 && seen[len(seen)-1] > s.N {
			c.outOfTurn = append(c.outOfTurn, fmt.Sprintf("key %s: event %d started after event %d", s.Key, s.N, seen[len(seen)-1]))
		}
		c.seen[s.Key] = append(seen, s.N)
	}
	c.ran[s]++
}

func (c *orderChecker) end(s step) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.active[s.Key]--
	if c.active[s.Key] == 0 {
		c.busyKeys--
	}
}

func (c *orderChecker) firstRuns() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.ran)
}

// sendInTurn sends events of key in commit order: each transaction takes a
// lock on its key, as an application locks the order or customer it
// changes, so the events of a key commit one after the other, numbered
// 0, 1, 2... in that order.
type sendInTurn struct {
	mu   sync.Mutex
	next map[string]int
}

func (s *sendInTurn) send(ctx context.Context, db signals.DB, sig *signals.Signal[step], key string, opts ...signals.SendOption) error {
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, "ordering-test/"+key); err != nil {
			return err
		}
		s.mu.Lock()
		n := s.next[key]
		s.next[key]++
		s.mu.Unlock()
		_, err := sig.SendReliable(ctx, tx, step{Key: key, N: n}, opts...)
		return err
	})
}

// TestOrderByRunsEachKeyInCommitOrder sends a stream of events over 40 keys
// from eight senders to two Dispatchers, a fifth of them failing their
// first attempt, and
// requires that for the ordered receiver every key's events started one at
// a time in commit order, that keys ran in parallel, and that the
// unordered receiver of the same signal got every event too.
func TestOrderByRunsEachKeyInCommitOrder(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := signals.Register[step](f.reg, "ledger.step")
	check := newOrderChecker()
	var unordered atomic.Int64
	sig.Connect("ordered", func(_ context.Context, e signals.Event[step]) error {
		check.start(e.Payload)
		defer check.end(e.Payload)
		if e.OrderingKey != e.Payload.Key {
			return signals.Permanent(fmt.Errorf("event has ordering key %q, want %q", e.OrderingKey, e.Payload.Key))
		}
		time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond) // work that takes a moment, so runs overlap
		if e.Attempt == 1 && e.Payload.N%5 == 2 {
			return errors.New("first attempts of every fifth event fail")
		}
		return nil
	}, signals.Queue(f.queue), signals.OrderBy(func(s step) string { return s.Key }), fastRetry)
	sig.Connect("unordered", func(_ context.Context, e signals.Event[step]) error {
		if e.OrderingKey != "" {
			return signals.Permanent(fmt.Errorf("unordered receiver got ordering key %q", e.OrderingKey))
		}
		unordered.Add(1)
		return nil
	}, signals.Queue(f.queue))
	// Two Dispatchers claim side by side, as in two processes.
	f.runDispatcher(t, signals.DispatcherConfig{})
	f.runDispatcher(t, signals.DispatcherConfig{})
	f.runWorker(t)

	const senders, each, keys = 8, 60, 40
	turn := &sendInTurn{next: map[string]int{}}
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				key := fmt.Sprintf("customer-%02d", rand.IntN(keys))
				if err := turn.send(context.Background(), f.pool, sig, key); err != nil {
					t.Errorf("sender %d, event %d: %v", s, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()

	require.Eventually(t, func() bool { return f.pending(t) == 0 }, 2*eventually, tick, "every row done")
	require.Equal(t, senders*each, check.firstRuns(), "every event ran for the ordered receiver")
	require.EqualValues(t, senders*each, unordered.Load(), "every event ran for the unordered receiver")
	require.Empty(t, check.overlaps, "events of one key ran at once")
	require.Empty(t, check.outOfTurn, "events of one key ran out of commit order")
	for key, seen := range check.seen {
		for i, n := range seen {
			require.Equal(t, i, n, "key %s saw %v", key, seen)
		}
	}
	require.Greater(t, check.maxBusy, 1, "different keys run in parallel")
	t.Logf("%d events over %d keys; at most %d keys ran at once", senders*each, len(check.seen), check.maxBusy)
}

// TestOrderHoldsWhileRedisLosesItsData streams keyed events through one
// Dispatcher and two Workers while Redis loses its data (FLUSHALL) again
// and again, receivers taking a while so that runs are under way at each
// loss: per key, no two runs at once and none out of turn, and every event
// ran. A keyed row whose task Redis lost waits out its receiver's timeout
// before it goes again, so a run still going on in a worker ends first.
func TestOrderHoldsWhileRedisLosesItsData(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedis(t)
	f := setup(t)
	f.redis = asynq.RedisClientOpt{Addr: srv.Addr}
	sig := signals.Register[step](f.reg, "ledger.step")
	check := newOrderChecker()
	sig.Connect("ordered", func(ctx context.Context, e signals.Event[step]) error {
		check.start(e.Payload)
		defer check.end(e.Payload)
		select {
		case <-time.After(100 * time.Millisecond): // work under way when Redis loses it
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}, signals.Queue(f.queue), signals.OrderBy(func(s step) string { return s.Key }), signals.Timeout(time.Second), fastRetry)
	f.runDispatcher(t, signals.DispatcherConfig{})
	f.runWorker(t)
	f.runWorker(t)

	const events, keys, flushes = 400, 40, 4
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = rc.Close() })
	turn := &sendInTurn{next: map[string]int{}}
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		pace := time.NewTicker(10 * time.Millisecond) // a stream over four seconds, not a burst
		defer pace.Stop()
		for i := range events {
			<-pace.C
			if err := turn.send(context.Background(), f.pool, sig, fmt.Sprintf("customer-%02d", i%keys)); err != nil {
				t.Errorf("event %d: %v", i, err)
				return
			}
		}
	}()
	for i := range flushes {
		require.Eventually(t, func() bool { return check.firstRuns() >= (i+1)*events/(flushes+1) }, eventually, tick)
		require.NoError(t, rc.FlushAll(t.Context()).Err())
	}
	<-sent

	require.Eventually(t, func() bool { return f.pending(t) == 0 }, 2*eventually, tick, "every row done")
	require.Equal(t, events, check.firstRuns(), "every event ran")
	require.Empty(t, check.overlaps, "events of one key ran at once")
	require.Empty(t, check.outOfTurn, "events of one key ran out of commit order")
	reruns := 0
	for _, n := range check.ran {
		reruns += n - 1
	}
	t.Logf("%d events over %d keys, %d FLUSHALLs: %d runs again (at least once)", events, keys, flushes, reruns)
}

// TestAKeyMovesOnOnceItsFailingEventIsDead requires that a failing event
// holds back the later events of its key, and only those, until it is
// dead, and that the key then goes on.
func TestAKeyMovesOnOnceItsFailingEventIsDead(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := signals.Register[step](f.reg, "ledger.step")
	var mu sync.Mutex
	var order []string
	var attempts, stuckWaited atomic.Int64
	sig.Connect("r", func(_ context.Context, e signals.Event[step]) error {
		if e.Payload.Key == "stuck" && e.Payload.N == 0 {
			if attempts.Add(1) < 3 {
				return errors.New("not yet")
			}
			return signals.Permanent(errors.New("gives up"))
		}
		mu.Lock()
		order = append(order, fmt.Sprintf("%s/%d", e.Payload.Key, e.Payload.N))
		if e.Payload.Key == "stuck" {
			stuckWaited.Store(attempts.Load())
		}
		mu.Unlock()
		return nil
	}, signals.Queue(f.queue), signals.OrderBy(func(s step) string { return s.Key }), fastRetry)
	f.runDispatcher(t, signals.DispatcherConfig{})
	f.runWorker(t)

	turn := &sendInTurn{next: map[string]int{}}
	for _, key := range []string{"stuck", "stuck", "free", "free"} {
		require.NoError(t, turn.send(t.Context(), f.pool, sig, key))
	}
	require.Eventually(t, func() bool { return f.pending(t) == 0 }, eventually, tick)

	mu.Lock()
	defer mu.Unlock()
	require.ElementsMatch(t, []string{"free/0", "free/1", "stuck/1"}, order)
	require.EqualValues(t, 3, stuckWaited.Load(), "stuck/1 waited for all of stuck/0's attempts")
	dead, err := f.ledger(t).DeadLetters(t.Context(), signals.DeadFilter{})
	require.NoError(t, err)
	require.Len(t, dead, 1)
}

// TestOrderingKeyAtSendTakesPrecedence requires that a key given with the
// OrderingKey option overrides the receiver's OrderBy, that an empty key
// from OrderBy leaves the event unordered, and that keys too long, with a
// NUL or not UTF-8 are refused with nothing written.
func TestOrderingKeyAtSendTakesPrecedence(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := signals.Register[step](f.reg, "ledger.step")
	got := make(chan string, 2)
	sig.Connect("r", func(_ context.Context, e signals.Event[step]) error {
		got <- e.OrderingKey
		return nil
	}, signals.Queue(f.queue), signals.OrderBy(func(s step) string { return s.Key }))
	e := f.eager(t)

	send(t, e, sig, step{Key: "from-payload"}, signals.OrderingKey("from-send"))
	require.Equal(t, "from-send", <-got)
	send(t, e, sig, step{Key: ""})
	require.Equal(t, "", <-got)

	for key, says := range map[string]string{
		strings.Repeat("k", signals.MaxOrderingKeyBytes+1): "longer than 512",
		"a\x00b":   "holds a NUL byte",
		"\xff\xfe": "not valid UTF-8",
	} {
		tx := f.begin(t)
		_, err := sig.SendReliable(t.Context(), tx, step{}, signals.OrderingKey(key))
		require.ErrorIs(t, err, signals.ErrInvalidEvent)
		require.ErrorContains(t, err, says)
		require.NoError(t, tx.Commit(t.Context()), "the transaction stays usable")
	}
	require.Zero(t, f.pending(t))
}

// TestOrderByMustTakeThePayloadType requires Connect to refuse an OrderBy
// whose func takes another type than the signal's payload.
func TestOrderByMustTakeThePayloadType(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := signals.Register[step](f.reg, "ledger.step")
	err := wiringError(t, func() { sig.Connect("r", nop[step], signals.OrderBy(func(o orderPlaced) string { return o.OrderID })) })
	require.ErrorIs(t, err, signals.ErrInvalidConfig)
	require.ErrorContains(t, err, "func(signals_test.step) string")
	err = wiringError(t, func() { sig.Connect("r", nop[step], signals.OrderBy[step](nil)) })
	require.ErrorIs(t, err, signals.ErrInvalidConfig)
}
