package store

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals/internal/testenv"
)

// TestAnAckOutlastsARepairThatMovesItsRow acks an in-flight row while a
// repair, uncommitted, moves it back to pending (Redis lost its task), and
// requires the row gone once both are done: otherwise it would be enqueued
// again as a task Redis already ran, and wait for repair to find it so.
func TestAnAckOutlastsARepairThatMovesItsRow(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	row := b.insert(t, q, "order.placed", "r")[0]
	require.NoError(t, q.MarkEnqueued(t.Context(), b.pool, [][16]byte{row.ID}))

	repair, err := b.pool.Begin(t.Context())
	require.NoError(t, err)
	defer repair.Rollback(context.Background()) //nolint:errcheck // committed below
	require.NoError(t, q.Reset(t.Context(), repair, [][16]byte{row.ID}))

	acked := make(chan error, 1)
	go func() { acked <- q.Delete(context.Background(), b.pool, [][16]byte{row.ID}) }()
	testenv.Eventually(t, 10*time.Second, func() bool {
		var waiting int
		err := b.pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'DELETE FROM %inflight%'`).Scan(&waiting)
		return err == nil && waiting > 0
	}, "the ack waits on the repair's lock")
	require.NoError(t, repair.Commit(t.Context()))
	require.NoError(t, <-acked)
	require.Equal(t, Counts{}, b.count(t, q), "the ack removed the row the repair moved")
}
