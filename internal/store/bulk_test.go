package store

import (
	"slices"
	"testing"

	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"
)

func TestLoadWritesPendingRowsTheWindowReads(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	var rows []Row
	for range 3 {
		e, tgt := event("order.placed"), target("email")
		rows = append(rows, rowOf(e, tgt))
	}
	n, err := q.Load(t.Context(), b.pool, slices.Values(rows))
	require.NoError(t, err)
	require.Equal(t, int64(3), n)

	got, _ := b.read(t, q, Start)
	require.Len(t, got, 3)
	for i := range rows {
		rows[i].XID = got[0].XID // one COPY, one transaction
	}
	requireRowsEqual(t, rows, got)

	require.NoError(t, q.Vacuum(t.Context(), b.pool))
	_, err = q.Bury(t.Context(), b.pool, []Burial{{Ref: rows[0].Ref(), Reason: ReasonPermanent}})
	require.NoError(t, err)
	task := ulid.Make()
	_, err = q.Once(t.Context(), b.pool, task, rows[0].EventID, "order.placed", "email")
	require.NoError(t, err)
	require.NoError(t, q.Truncate(t.Context(), b.pool))
	require.Equal(t, Counts{}, b.count(t, q))
	first, err := q.Once(t.Context(), b.pool, task, rows[0].EventID, "order.placed", "email")
	require.NoError(t, err)
	require.True(t, first, "the inbox is empty too")
}
