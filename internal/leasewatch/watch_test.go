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

// TestWatchStopsARunWhoseLeaseGoesUnrenewed tracks three runs: one whose
// lease is renewed, one whose lease stopped being renewed, one the lease
// set does not hold. Only the second is stopped, with cause ErrLost, and
// the stop is logged; its release waits while the task runs elsewhere. Then
// the first one's process stalls past `after`: it is stopped too. The test
// makes the watch's checks itself.
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
	goneCtx, goneDone := w.Track(t.Context(), queue, gone)
	defer goneDone()

	w.check(t.Context())
	for _, ctx := range []context.Context{liveCtx, staleCtx, goneCtx} {
		require.NoError(t, ctx.Err(), "every lease was renewed just now")
	}
	// Its worker's heartbeat stopped 29 s ago: the lease ends within a second.
	renewed(queue, stale, asynqlayout.LeaseDuration-time.Second)
	w.check(t.Context())
	testenv.Eventually(t, 5*time.Second, func() bool { return staleCtx.Err() != nil }, "the run whose lease went unrenewed is stopped")
	require.ErrorIs(t, context.Cause(staleCtx), ErrLost)
	// Another worker runs the task now: the stopped run's release waits
	// until that run leaves the active list, so that asynq writes nothing of
	// the stopped run over it.
	active := asynqlayout.QueueKey(queue, "active")
	require.NoError(t, w.rc.LPush(t.Context(), active, stale).Err())
	released := make(chan struct{})
	go func() {
		defer close(released)
		staleDone()
	}()
	require.Never(t, func() bool {
		select {
		case <-released:
			return true
		default:
			return false
		}
	}, 3*every/4, every/20, "released while the task runs elsewhere")
	require.NoError(t, w.rc.LRem(t.Context(), active, 0, stale).Err())
	testenv.Eventually(t, 5*time.Second, func() bool {
		select {
		case <-released:
			return true
		default:
			return false
		}
	}, "released once the task left the active list")
	require.NoError(t, liveCtx.Err(), "a run whose lease is renewed goes on")
	require.NoError(t, goneCtx.Err(), "a run the lease set does not hold is nobody's to take back: it goes on")

	// A process that stalled past `after` since its last check, its stop
	// not fired yet: by now its Redis holds a newer run's lease for the
	// task, renewed by that run's worker; the lease as last read decides.
	renewed(queue, live, 0)
	w.mu.Lock()
	for r := range w.runs {
		if r.taskID == live {
			r.end.Store(time.Now().Add(time.Second).Unix())
		}
	}
	w.mu.Unlock()
	w.check(t.Context())
	require.ErrorIs(t, context.Cause(liveCtx), ErrLost, "a run whose lease, as last read, went unrenewed is stopped, whatever Redis holds now")
	require.Len(t, logs.Find("signals: stopped a run whose task lease this worker could not renew; the Dispatcher puts it back in its queue, to run again"), 1,
		"one line per window")
}

// TestWatchStopsRunsWhenRedisIsGone runs a watch and stops its Redis: the
// runs' leases, as last read, go unrenewed, and after `after` the runs
// stop, whatever the reads that fail meanwhile.
func TestWatchStopsRunsWhenRedisIsGone(t *testing.T) {
	t.Parallel()
	w, server, _, renewed := setup(t, true)
	id := ulid.Make().String()
	renewed("q", id, 0)
	start := time.Now()
	asynqCtx, giveUp := context.WithCancel(t.Context())
	ctx, done := w.Track(asynqCtx, "q", id)
	server.Stop(t)
	testenv.Eventually(t, 3*after, func() bool { return ctx.Err() != nil }, "the run stops once its lease, as last read, went unrenewed for after")
	require.ErrorIs(t, context.Cause(ctx), ErrLost)
	require.GreaterOrEqual(t, time.Since(start), after-2*time.Second, "not before its lease, as last read, may have gone unrenewed that long")
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
