package testenv_test

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals/internal/testenv"
)

func TestStartSentinels(t *testing.T) {
	t.Parallel()
	s := testenv.StartSentinels(t)
	ctx := t.Context()
	addr, err := s.MasterAddr(ctx)
	require.NoError(t, err)
	require.Equal(t, s.Primary.Addr, addr)

	rc := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: s.MasterName, SentinelAddrs: s.Addrs})
	t.Cleanup(func() { require.NoError(t, rc.Close()) })
	require.NoError(t, rc.Set(ctx, "kept", "v", 0).Err())
	replica := newRedisClient(t, s.Replica.Addr)
	testenv.Eventually(t, 10*time.Second, func() bool { return replica.Get(ctx, "kept").Val() == "v" }, "the replica replicates")

	s.CutReplication(t)
	require.NoError(t, rc.Set(ctx, "lost", "v", 0).Err())
	s.Primary.Stop(t)
	testenv.Eventually(t, 20*time.Second, func() bool {
		addr, err := s.MasterAddr(ctx)
		return err == nil && addr == s.Replica.Addr
	}, "the sentinels promote the replica")
	testenv.Eventually(t, 10*time.Second, func() bool { return rc.Set(ctx, "after", "v", 0).Err() == nil }, "the failover client follows")
	require.Equal(t, "v", rc.Get(ctx, "kept").Val())
	require.ErrorIs(t, rc.Get(ctx, "lost").Err(), redis.Nil, "what the primary took after the cut is lost")
}
