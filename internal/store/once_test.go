package store

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
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

// TestPruneInboxGoesOnPastEachChunk prunes an inbox whose old rows are
// interleaved with recent ones, two rows a chunk: each chunk starts past
// the last row the one before deleted, every old row goes, every recent
// row stays, and the chunks together delete each old row once.
func TestPruneInboxGoesOnPastEachChunk(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	var old, recent []ulid.ULID
	for i := range 9 {
		task := ulid.Make()
		_, err := q.Once(t.Context(), b.pool, task, ulid.Make(), "order.placed", "record")
		require.NoError(t, err)
		if i%3 == 2 {
			recent = append(recent, task)
			continue
		}
		old = append(old, task)
	}
	inbox := pgx.Identifier{b.schema, "inbox"}.Sanitize()
	_, err := b.pool.Exec(t.Context(), `UPDATE `+inbox+` SET processed_at = now() - interval '2 hours' WHERE task_id = ANY($1)`, old)
	require.NoError(t, err)

	var after [16]byte
	var chunks []int64
	for {
		n, last, err := q.PruneInbox(t.Context(), b.pool, time.Now().Add(-time.Hour), after, 2)
		require.NoError(t, err)
		chunks = append(chunks, n)
		if n < 2 {
			require.Equal(t, after, last, "an empty chunk keeps the cursor")
			break
		}
		require.Greater(t, ulid.ULID(last).Compare(ulid.ULID(after)), 0, "each chunk goes on past the one before")
		after = last
	}
	require.Equal(t, []int64{2, 2, 2, 0}, chunks, "six old rows, two a chunk")
	rows, err := b.pool.Query(t.Context(), `SELECT task_id FROM `+inbox+` ORDER BY task_id`)
	require.NoError(t, err)
	left, err := pgx.CollectRows(rows, pgx.RowTo[[16]byte])
	require.NoError(t, err)
	want := make([][16]byte, len(recent))
	for i, id := range recent {
		want[i] = id
	}
	require.Equal(t, want, left, "the recent rows stay")
}
