package asynqlayout

import (
	"context"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals/internal/testenv"
)

// TestAsynqLayout checks what layout.go assumes of asynq's private
// storage against the asynq in go.mod: a task's hash and its "state" field
// as a task goes pending, completed and archived, and the error a task's
// archive keeps. When asynq is upgraded, this test says whether repair
// still reads Redis right; it names the version it was written for.
func TestAsynqLayout(t *testing.T) {
	t.Parallel()
	gomod, err := os.ReadFile("../../go.mod")
	require.NoError(t, err)
	require.Regexp(t, regexp.MustCompile(`github.com/hibiken/asynq v0\.26\.0\b`), string(gomod),
		"layout.go was written for asynq v0.26.0: check its key layout and states against the new version, then update this line")

	rc, queue, enqueue := layoutQueue(t)
	states := func(ids ...string) []TaskState {
		t.Helper()
		queues := make([]string, len(ids))
		for i := range ids {
			queues[i] = queue
		}
		got, err := TaskStates(t.Context(), rc, queues, ids)
		require.NoError(t, err)
		return got
	}

	pending, completed, archived := enqueue(), enqueue(), enqueue()
	insp := asynq.NewInspectorFromRedisClient(rc)
	require.NoError(t, insp.ArchiveTask(queue, archived))
	// A server runs completed's task (and pending's, which the test then
	// puts back): the only way to reach "completed" through asynq itself.
	done := make(chan string, 2)
	srv := asynq.NewServerFromRedisClient(rc, asynq.Config{Queues: map[string]int{queue: 1}, Concurrency: 1, LogLevel: asynq.FatalLevel})
	require.NoError(t, srv.Start(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		id, _ := asynq.GetTaskID(ctx)
		done <- id
		return nil
	})))
	for range 2 {
		<-done
	}
	srv.Shutdown()
	_ = pending
	require.Equal(t, []TaskState{StateCompleted, StateCompleted, StateArchived, ""}, states(pending, completed, archived, ulid.Make().String()),
		"completed and archived tasks keep their hash with that state; a task Redis lacks has none")
	fresh := enqueue()
	require.Equal(t, []TaskState{"pending"}, states(fresh), "a queued task's state is neither completed nor archived: repair leaves it alone")
	require.Contains(t, ArchivedError(rc, queue, archived), "archived by asynq", "an archived task without an error reads as such")
}

// TestRequeueStaleTakesBackATaskWhoseWorkerDied checks where asynq keeps a
// running task (its ID in the queue's active list and, 30 s ahead, in its
// lease set), then builds that state by hand for a task whose worker died,
// its lease unrenewed for 40 s, and takes it back: it is pending again,
// asynq runs it, and a task whose lease a live worker renews is left
// alone. After MaxLeaseRequeues takings, a task is left to asynq's
// recoverer.
func TestRequeueStaleTakesBackATaskWhoseWorkerDied(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rc, queue, enqueue := layoutQueue(t)
	ran := make(chan string, 4)
	release := make(chan struct{})
	srv := asynq.NewServerFromRedisClient(rc, asynq.Config{Queues: map[string]int{queue: 1}, Concurrency: 1, LogLevel: asynq.FatalLevel})
	require.NoError(t, srv.Start(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		id, _ := asynq.GetTaskID(ctx)
		ran <- id
		<-release
		return nil
	})))
	t.Cleanup(srv.Shutdown)
	waitRun := func() string {
		t.Helper()
		select {
		case id := <-ran:
			return id
		case <-time.After(10 * time.Second):
			t.Fatal("asynq did not run the task")
			return ""
		}
	}

	running := enqueue()
	require.Equal(t, running, waitRun())
	require.Contains(t, rc.LRange(ctx, QueueKey(queue, "active"), 0, -1).Val(), running, "a running task's ID is in the active list")
	lease, err := rc.ZScore(ctx, QueueKey(queue, "lease"), running).Result()
	require.NoError(t, err, "a running task's ID is in the lease set")
	require.InDelta(t, float64(time.Now().Add(30*time.Second).Unix()), lease, 5, "scored by the Unix second its lease ends, 30 s ahead")
	ends, err := LeaseScores(ctx, rc, []string{queue, queue}, []string{running, ulid.Make().String()})
	require.NoError(t, err)
	require.Equal(t, time.Unix(int64(lease), 0), ends[0])
	require.Less(t, time.Since(ends[0].Add(-LeaseDuration)), HeartbeatInterval+time.Second, "a live worker renewed it within a heartbeat")
	require.True(t, ends[1].IsZero(), "a task the lease set does not hold has no lease")
	ids, err := RequeueStale(ctx, rc, queue, recoverAfter, 10)
	require.NoError(t, err)
	require.Empty(t, ids, "a live worker's lease has not ended: its task is left alone")

	// A task whose worker died 40 s into it, as asynq's dequeue leaves it.
	dead := enqueue()
	require.NoError(t, rc.LRem(ctx, QueueKey(queue, "pending"), 0, dead).Err())
	require.NoError(t, rc.LPush(ctx, QueueKey(queue, "active"), dead).Err())
	require.NoError(t, rc.ZAdd(ctx, QueueKey(queue, "lease"), redis.Z{Member: dead, Score: float64(time.Now().Add(-10 * time.Second).Unix())}).Err())
	require.NoError(t, rc.HSet(ctx, TaskKey(queue, dead), "state", "active").Err())

	ids, err = RequeueStale(ctx, rc, queue, recoverAfter, 10)
	require.NoError(t, err)
	require.Equal(t, []string{dead}, ids)
	info, err := asynq.NewInspectorFromRedisClient(rc).GetTaskInfo(queue, dead)
	require.NoError(t, err)
	require.Equal(t, asynq.TaskStatePending, info.State)
	ids, err = RequeueStale(ctx, rc, queue, recoverAfter, 10)
	require.NoError(t, err)
	require.Empty(t, ids, "taken back once")
	release <- struct{}{}
	require.Equal(t, dead, waitRun(), "asynq runs the task taken back")
	close(release)
	require.Eventually(t, func() bool {
		info, err := asynq.NewInspectorFromRedisClient(rc).GetTaskInfo(queue, dead)
		return err == nil && info.State == asynq.TaskStateCompleted
	}, 10*time.Second, 10*time.Millisecond, "asynq finishes the run")

	// The same task dies MaxLeaseRequeues times: then asynq's recoverer,
	// which counts the lost attempts, gets it.
	for range MaxLeaseRequeues - 1 {
		require.NoError(t, rc.ZAdd(ctx, QueueKey(queue, "lease"), redis.Z{Member: dead, Score: float64(time.Now().Add(-10 * time.Second).Unix())}).Err())
		require.NoError(t, rc.LPush(ctx, QueueKey(queue, "active"), dead).Err())
		ids, err = RequeueStale(ctx, rc, queue, recoverAfter, 10)
		require.NoError(t, err)
		require.Equal(t, []string{dead}, ids)
		require.NoError(t, rc.LRem(ctx, QueueKey(queue, "pending"), 0, dead).Err())
	}
	require.NoError(t, rc.ZAdd(ctx, QueueKey(queue, "lease"), redis.Z{Member: dead, Score: float64(time.Now().Add(-10 * time.Second).Unix())}).Err())
	ids, err = RequeueStale(ctx, rc, queue, recoverAfter, 10)
	require.NoError(t, err)
	require.Empty(t, ids, "after %d takings the task is left to asynq's recoverer", MaxLeaseRequeues)
	require.NoError(t, rc.ZScore(ctx, QueueKey(queue, "lease"), dead).Err(), "still in the lease set, for the recoverer")
}

// recoverAfter is the unrenewed time after which the test takes tasks back.
const recoverAfter = 15 * time.Second

// TestRequeueStaleWaitsTheWholeUnrenewedTime puts tasks in the lease set as
// renewed 14 s and 17 s ago: with 15 s, only the second is taken back,
// whatever fraction of a second the test runs at.
func TestRequeueStaleWaitsTheWholeUnrenewedTime(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rc, queue, enqueue := layoutQueue(t)
	renewed := func(ago time.Duration) string {
		id := enqueue()
		require.NoError(t, rc.LRem(ctx, QueueKey(queue, "pending"), 0, id).Err())
		require.NoError(t, rc.LPush(ctx, QueueKey(queue, "active"), id).Err())
		end := time.Now().Add(LeaseDuration - ago).Unix() // as asynq scores it: rounded down
		require.NoError(t, rc.ZAdd(ctx, QueueKey(queue, "lease"), redis.Z{Member: id, Score: float64(end)}).Err())
		return id
	}
	_, old := renewed(14*time.Second), renewed(17*time.Second)
	ids, err := RequeueStale(ctx, rc, queue, recoverAfter, 10)
	require.NoError(t, err)
	require.Equal(t, []string{old}, ids)
}

// TestLeaseCutoffHoldsAtEveryFraction checks the take-back's cutoff for
// renewals at every tenth of a second: it never takes a lease renewed less
// than the asked time ago, and takes it at most a second later.
func TestLeaseCutoffHoldsAtEveryFraction(t *testing.T) {
	t.Parallel()
	base := time.Unix(1_700_000_000, 0)
	for renewal := base; renewal.Before(base.Add(2 * time.Second)); renewal = renewal.Add(100 * time.Millisecond) {
		score := renewal.Add(LeaseDuration).Unix() // asynq's ZADD score
		for now := renewal; now.Before(renewal.Add(20 * time.Second)); now = now.Add(100 * time.Millisecond) {
			taken, age := score <= leaseCutoff(now, recoverAfter), now.Sub(renewal)
			if taken {
				require.GreaterOrEqual(t, age, recoverAfter, "renewal %v, now %v: never taken back before recoverAfter", renewal, now)
			}
			if age >= recoverAfter+time.Second {
				require.True(t, taken, "renewal %v, now %v: taken back at most a second late", renewal, now)
			}
		}
	}
}

// layoutQueue returns a Redis client, a queue of the test's own, and a
// function that enqueues a task there with asynq, returning its ID.
func layoutQueue(t *testing.T) (redis.UniversalClient, string, func() string) {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr()})
	t.Cleanup(func() { _ = rc.Close() })
	queue := testenv.Queue(t)
	client := asynq.NewClientFromRedisClient(rc)
	return rc, queue, func() string {
		t.Helper()
		id := ulid.Make().String()
		_, err := client.EnqueueContext(t.Context(), asynq.NewTask("layout:test", nil), asynq.TaskID(id), asynq.Queue(queue), asynq.Retention(time.Hour))
		require.NoError(t, err)
		return id
	}
}
