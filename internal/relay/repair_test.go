package relay

import (
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals/internal/store"
	"github.com/dj-signals/signals/internal/testenv"
)

func TestBatchSendsAgainWhatAFlushedRedisLost(t *testing.T) {
	t.Parallel()
	server := testenv.StartRedis(t)
	r, b := setup(t, server.Addr, 3)
	ids := b.insert(t, b.queue, "a", "b")
	n, err := r.Batch(t.Context())
	require.NoError(t, err)
	require.Equal(t, 2, n)
	b.requireQueued(t, ids...)

	require.NoError(t, b.redis.FlushAll(t.Context()).Err())
	// The next batch finds the ledger's marker gone, makes every enqueued
	// row pending again and sends them anew, under the same task IDs.
	n, err = r.Batch(t.Context())
	require.NoError(t, err)
	require.Equal(t, 2, n)
	require.Equal(t, store.Counts{Enqueued: 2}, b.counts(t))
	b.requireQueued(t, ids...)
	queues, err := asynq.NewInspectorFromRedisClient(b.redis).Queues()
	require.NoError(t, err)
	require.Contains(t, queues, b.queue, "registered again, so asynqmon lists it")
}

func TestRepairReadsEachTasksStateInRedis(t *testing.T) {
	t.Parallel()
	r, b := setup(t, testenv.RedisAddr(), 3)
	ids := b.insert(t, b.queue, "alive", "lost", "completed", "archived")
	n, err := r.Batch(t.Context())
	require.NoError(t, err)
	require.Equal(t, 4, n)

	alive, lost, completed, archived := ids[0], ids[1], ids[2], ids[3]
	require.NoError(t, b.redis.Del(t.Context(), taskKey(b.queue, lost)).Err())
	require.NoError(t, b.redis.HSet(t.Context(), taskKey(b.queue, completed), "state", stateCompleted).Err())
	require.NoError(t, asynq.NewInspectorFromRedisClient(b.redis).ArchiveTask(b.queue, archived))

	r.cfg.RepairAge = 0
	checked, err := r.repair(t.Context())
	require.NoError(t, err)
	require.Equal(t, 4, checked)

	rows, err := b.queries.Pending(t.Context(), b.db)
	require.NoError(t, err)
	left := map[string]bool{}
	for _, row := range rows {
		left[ulid.ULID(row.ID).String()] = row.Enqueues > 0
	}
	require.Equal(t, map[string]bool{alive: true, lost: true}, left, "the completed row is acked, the archived one buried")
	require.Equal(t, map[string]int{}, b.pending(t)) // helper lists only never-enqueued rows
	require.Equal(t, store.Counts{Pending: 1, Enqueued: 1, Dead: 1}, b.counts(t), "the lost row is pending again")
	dead := b.dead(t)
	require.Len(t, dead, 1)
	require.Equal(t, archived, ulid.ULID(dead[0].ID).String())
	require.Equal(t, store.ReasonArchived, dead[0].Reason)

	n, err = r.Batch(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, n, "the lost row is sent again")
	b.requireQueued(t, lost)

	r.cfg.RepairAge = time.Hour
	checked, err = r.repair(t.Context())
	require.NoError(t, err)
	require.Zero(t, checked, "a task found alive, or sent again, is not checked again before RepairAge")
}
