package testenv_test

import (
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals/internal/testenv"
)

func TestStartCluster(t *testing.T) {
	t.Parallel()
	c := testenv.StartCluster(t)
	ctx := t.Context()
	rc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs})
	t.Cleanup(func() { require.NoError(t, rc.Close()) })

	for i := range 30 {
		key := fmt.Sprintf("k%d", i)
		require.NoError(t, rc.Set(ctx, key, "v", 0).Err())
		node := newRedisClient(t, c.NodeOf(t, key).Addr)
		require.Equal(t, "v", node.Get(ctx, key).Val(), "NodeOf names the node holding %s", key)
	}
	for _, addr := range c.Addrs {
		n, err := newRedisClient(t, addr).DBSize(ctx).Result()
		require.NoError(t, err)
		require.Positive(t, n, "every node serves some of the keys")
	}
}
