package testenv_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals/internal/testenv"
)

func TestQueue(t *testing.T) {
	t.Parallel()
	rc := newRedisClient(t, testenv.RedisAddr())
	ctx := t.Context()
	require.NoError(t, rc.Ping(ctx).Err(), "Redis at %s unreachable (set %s)", testenv.RedisAddr(), testenv.RedisAddrEnv)

	// Another test's queue, whose keys must survive this test's cleanup.
	other := testenv.Queue(t)
	otherKey := "asynq:{" + other + "}:pending"
	require.NoError(t, rc.LPush(ctx, otherKey, "x").Err())
	require.NoError(t, rc.SAdd(ctx, "asynq:queues", other).Err())

	var q string
	var keys []string
	t.Run("test", func(t *testing.T) {
		q = testenv.Queue(t)
		require.Regexp(t, `^q_[a-z0-9]{26}$`, q)
		require.NotEqual(t, other, q)
		// More keys than one SCAN step returns, so cleanup has to iterate.
		var pairs []any
		for i := range 2500 {
			keys = append(keys, fmt.Sprintf("asynq:{%s}:t:%d", q, i))
			pairs = append(pairs, keys[i], "v")
		}
		require.NoError(t, rc.MSet(ctx, pairs...).Err())
		require.NoError(t, rc.SAdd(ctx, "asynq:queues", q).Err())
	})
	deleted, err := rc.Exists(ctx, keys...).Result()
	require.NoError(t, err)
	require.Zero(t, deleted, "the queue's keys are deleted when its test ends")
	listed, err := rc.SMIsMember(ctx, "asynq:queues", q, other).Result()
	require.NoError(t, err)
	require.Equal(t, []bool{false, true}, listed, "only the ended test's queue is no longer listed")
	kept, err := rc.Exists(ctx, otherKey).Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, kept, "other queues keep their keys")
}
