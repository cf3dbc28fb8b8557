package relay

import (
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals/internal/asynqlayout"
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
	// The position went with the data: the next batch starts over and
	// sends every live row anew, under the same task IDs.
	n, err = r.Batch(t.Context())
	require.NoError(t, err)
	require.Equal(t, 2, n)
	require.Equal(t, store.Counts{Live: 2}, b.counts(t))
	b.requireQueued(t, ids...)
	require.NoError(t, r.checkMarker(t.Context()))
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
	// The relay saw the position cover them only now: nothing is old
	// enough for repair yet, whatever RepairAge.
	r.cfg.RepairAge = 0
	checked, err := r.repair(t.Context())
	require.NoError(t, err)
	require.Zero(t, checked, "no position seen before these rows were enqueued")
	// As if the relay had read the position that covers them an hour ago.
	pos, err := decodePosition(b.redis.Get(t.Context(), r.keys.position).Val())
	require.NoError(t, err)
	r.repairHorizon = horizon{seen: []seenAt{{at: time.Now().Add(-time.Hour), covered: pos.Covered}}}

	alive, lost, completed, archived := ids[0], ids[1], ids[2], ids[3]
	require.NoError(t, b.redis.Del(t.Context(), asynqlayout.TaskKey(b.queue, lost)).Err())
	require.NoError(t, b.redis.HSet(t.Context(), asynqlayout.TaskKey(b.queue, completed), "state", string(asynqlayout.StateCompleted)).Err())
	require.NoError(t, asynq.NewInspectorFromRedisClient(b.redis).ArchiveTask(b.queue, archived))

	checked, err = r.repair(t.Context())
	require.NoError(t, err)
	require.Equal(t, 4, checked)

	rows, err := b.kit.Live(t.Context(), b.db)
	require.NoError(t, err)
	left := map[string]int{}
	for _, row := range rows {
		left[ulid.ULID(row.ID).String()] = row.Enqueues
	}
	require.Equal(t, map[string]int{alive: 0, lost: 1}, left, "the completed row is acked, the archived one buried; the lost one counts its lost enqueue")
	require.Equal(t, store.Counts{Live: 2, Dead: 1}, b.counts(t))
	dead := b.dead(t)
	require.Len(t, dead, 1)
	require.Equal(t, archived, ulid.ULID(dead[0].ID).String())
	require.Equal(t, store.ReasonArchived, dead[0].Reason)
	_, err = asynq.NewInspectorFromRedisClient(b.redis).GetTaskInfo(b.queue, archived)
	require.ErrorIs(t, err, asynq.ErrTaskNotFound, "the ledger holds the dead letter: asynq's archive keeps no copy to read as trouble")

	n, err = r.Batch(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, n, "the lost row is sent again")
	b.requireQueued(t, lost)

	r.cfg.RepairAge = time.Hour
	checked, err = r.repair(t.Context())
	require.NoError(t, err)
	require.Zero(t, checked, "a task found alive, or sent again, is not checked again before RepairAge")
}
