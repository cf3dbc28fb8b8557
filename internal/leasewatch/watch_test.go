package leasewatch

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dj-signals/signals/internal/asynqlayout"
	"github.com/dj-signals/signals/internal/testenv"
	"github.com/dj-signals/signals/internal/throttle"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// after is how long the tests' watches let a lease go unrenewed.
const after = 3 * time.Second

// setup makes a Watch on its own Redis server, which the test may stop, and
// runs it if run; it returns the Watch, the server, its logs and a function
// that scores a task's lease in a queue's lease set as renewed ago.
func setup(t *testing.T, run bool) (*Watch, *testenv.Redis, *testenv.Logs, func(queue, id string, ago time.Duration)) {
	t.Helper()
	server := testenv.StartRedis(t)
	rc := redis.NewClient(&redis.Options{Addr: server.Addr, MaxRetries: -1})
	t.Cleanup(func() { _ = rc.Close() })
	logs := &testenv.Logs{}
	w := New(rc, after, throttle.New(slog.New(logs), time.Minute))
	if run {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			w.Run(ctx)
		}()
		t.Cleanup(func() {
			cancel()
			<-done
		})
	}
	renewed := func(queue, id string, ago time.Duration) {
		end := time.Now().Add(asynqlayout.LeaseDuration - ago).Unix()
		require.NoError(t, rc.ZAdd(t.Context(), asynqlayout.QueueKey(queue, "lease"), redis.Z{Member: id, Score: float64(end)}).Err())
	}
	return w, server, logs, renewed
}

// TestWatchStopsARunWhoseLeaseGoesUnrenewed tracks three runs: one whose
// lease is renewed, one whose lease stopped being renewed, one the lease
// set does not hold. Only the second is stopped, with cause ErrLost, and
// the stop is logged. Then the first one's process stalls past `after`:
// it is stopped too. The test makes the watch's checks itself.
func TestWatchStopsARunWhoseLeaseGoesUnrenewed(t *testing.T) {
	t.Parallel()
	w, _, logs, renewed := setup(t, false)
	queue := "q"
	live, stale, gone := ulid.Make().String(), ulid.Make().String(), ulid.Make().String()
	renewed(queue, live, 0)
	renewed(queue, stale, 0)
	liveCtx, liveDone := w.Track(t.Context(), queue, live)
	defer liveDone()
	staleCtx, staleDone := w.Track(t.Context(), queue, stale)
	defer staleDone()
	goneCtx, goneDone := w.Track(t.Context(), queue, gone)
	defer goneDone()

	w.check(t.Context())
	for _, ctx := range []context.Context{liveCtx, staleCtx, goneCtx} {
		require.NoError(t, ctx.Err(), "every lease was renewed just now")
	}
	renewed(queue, stale, after+time.Second) // its worker's heartbeat stopped a while ago
	w.check(t.Context())
	require.ErrorIs(t, context.Cause(staleCtx), ErrLost, "the run whose lease went unrenewed is stopped")
	require.NoError(t, liveCtx.Err(), "a run whose lease is renewed goes on")
	require.NoError(t, goneCtx.Err(), "a run the lease set does not hold is nobody's to take back: it goes on")

	// A process that stalled past `after` since its last check: by now its
	// Redis holds a newer run's lease for the task, renewed by that run's
	// worker; the lease as last read here decides.
	renewed(queue, live, 0)
	w.mu.Lock()
	for r := range w.runs {
		if r.taskID == live {
			r.end = time.Now().Add(asynqlayout.LeaseDuration - after - time.Second)
		}
	}
	w.mu.Unlock()
	w.check(t.Context())
	require.ErrorIs(t, context.Cause(liveCtx), ErrLost, "a run whose lease, as last read, went unrenewed is stopped, whatever Redis holds now")
	require.Len(t, logs.Find("signals: stopped runs whose task lease this worker could not renew; the Dispatcher puts them back in their queue, to run again"), 1)
}

// TestWatchStopsRunsWhenRedisIsGone runs a watch and stops its Redis: the
// runs' leases, as last read, go unrenewed, and after `after` the runs
// stop.
func TestWatchStopsRunsWhenRedisIsGone(t *testing.T) {
	t.Parallel()
	w, server, _, renewed := setup(t, true)
	id := ulid.Make().String()
	renewed("q", id, 0)
	start := time.Now()
	ctx, done := w.Track(t.Context(), "q", id)
	defer done()
	server.Stop(t)
	testenv.Eventually(t, 3*after, func() bool { return ctx.Err() != nil }, "the run stops once its lease, as last read, went unrenewed for after")
	require.ErrorIs(t, context.Cause(ctx), ErrLost)
	require.GreaterOrEqual(t, time.Since(start), after-time.Second, "not before its lease, as last read, went unrenewed that long")
}

// TestTrackReleasesTheRun checks that a run that returned is no longer
// watched and its ctx is done, with no cause of the watch's.
func TestTrackReleasesTheRun(t *testing.T) {
	t.Parallel()
	w, _, _, _ := setup(t, false)
	ctx, done := w.Track(t.Context(), "q", ulid.Make().String())
	done()
	require.Error(t, ctx.Err())
	require.NotErrorIs(t, context.Cause(ctx), ErrLost)
	w.mu.Lock()
	defer w.mu.Unlock()
	require.Empty(t, w.runs)
}
