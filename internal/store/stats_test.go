package store

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// stats reads Stats in a transaction of its own.
func (b *testBundle) stats(t *testing.T, q *Queries) ([]ReceiverStats, []string) {
	t.Helper()
	tx, err := b.pool.Begin(t.Context())
	require.NoError(t, err)
	defer tx.Rollback(context.Background()) //nolint:errcheck // read only
	rows, queues, err := q.Stats(t.Context(), tx)
	require.NoError(t, err)
	return rows, queues
}

func TestStatsAddsUpAReceiverWhoseRowsAddressTwoQueues(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	// The receiver moved from queue "old" to "new" between sends: its rows
	// address both, pending and in flight.
	var rows []Row
	for _, queue := range []string{"old", "new", "old", "new"} {
		e, tgt := event("order.placed"), target("email")
		tgt.Queue = queue
		require.NoError(t, q.Insert(t.Context(), b.pool, e, []Target{tgt}))
		rows = append(rows, rowOf(e, tgt))
	}
	require.NoError(t, q.MarkEnqueued(t.Context(), b.pool, ids(rows[0])))
	require.NoError(t, q.MarkEnqueued(t.Context(), b.pool, ids(rows[1])))

	stats, queues := b.stats(t, q)
	require.ElementsMatch(t, []string{"old", "new"}, queues, "each live row's queue, once")
	require.Len(t, stats, 1, "one entry per signal and receiver, whatever the queues")
	s := stats[0]
	require.Equal(t, "email", s.Receiver)
	require.EqualValues(t, 2, s.Pending)
	require.EqualValues(t, 2, s.InFlight)
	require.Equal(t, rows[2].ID, *s.OldestPending, "the oldest pending row over both queues")
	require.NotNil(t, s.OldestEnqueued)
}
