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
const after = 5 * time.Second

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

// TestWatchStopsARunOfAStalledProcess tracks two runs: one whose lease is
// renewed, one the lease set does not hold; checks leave both alone. Then
// the first one's process stalls past `after` (its last check that long
// ago): the next check stops it, with cause ErrLost, though Redis holds a
// fresh lease for its task (another run's, by now), and logs it. Its
// release waits while the task runs elsewhere. The test makes the watch's
// checks itself.
func TestWatchStopsARunOfAStalledProcess(t *testing.T) {
	t.Parallel()
	w, _, logs, renewed := setup(t, false)
	queue := "q"
	stalled, gone := ulid.Make().String(), ulid.Make().String()
	renewed(queue, stalled, 0)
	stalledCtx, stalledDone := w.Track(t.Context(), queue, stalled)
	goneCtx, goneDone := w.Track(t.Context(), queue, gone)
	defer goneDone()
	for range 2 {
		w.check(t.Context())
	}
	require.NoError(t, stalledCtx.Err(), "a run whose lease Redis holds goes on")
	require.NoError(t, goneCtx.Err(), "a run the lease set does not hold is nobody's to take back: it goes on")

	w.mu.Lock()
	for r := range w.runs {
		if r.taskID == stalled {
			r.seen.Store(time.Now().Add(-after).UnixNano()) // its last check, before the stall
		}
	}
	w.mu.Unlock()
	renewed(queue, stalled, 0)
	w.check(t.Context())
	require.ErrorIs(t, context.Cause(stalledCtx), ErrLost, "stopped, whatever Redis holds now")
	require.Len(t, logs.Find("signals: stopped a run whose task lease this worker could not renew; the Dispatcher puts it back in its queue, to run again"), 1)

	// Another worker runs the task now: the stopped run's release waits
	// until that run leaves the active list, so that asynq writes nothing of
	// the stopped run over it.
	active := asynqlayout.QueueKey(queue, "active")
	require.NoError(t, w.rc.LPush(t.Context(), active, stalled).Err())
	released := make(chan struct{})
	go func() {
		defer close(released)
		stalledDone()
	}()
	isReleased := func() bool {
		select {
		case <-released:
			return true
		default:
			return false
		}
	}
	require.Never(t, isReleased, 3*every/4, every/20, "released while the task runs elsewhere")
	require.NoError(t, w.rc.LRem(t.Context(), active, 0, stalled).Err())
	testenv.Eventually(t, 5*time.Second, isReleased, "released once the task left the active list")
	require.NoError(t, goneCtx.Err())
}

// TestWatchStopsRunsWhenRedisIsGone runs a watch and stops its Redis: after
// `after` without a read that found the run's lease, the run stops.
func TestWatchStopsRunsWhenRedisIsGone(t *testing.T) {
	t.Parallel()
	w, server, _, renewed := setup(t, true)
	id := ulid.Make().String()
	renewed("q", id, 0)
	start := time.Now()
	asynqCtx, giveUp := context.WithCancel(t.Context())
	ctx, done := w.Track(asynqCtx, "q", id)
	server.Stop(t)
	testenv.Eventually(t, 3*after, func() bool { return ctx.Err() != nil }, "the run stops once Redis was out of reach for after")
	require.ErrorIs(t, context.Cause(ctx), ErrLost)
	require.GreaterOrEqual(t, time.Since(start), after, "not before")
	giveUp() // asynq gave up on the run: its release need not wait for the lease's end
	done()
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

// TestWatchJudgesNoRunAfterRun checks that once Run has returned (its
// worker shut down), a run still going, tracked before or after, is not
// stopped for the reads that no longer happen.
func TestWatchJudgesNoRunAfterRun(t *testing.T) {
	t.Parallel()
	w, _, _, renewed := setup(t, false)
	early, late := ulid.Make().String(), ulid.Make().String()
	renewed("q", early, 0)
	beforeCtx, beforeDone := w.Track(t.Context(), "q", early)
	defer beforeDone()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	w.Run(ctx) // returns at once: the worker shut down
	afterCtx, afterDone := w.Track(t.Context(), "q", late)
	defer afterDone()
	require.Never(t, func() bool { return beforeCtx.Err() != nil || afterCtx.Err() != nil },
		after+time.Second, every/4, "no run is stopped once the watch has stopped")
}
