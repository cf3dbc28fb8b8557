package relay

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals/internal/asynqlayout"
	"github.com/dj-signals/signals/internal/testenv"
)

// TestRecovererTakesBackTheTasksOfADeadWorker runs a Recoverer alone over
// a queue holding, as asynq's dequeue leaves them, a task whose lease was
// renewed 25 s ago (its worker died) and one renewed just now: within its
// second, the first is pending again and the second left running.
func TestRecovererTakesBackTheTasksOfADeadWorker(t *testing.T) {
	t.Parallel()
	r, b := setup(t, testenv.RedisAddr(), 3)
	client := asynq.NewClientFromRedisClient(b.redis)
	running := func(renewedAgo time.Duration) string {
		id := ulid.Make().String()
		_, err := client.EnqueueContext(t.Context(), asynq.NewTask("recoverer:test", nil), asynq.TaskID(id), asynq.Queue(b.queue))
		require.NoError(t, err)
		require.NoError(t, b.redis.LRem(t.Context(), asynqlayout.QueueKey(b.queue, "pending"), 0, id).Err())
		require.NoError(t, b.redis.LPush(t.Context(), asynqlayout.QueueKey(b.queue, "active"), id).Err())
		end := time.Now().Add(asynqlayout.LeaseDuration - renewedAgo).Unix()
		require.NoError(t, b.redis.ZAdd(t.Context(), asynqlayout.QueueKey(b.queue, "lease"), redis.Z{Member: id, Score: float64(end)}).Err())
		require.NoError(t, b.redis.HSet(t.Context(), asynqlayout.TaskKey(b.queue, id), "state", "active").Err())
		return id
	}
	dead, live := running(25*time.Second), running(0)

	cfg := r.cfg
	cfg.RecoverAfter = 20 * time.Second
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		NewRecoverer(b.redis, func() []string { return []string{b.queue} }, cfg).Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	testenv.Eventually(t, 5*time.Second, func() bool {
		return b.redis.LPos(t.Context(), asynqlayout.QueueKey(b.queue, "pending"), dead, redis.LPosArgs{}).Err() == nil
	}, "the dead worker's task is pending again")
	require.Equal(t, []string{live}, b.redis.LRange(t.Context(), asynqlayout.QueueKey(b.queue, "active"), 0, -1).Val(), "the live worker's task still runs")
}
