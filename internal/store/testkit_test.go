package store

import (
	"testing"

	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"
)

func TestKitQueries(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	since := ulid.Make()
	placed := b.insert(t, q, "order.placed", "email", "analytics")
	// An event a receiver of order.placed sent.
	e := event("invoice.issued")
	e.CausationID, e.Depth = &placed[0].EventID, 1
	tx := b.begin(t)
	caused := b.write(t, q, tx, e, []Target{target("record")})
	require.NoError(t, tx.Commit(t.Context()))
	unrelated := b.insert(t, q, "invoice.issued", "record")

	sent, err := b.kit.Sent(t.Context(), b.pool, "order.placed")
	require.NoError(t, err)
	requireRowsEqual(t, placed, sent)
	sent, err = b.kit.Sent(t.Context(), b.pool, "never.sent")
	require.NoError(t, err)
	require.Empty(t, sent)
	requireRowsEqual(t, append(append(placed, caused...), unrelated...), b.live(t))

	n, err := b.kit.CountPending(t.Context(), b.pool, []string{"order.placed", "invoice.issued"}, since)
	require.NoError(t, err)
	require.Equal(t, int64(4), n)
	n, err = b.kit.CountPending(t.Context(), b.pool, []string{"invoice.issued"}, unrelated[0].ID)
	require.NoError(t, err)
	require.Equal(t, int64(1), n, "rows from since on")
	pending, err := b.kit.ListPending(t.Context(), b.pool, []string{"invoice.issued"}, since, 1)
	require.NoError(t, err)
	requireRowsEqual(t, caused, pending, "oldest first, up to the limit")

	read, err := b.kit.EventRows(t.Context(), b.pool, [][16]byte{placed[0].EventID}, nil, 2)
	require.NoError(t, err)
	requireRowsEqual(t, placed, read, "the event's rows first, up to the limit")
	read, err = b.kit.EventRows(t.Context(), b.pool, [][16]byte{placed[0].EventID}, [][16]byte{placed[0].ID, placed[1].ID}, 10)
	require.NoError(t, err)
	requireRowsEqual(t, caused, read, "then, but for the rows seen, the rows its receivers sent")
	requireRowsEqual(t, append(append(placed, caused...), unrelated...), b.live(t), "nothing is taken")
}
