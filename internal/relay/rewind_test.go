package relay

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals/internal/store"
	"github.com/dj-signals/signals/internal/testenv"
)

// TestARedisGoneBackInTimeGetsItsRowsAgain sets the ledger's clock in Redis
// back, as a failover to a lagging replica does while the marker survives,
// and requires the rows enqueued since to be pending again at the next
// check, and none before a rewind.
func TestARedisGoneBackInTimeGetsItsRowsAgain(t *testing.T) {
	t.Parallel()
	r, b := setup(t, testenv.RedisAddr(), 3)
	require.NoError(t, r.prepare(t.Context()))
	require.NoError(t, r.checkClock(t.Context()))
	b.insert(t, b.queue, "email-receipt", "analytics")
	n, err := r.Batch(t.Context())
	require.NoError(t, err)
	require.Equal(t, 2, n)
	require.NoError(t, r.checkClock(t.Context()))
	require.Equal(t, store.Counts{Enqueued: 2}, b.counts(t), "the clock went on: nothing to repair")

	// Back to before this relay's first look at the clock.
	require.NoError(t, b.redis.Set(t.Context(), r.clockKey(), 0, 0).Err())
	require.NoError(t, r.checkClock(t.Context()))
	require.Equal(t, store.Counts{Pending: 2}, b.counts(t), "Redis went back to before the enqueue")
	n, err = r.Batch(t.Context())
	require.NoError(t, err)
	require.Equal(t, 2, n, "and they go out again")
}
