package relay

import (
	"testing"

	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals/internal/store"
	"github.com/dj-signals/signals/internal/testenv"
)

// TestARedisGoneBackInTimeGetsItsRowsAgain sets the ledger's clock and
// position in Redis back, as a failover to a lagging replica does while
// the marker survives, and requires the rows enqueued since to go out
// again: the rows without a key from the older position, the keyed ones
// once the clock tells, after their timeout.
func TestARedisGoneBackInTimeGetsItsRowsAgain(t *testing.T) {
	t.Parallel()
	r, b := setup(t, testenv.RedisAddr(), 3)
	require.NoError(t, r.prepare(t.Context()))
	require.NoError(t, r.checkClock(t.Context()))
	old, err := b.redis.Get(t.Context(), r.keys.position).Result()
	require.Error(t, err, "no position yet")
	require.Empty(t, old)

	plain := b.insert(t, b.queue, "email-receipt", "analytics")
	keyed := b.insertKeyed(t, "customer-1", "ordered")
	n, err := r.Batch(t.Context())
	require.NoError(t, err)
	require.Equal(t, 3, n)
	require.NoError(t, r.checkClock(t.Context()))
	require.ElementsMatch(t, append(plain, keyed), b.queued(t))

	// Back to before this relay's first look: the tasks went with it.
	require.NoError(t, b.redis.Del(t.Context(), "asynq:{"+b.queue+"}:pending", r.keys.position).Err())
	require.NoError(t, b.redis.Set(t.Context(), r.clockKey(), 0, 0).Err())
	require.NoError(t, r.checkClock(t.Context()))
	n, err = r.Batch(t.Context())
	require.NoError(t, err)
	require.Equal(t, 2, n, "the rows without a key go out again from the older position")

	rows, err := b.kit.Live(t.Context(), b.db)
	require.NoError(t, err)
	for _, row := range rows {
		if row.OrderingKey != nil {
			require.Equal(t, 1, row.Enqueues, "the keyed row counts its lost enqueue")
			require.NoError(t, b.queries.RetryLater(t.Context(), b.db, []store.Failure{{Ref: row.Ref(), Error: "test: due now"}}))
		}
	}
	n, err = r.Batch(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, n, "the keyed row goes once its timeout is over (made due at once here)")
}

// insertKeyed writes one row with an ordering key for receiver, and returns
// its task ID.
func (b *testBundle) insertKeyed(t *testing.T, key, receiver string) string {
	t.Helper()
	id := ulid.Make()
	task := ulid.Make()
	e := store.Event{ID: id, CorrelationID: id, Signal: "order.placed", Payload: []byte(`{"order_id":"o-1"}`)}
	tgt := store.Target{TaskID: task, Receiver: receiver, Queue: b.queue, MaxRetry: 20, TimeoutMS: 60_000, OrderingKey: key}
	require.NoError(t, b.queries.Insert(t.Context(), b.db, e, []store.Target{tgt}))
	return task.String()
}
