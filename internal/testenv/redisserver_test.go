package testenv_test

import (
	"net"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals/internal/testenv"
)

func TestStartRedis(t *testing.T) {
	t.Parallel()

	t.Run("restarts empty on the same address", func(t *testing.T) {
		t.Parallel()
		r := testenv.StartRedis(t)
		addr := r.Addr
		require.NoError(t, newRedisClient(t, addr).Set(t.Context(), "k", "v", 0).Err())

		r.Stop(t)
		require.Error(t, newRedisClient(t, addr).Ping(t.Context()).Err(), "a stopped server does not answer")
		r.Stop(t) // stopping a stopped server does nothing

		r.Start(t)
		require.Equal(t, addr, r.Addr)
		err := newRedisClient(t, addr).Get(t.Context(), "k").Err()
		require.ErrorIs(t, err, redis.Nil, "data does not survive a restart: persistence is off")
	})

	t.Run("restart fails when the port was taken", func(t *testing.T) {
		t.Parallel()
		r := testenv.StartRedis(t)
		r.Stop(t)
		ln, err := net.Listen("tcp", r.Addr)
		require.NoError(t, err)
		defer ln.Close()

		f := &fakeTB{TB: t}
		r.Start(f)
		require.Contains(t, f.failed, "exited early")
		require.Contains(t, f.failed, r.Addr)
	})
}

func TestStartRedisWithoutRedisServer(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	f := &fakeTB{TB: t}
	require.Nil(t, testenv.StartRedis(f))
	require.Contains(t, f.failed, "install the redis-server package", "the message says how to fix it")
}
