package signals_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
)

// TestPruneInboxRemovesOnlyRowsOlderThanAsked records three deliveries
// with Once, backdates two of them, and prunes: the two old rows go, the
// recent one stays, and a delivery whose row stayed is still skipped.
func TestPruneInboxRemovesOnlyRowsOlderThanAsked(t *testing.T) {
	t.Parallel()
	o := setupOnce(t)
	events := []signals.Event[orderPlaced]{
		o.sig.NewEvent("record-receipt", orderPlaced{OrderID: "old-1"}),
		o.sig.NewEvent("record-receipt", orderPlaced{OrderID: "old-2"}),
		o.sig.NewEvent("record-receipt", orderPlaced{OrderID: "recent"}),
	}
	for _, e := range events {
		require.NoError(t, pgx.BeginFunc(t.Context(), o.f.pool, func(tx pgx.Tx) error {
			first, err := signals.Once(t.Context(), tx, e)
			require.True(t, first)
			return err
		}))
	}
	inbox := pgx.Identifier{o.f.schema, "inbox"}.Sanitize()
	_, err := o.f.pool.Exec(t.Context(), `UPDATE `+inbox+` SET processed_at = now() - interval '31 days' WHERE task_id = ANY($1)`,
		[][16]byte{events[0].TaskID, events[1].TaskID})
	require.NoError(t, err)

	ledger := o.f.ledger(t)
	_, err = ledger.PruneInbox(t.Context(), 0)
	require.ErrorIs(t, err, signals.ErrInvalidConfig, "an age of zero would empty the inbox")
	n, err := ledger.PruneInbox(t.Context(), 30*24*time.Hour)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	require.Equal(t, 1, o.inbox(t), "the recent row stays")

	require.NoError(t, pgx.BeginFunc(t.Context(), o.f.pool, func(tx pgx.Tx) error {
		first, err := signals.Once(context.Background(), tx, events[2])
		require.False(t, first, "its redelivery is still skipped")
		return err
	}))
}

func TestNewLedgerNeedsARegistryAndADatabase(t *testing.T) {
	t.Parallel()
	f := setup(t)
	_, err := signals.NewLedger(nil, f.pool, nil)
	require.ErrorIs(t, err, signals.ErrInvalidConfig)
	_, err = signals.NewLedger(f.reg, nil, nil)
	require.ErrorIs(t, err, signals.ErrInvalidConfig)
	l, err := signals.NewLedger(f.reg, f.pool, nil)
	require.NoError(t, err)
	st, err := l.Stats(t.Context())
	require.NoError(t, err, "without Redis, Stats reads PostgreSQL alone")
	require.Empty(t, st.Queues)
}
