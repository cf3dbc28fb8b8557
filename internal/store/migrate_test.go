package store

import (
	"io/fs"
	"regexp"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals/internal/envelope"
	"github.com/dj-signals/signals/internal/testenv"
)

var migrationFile = regexp.MustCompile(`^migrations/\d{3}_[a-z][a-z_]*\.sql$`)

func TestMigrations(t *testing.T) {
	t.Parallel()
	files, err := fs.Glob(migrationFiles, "migrations/*")
	require.NoError(t, err)
	for _, f := range files {
		require.Regexp(t, migrationFile, f)
	}

	ms, err := Migrations("order")
	require.NoError(t, err)
	require.Len(t, ms, len(files))
	require.Equal(t, "outbox", ms[0].Name)
	require.Equal(t, "inbox", ms[1].Name)
	require.Equal(t, "position", ms[5].Name)
	for i, m := range ms {
		require.Equal(t, i+1, m.Version, "versions count up from 1 without gaps")
		require.Contains(t, m.SQL, `"order".`, m.Name)
		require.NotContains(t, m.SQL, "{{schema}}", m.Name)
	}
}

func TestMigrate(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	require.NoError(t, Migrate(t.Context(), b.pool, b.schema), "again, on an up-to-date schema")

	ms, err := Migrations(b.schema)
	require.NoError(t, err)
	applied, err := Applied(t.Context(), b.pool, b.schema)
	require.NoError(t, err)
	want := make([]int, len(ms))
	for i, m := range ms {
		want[i] = m.Version
	}
	require.Equal(t, want, applied)

	tables, err := Tables(t.Context(), b.pool, b.schema)
	require.NoError(t, err)
	require.Equal(t, []string{"dead", "inbox", "ledger", "outbox", "schema_migrations"}, tables)
	require.Zero(t, b.count(t, q))
	require.Equal(t, []string{"xid", "id"}, b.primaryKey(t, b.schema))

	bare := testenv.Schema(t)
	tables, err = Tables(t.Context(), b.pool, bare)
	require.NoError(t, err)
	require.Empty(t, tables)
	_, err = Applied(t.Context(), b.pool, bare)
	require.Error(t, err, "no schema_migrations table")
	require.True(t, TablesMissing(err))
	_, err = Applied(t.Context(), b.pool, "Bad")
	require.ErrorIs(t, err, envelope.ErrInvalidName)
	require.ErrorIs(t, Migrate(t.Context(), b.pool, "Bad"), envelope.ErrInvalidName)
}

func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	_, b := setup(t)
	schema := testenv.Schema(t)
	const callers = 4
	errs := make(chan error, callers)
	for range callers {
		go func() { errs <- Migrate(t.Context(), b.pool, schema) }()
	}
	for range callers {
		require.NoError(t, <-errs)
	}
	applied, err := Applied(t.Context(), b.pool, schema)
	require.NoError(t, err)
	require.Len(t, applied, 6, "each migration applied once")
}

// migrateTo builds schema as the first version migrations left it, recorded
// in schema_migrations as Migrate records them.
func (b *testBundle) migrateTo(t *testing.T, schema string, version int) {
	t.Helper()
	ms, err := Migrations(schema)
	require.NoError(t, err)
	quoted := pgx.Identifier{schema}.Sanitize()
	_, err = b.pool.Exec(t.Context(), `CREATE SCHEMA `+quoted+`;
CREATE TABLE `+quoted+`.schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`)
	require.NoError(t, err)
	for _, m := range ms[:version] {
		_, err := b.pool.Exec(t.Context(), m.SQL)
		require.NoError(t, err, m.Name)
		_, err = b.pool.Exec(t.Context(), `INSERT INTO `+quoted+`.schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name)
		require.NoError(t, err)
	}
}

// primaryKey returns the columns of the primary key of schema's outbox.
func (b *testBundle) primaryKey(t *testing.T, schema string) []string {
	t.Helper()
	var cols []string
	require.NoError(t, b.pool.QueryRow(t.Context(), `SELECT array_agg(a.attname::text ORDER BY k.n)
FROM pg_index AS i
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = $1::regclass AND i.indisprimary`, pgx.Identifier{schema, "outbox"}.Sanitize()).Scan(&cols))
	return cols
}

func TestLedgerMigrationKeepsSetAsideRowsAsDead(t *testing.T) {
	t.Parallel()
	_, b := setup(t)
	old := testenv.Schema(t)
	b.migrateTo(t, old, 2) // the schema as version 2 left it, with a row set aside
	id := ulid.Make()
	_, err := b.pool.Exec(t.Context(), `INSERT INTO `+pgx.Identifier{old}.Sanitize()+`.outbox_failed
    (id, event_id, correlation_id, depth, signal, receiver, queue, max_retry, timeout_ms, payload, attempts, last_error)
VALUES ($1, $1, $1, 0, 'order.placed', 'r', 'has spaces', 20, 60000, '{}', 10, 'bad queue')`, id)
	require.NoError(t, err)

	require.NoError(t, Migrate(t.Context(), b.pool, old))
	q, err := New(old)
	require.NoError(t, err)
	dead := b.dead(t, q, DeadFilter{Limit: 10})
	require.Len(t, dead, 1)
	require.Equal(t, [16]byte(id), dead[0].ID)
	require.Equal(t, ReasonUnenqueueable, dead[0].Reason)
	require.Equal(t, 10, dead[0].Attempts)
	require.Equal(t, "bad queue", *dead[0].LastError)
}

// TestPositionMigrationKeepsEveryLiveRowInOutbox migrates a ledger of
// version 5, with rows pending, in flight and dead, to the position: every
// live row must stay, in outbox, where the first Dispatcher finds it.
func TestPositionMigrationKeepsEveryLiveRowInOutbox(t *testing.T) {
	t.Parallel()
	_, b := setup(t)
	old := testenv.Schema(t)
	b.migrateTo(t, old, 5)
	quoted := pgx.Identifier{old}.Sanitize()
	// The IDs count up in the order the rows are listed, so the window
	// reads them in this order.
	pending, waiting, pendingKeyed, flyingKeyed, flying, dead := ulid.Make(), ulid.Make(), ulid.Make(), ulid.Make(), ulid.Make(), ulid.Make()
	enqueuedAt := time.Now().Add(-time.Hour).Truncate(time.Microsecond)
	checkedAt := enqueuedAt.Add(time.Minute)
	_, err := b.pool.Exec(t.Context(), `INSERT INTO `+quoted+`.outbox
    (id, event_id, correlation_id, depth, signal, receiver, queue, max_retry, timeout_ms, payload,
     attempts, last_error, next_attempt_at, ordering_key, ordering_seq)
VALUES ($1, $1, $1, 0, 'order.placed', 'email', 'signals', 20, 60000, '{}', 0, NULL, NULL, NULL, NULL),
       ($2, $2, $2, 0, 'order.placed', 'email', 'signals', 20, 60000, '{}', 2, 'redis down', now() + interval '1 hour', NULL, NULL),
       ($3, $3, $3, 0, 'order.placed', 'ledger', 'signals', 20, 60000, '{}', 0, NULL, NULL, 'customer-1', 2)`,
		pending, waiting, pendingKeyed)
	require.NoError(t, err)
	_, err = b.pool.Exec(t.Context(), `INSERT INTO `+quoted+`.inflight
    (id, event_id, correlation_id, depth, signal, receiver, queue, max_retry, timeout_ms, payload,
     enqueues, ordering_key, ordering_seq, enqueued_at, checked_at)
VALUES ($1, $1, $1, 0, 'order.placed', 'ledger', 'signals', 20, 60000, '{}', 1, 'customer-1', 1, $3, $4),
       ($2, $2, $2, 0, 'order.placed', 'email', 'signals', 20, 60000, '{}', 1, NULL, NULL, $3, $4)`,
		flyingKeyed, flying, enqueuedAt, checkedAt)
	require.NoError(t, err)
	_, err = b.pool.Exec(t.Context(), `INSERT INTO `+quoted+`.dead
    (id, event_id, correlation_id, depth, signal, receiver, queue, max_retry, timeout_ms, payload, attempts, last_error, enqueued_at, reason)
VALUES ($1, $1, $1, 0, 'order.placed', 'email', 'signals', 20, 60000, '{}', 21, 'card declined', $2, 'retries exhausted')`,
		dead, enqueuedAt)
	require.NoError(t, err)

	require.NoError(t, Migrate(t.Context(), b.pool, old))
	q, err := New(old)
	require.NoError(t, err)
	kit, err := NewKitQueries(old)
	require.NoError(t, err)

	tables, err := Tables(t.Context(), b.pool, old)
	require.NoError(t, err)
	require.Equal(t, []string{"dead", "inbox", "ledger", "outbox", "schema_migrations"}, tables, "inflight is gone")
	require.Equal(t, []string{"xid", "id"}, b.primaryKey(t, old))
	applied, err := Applied(t.Context(), b.pool, old)
	require.NoError(t, err)
	require.Equal(t, []int{1, 2, 3, 4, 5, 6}, applied)

	live, err := kit.Live(t.Context(), b.pool)
	require.NoError(t, err)
	require.Equal(t, [][16]byte{pending, waiting, pendingKeyed, flyingKeyed, flying}, ids(live...), "every live row is in outbox")
	for _, r := range live {
		require.Equal(t, uint64(1), r.XID, "older than every transaction")
	}
	require.Equal(t, 2, live[1].Attempts)
	require.Equal(t, 1, live[3].Enqueues)

	stateOf := func(id ulid.ULID) rowState {
		t.Helper()
		var s rowState
		require.NoError(t, b.pool.QueryRow(t.Context(), `SELECT next_attempt_at, enqueued_at, checked_at FROM `+quoted+`.outbox WHERE xid = '1' AND id = $1`, id).
			Scan(&s.NextAttemptAt, &s.EnqueuedAt, &s.CheckedAt))
		return s
	}
	require.Equal(t, rowState{}, stateOf(pending))
	require.NotNil(t, stateOf(waiting).NextAttemptAt, "a row waiting out a failed enqueue still waits")
	require.Nil(t, stateOf(pendingKeyed).EnqueuedAt)
	keyed := stateOf(flyingKeyed)
	require.NotNil(t, keyed.EnqueuedAt, "an in-flight keyed row keeps its enqueue: its key stays busy")
	require.True(t, enqueuedAt.Equal(*keyed.EnqueuedAt))
	require.True(t, checkedAt.Equal(*keyed.CheckedAt))
	unkeyed := stateOf(flying)
	require.Nil(t, unkeyed.EnqueuedAt, "the position says whether a row without a key is enqueued")
	require.Nil(t, unkeyed.NextAttemptAt)

	deadRows, err := q.ListDead(t.Context(), b.pool, DeadFilter{Limit: 10})
	require.NoError(t, err)
	require.Len(t, deadRows, 1)
	require.Equal(t, [16]byte(dead), deadRows[0].ID)
	require.Equal(t, ReasonRetriesExhausted, deadRows[0].Reason)
	require.Equal(t, 21, deadRows[0].Attempts)
	require.Equal(t, "card declined", *deadRows[0].LastError)
	require.True(t, enqueuedAt.Equal(*deadRows[0].EnqueuedAt))

	// The first Dispatcher starts before every row: it enqueues the rows
	// without a key that do not wait, in flight before or not.
	w, err := q.Window(t.Context(), b.pool, Start, 100, 1<<20)
	require.NoError(t, err)
	require.True(t, w.Done)
	require.Equal(t, [][16]byte{pending, flying}, ids(w.Rows...))
	w, err = q.Window(t.Context(), b.pool, Position{Covered: w.Upto}, 100, 1<<20)
	require.NoError(t, err)
	require.Empty(t, w.Rows, "once passed, the migrated rows are behind the position")

	// The key's in-flight row holds its next one back.
	tx := b.begin(t)
	heads, err := q.ClaimKeyed(t.Context(), tx, 10, 1<<20, &KeyCursor{})
	require.NoError(t, err)
	require.Empty(t, heads)
	require.NoError(t, tx.Rollback(t.Context()))

	// A task enqueued before the migration carries no transaction ID: its
	// worker acks it as xid 1.
	require.NoError(t, q.Delete(t.Context(), b.pool, []Ref{{XID: 1, ID: flyingKeyed}}))
	tx = b.begin(t)
	heads, err = q.ClaimKeyed(t.Context(), tx, 10, 1<<20, &KeyCursor{})
	require.NoError(t, err)
	require.Equal(t, [][16]byte{pendingKeyed}, ids(heads...))
	require.NoError(t, tx.Rollback(t.Context()))

	// New rows take their transaction's ID.
	require.NoError(t, q.Insert(t.Context(), b.pool, event("order.placed"), []Target{target("email")}))
	live, err = kit.Live(t.Context(), b.pool)
	require.NoError(t, err)
	require.Len(t, live, 5)
	require.Greater(t, live[4].XID, uint64(1))
}
