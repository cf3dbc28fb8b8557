package store

import (
	"testing"

	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"
)

func TestEventRowsCascadeRowsAndEventOf(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	rows := b.insert(t, q, "order.placed", "a", "b")
	root := rows[0].EventID
	child := event("invoice.due")
	child.CorrelationID, child.CausationID, child.Depth = root, &root, 1
	tx := b.begin(t)
	childRows := b.write(t, q, tx, child, []Target{target("pdf")})
	require.NoError(t, tx.Commit(t.Context()))
	b.insert(t, q, "order.placed", "a") // another cascade
	_, err := q.Bury(t.Context(), b.pool, []Burial{{Ref: rows[1].Ref(), Reason: ReasonPermanent, Error: "declined", Attempts: 1}})
	require.NoError(t, err)

	got, err := q.EventRows(t.Context(), b.pool, Start, root, 10)
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Equal(t, rows[0].ID, got[0].ID, "live rows first")
	require.False(t, got[0].Dead)
	require.True(t, got[0].Pending, "before any position, every row is pending")
	require.True(t, got[1].Dead)
	require.Equal(t, ReasonPermanent, got[1].Reason)
	require.NotNil(t, got[1].DeadAt)
	require.Equal(t, "declined", *got[1].LastError)

	limited, err := q.EventRows(t.Context(), b.pool, Start, root, 1)
	require.NoError(t, err)
	require.Len(t, limited, 2, "the limit bounds live and dead rows each")

	cascade, err := q.CascadeRows(t.Context(), b.pool, Start, root, 10)
	require.NoError(t, err)
	require.Len(t, cascade, 3)
	require.ElementsMatch(t, [][16]byte{rows[0].ID, childRows[0].ID, rows[1].ID}, [][16]byte{cascade[0].ID, cascade[1].ID, cascade[2].ID})

	for _, r := range []Row{rows[0], rows[1], childRows[0]} {
		ev, found, err := q.EventOf(t.Context(), b.pool, r.ID)
		require.NoError(t, err)
		require.True(t, found)
		require.Equal(t, r.EventID, ev)
	}
	_, found, err := q.EventOf(t.Context(), b.pool, ulid.Make())
	require.NoError(t, err)
	require.False(t, found)
}
