package store

import (
	"testing"

	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"
)

func TestOnceRecordsATaskOnce(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	task, ev := ulid.Make(), ulid.Make()
	once := func(db Executor, task ulid.ULID) bool {
		t.Helper()
		first, err := q.Once(t.Context(), db, task, ev, "order.placed", "record")
		require.NoError(t, err)
		return first
	}

	tx, err := b.pool.Begin(t.Context())
	require.NoError(t, err)
	require.True(t, once(tx, task))
	require.NoError(t, tx.Rollback(t.Context()))

	require.True(t, once(b.pool, task), "the rolled-back record is gone")
	require.False(t, once(b.pool, task))
	require.True(t, once(b.pool, ulid.Make()), "another task of the same event")
}
