package store

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals/internal/testenv"
)

// ackBehind starts an ack of rows on a connection of its own and returns
// once the ack waits for a lock holder's transaction holds; the returned
// func waits for the ack's result.
func (b *testBundle) ackBehind(t *testing.T, q *Queries, holder pgx.Tx, rows ...Row) func() error {
	t.Helper()
	conn, err := b.pool.Acquire(t.Context())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	acked := make(chan error, 1)
	go func() { acked <- q.Delete(ctx, conn, refs(rows...)) }()
	var result error
	done := false
	wait := func() error {
		if !done {
			result, done = <-acked, true
			conn.Release()
		}
		return result
	}
	t.Cleanup(func() { cancel(); _ = wait() }) // a test that failed midway leaves no goroutine behind

	ackPID, holderPID := conn.Conn().PgConn().PID(), holder.Conn().PgConn().PID()
	testenv.Eventually(t, 10*time.Second, func() bool {
		var waits bool
		err := b.pool.QueryRow(t.Context(), `SELECT $2::int = ANY(pg_blocking_pids($1))`, ackPID, holderPID).Scan(&waits)
		require.NoError(t, err)
		return waits
	}, "the ack waits for the other transaction's lock")
	select {
	case err := <-acked:
		t.Fatalf("the ack returned (%v) before the other transaction ended", err)
	default:
	}
	return wait
}

// TestAnAckOutlastsARepairThatSendsItsRowAgain acks a row while a repair,
// uncommitted, makes it pending again (Redis seemed to have lost its task),
// and requires the row gone once both are done: otherwise it would go out
// again as a task that already ran.
func TestAnAckOutlastsARepairThatSendsItsRowAgain(t *testing.T) {
	t.Parallel()
	for name, repair := range map[string]func(ctx context.Context, q *Queries, tx pgx.Tx, row Row) error{
		"Resend": func(ctx context.Context, q *Queries, tx pgx.Tx, row Row) error {
			return q.Resend(ctx, tx, refs(row))
		},
		"Reissue": func(ctx context.Context, q *Queries, tx pgx.Tx, row Row) error {
			return q.Reissue(ctx, tx, refs(row))
		},
		"ResetKeyed": func(ctx context.Context, q *Queries, tx pgx.Tx, _ Row) error {
			_, err := q.ResetKeyed(ctx, tx, 10)
			return err
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			q, b := setup(t)
			row := b.insertKeyed(t, q, "customer-1")
			b.enqueueKeyed(t, q, 2*time.Hour, row)

			tx := b.begin(t)
			stale, err := q.ClaimStale(t.Context(), tx, "", time.Hour, 10)
			require.NoError(t, err)
			require.Equal(t, refs(row), staleRefs(stale))
			require.NoError(t, repair(t.Context(), q, tx, row))

			wait := b.ackBehind(t, q, tx, row)
			require.NoError(t, tx.Commit(t.Context()))
			require.NoError(t, wait())
			require.Equal(t, Counts{}, b.count(t, q), "the ack removed the row the repair sent back")
		})
	}
}

// TestAnAckOutlastsTheKeyedBatchThatEnqueuedItsRow acks a keyed row whose
// task a worker ran before the relay's batch recorded the enqueue, or
// before it committed it: either way the row must end gone, and its key
// free for the next row.
func TestAnAckOutlastsTheKeyedBatchThatEnqueuedItsRow(t *testing.T) {
	t.Parallel()

	t.Run("AckedBeforeTheEnqueueIsRecorded", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		first, next := b.insertKeyed(t, q, "customer-1"), b.insertKeyed(t, q, "customer-1")
		batch := b.begin(t)
		claimed, err := q.ClaimKeyed(t.Context(), batch, 10, 1<<20, &KeyCursor{})
		require.NoError(t, err)
		require.Equal(t, ids(first), ids(claimed...))

		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		require.NoError(t, q.Delete(ctx, b.pool, refs(first)), "the claim locks the key, not the row")
		require.NoError(t, q.MarkEnqueued(t.Context(), batch, refs(claimed...)))
		require.NoError(t, batch.Commit(t.Context()))

		require.Equal(t, ids(next), ids(b.live(t)...))
		require.Equal(t, ids(next), ids(b.claimKeyed(t, q, 10, 1<<20, &KeyCursor{})...), "the key is free")
	})

	t.Run("AckedBeforeTheBatchCommits", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		first, next := b.insertKeyed(t, q, "customer-1"), b.insertKeyed(t, q, "customer-1")
		batch := b.begin(t)
		claimed, err := q.ClaimKeyed(t.Context(), batch, 10, 1<<20, &KeyCursor{})
		require.NoError(t, err)
		require.NoError(t, q.MarkEnqueued(t.Context(), batch, refs(claimed...)))

		wait := b.ackBehind(t, q, batch, first)
		require.NoError(t, batch.Commit(t.Context()))
		require.NoError(t, wait())

		require.Equal(t, ids(next), ids(b.live(t)...))
		require.Equal(t, ids(next), ids(b.claimKeyed(t, q, 10, 1<<20, &KeyCursor{})...), "the key is free")
	})
}
