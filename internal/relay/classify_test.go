package relay

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals/internal/testenv"
)

// TestClassifyReadsRealRedisErrors enqueues against real servers in each
// failure state and checks whose fault classify says it is: the server's
// state (an outage, the relay backs off) or the row's (it alone waits).
func TestClassifyReadsRealRedisErrors(t *testing.T) {
	t.Parallel()
	task := func(payload []byte) *asynq.Task { return asynq.NewTask("signals:a.b:r", payload) }
	enqueue := func(t *testing.T, rc redis.UniversalClient, queue string, payload []byte) error {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		_, err := asynq.NewClientFromRedisClient(rc).EnqueueContext(ctx, task(payload), asynq.Queue(queue))
		return err
	}
	client := func(t *testing.T, addr string) *redis.Client {
		rc := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second})
		t.Cleanup(func() { _ = rc.Close() })
		return rc
	}

	t.Run("out of memory under noeviction is an outage", func(t *testing.T) {
		t.Parallel()
		srv := testenv.StartRedis(t)
		rc := client(t, srv.Addr)
		require.NoError(t, rc.ConfigSet(t.Context(), "maxmemory-policy", "noeviction").Err())
		require.NoError(t, rc.ConfigSet(t.Context(), "maxmemory", "1").Err())
		err := enqueue(t, rc, "q", []byte("{}"))
		require.ErrorContains(t, err, "OOM")
		require.Equal(t, outage, classify(err))
	})
	t.Run("WRONGTYPE on a queue's key fails that row only", func(t *testing.T) {
		t.Parallel()
		srv := testenv.StartRedis(t)
		rc := client(t, srv.Addr)
		require.NoError(t, rc.Set(t.Context(), "asynq:{broken}:pending", "not a list", 0).Err())
		err := enqueue(t, rc, "broken", []byte("{}"))
		require.ErrorContains(t, err, "WRONGTYPE")
		require.Equal(t, rowError, classify(err))
		require.NoError(t, enqueue(t, rc, "fine", []byte("{}")), "another queue still takes tasks")
	})
	t.Run("an argument beyond proto-max-bulk-len fails that row only", func(t *testing.T) {
		t.Parallel()
		srv := testenv.StartRedis(t)
		rc := client(t, srv.Addr)
		require.NoError(t, rc.ConfigSet(t.Context(), "proto-max-bulk-len", "1048576").Err())
		err := enqueue(t, rc, "q", []byte(strings.Repeat("x", 2<<20)))
		require.Error(t, err)
		require.Equal(t, rowError, classify(err), "error: %v", err)
		require.NoError(t, enqueue(t, rc, "q", []byte("{}")), "a small task still goes through")
	})
	t.Run("connection refused is an outage", func(t *testing.T) {
		t.Parallel()
		srv := testenv.StartRedis(t)
		rc := client(t, srv.Addr)
		srv.Stop(t)
		err := enqueue(t, rc, "q", []byte("{}"))
		require.Error(t, err)
		require.Equal(t, outage, classify(err), "error: %v", err)
	})
	t.Run("a partition that drops every packet is an outage", func(t *testing.T) {
		t.Parallel()
		srv := testenv.StartRedis(t)
		proxy := testenv.StartProxy(t, srv.Addr)
		rc := client(t, proxy.Addr)
		require.NoError(t, rc.Ping(t.Context()).Err())
		proxy.Block()
		err := enqueue(t, rc, "q", []byte("{}"))
		require.Error(t, err)
		require.Equal(t, outage, classify(err), "error: %v", err)
	})
}

func TestClassifyWithoutAServer(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		err  error
		want kind
	}{
		{nil, enqueued},
		{asynq.ErrTaskIDConflict, enqueued},
		{errInvalidRow, invalid},
		{context.DeadlineExceeded, outage},
		{redis.ErrClosed, outage},
		{errString("redis eval error: LOADING Redis is loading the dataset in memory"), outage},
		{errString("redis eval error: READONLY You can't write against a read only replica."), outage},
		{errString("redis eval error: BUSY Redis is busy running a script."), outage},
		{errString("redis eval error: ERR something about this one task"), rowError},
	} {
		require.Equal(t, c.want, classify(c.err), "%v", c.err)
	}
}

type errString string

func (e errString) Error() string { return string(e) }
