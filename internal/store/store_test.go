package store

import (
	"context"
	"io/fs"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dj-signals/signals/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestValidateSchema(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		valid bool
	}{
		{"signals", true},
		{"_private", true},
		{"t_01jd3x", true},
		{strings.Repeat("x", 63), true},
		{"", false},
		{strings.Repeat("x", 64), false},
		{"1x", false},
		{"Signals", false},
		{"has space", false},
		{"has-dash", false},
		{`x"; DROP SCHEMA public; --`, false},
		{"schéma", false},
	} {
		err := ValidateSchema(c.name)
		if c.valid {
			require.NoError(t, err, "%q", c.name)
		} else {
			require.ErrorIs(t, err, ErrInvalidSchema, "%q", c.name)
		}
	}
	_, err := New("Bad")
	require.ErrorIs(t, err, ErrInvalidSchema)
	_, err = Migrations("Bad")
	require.ErrorIs(t, err, ErrInvalidSchema)
}

// statements returns every statement text q holds, by field name.
func statements(q *Queries) map[string]string {
	out := map[string]string{}
	v := reflect.ValueOf(q).Elem()
	for i := range v.NumField() {
		if name := v.Type().Field(i).Name; name != "schema" && v.Field(i).Kind() == reflect.String {
			out[name] = v.Field(i).String()
		}
	}
	return out
}

func TestNewQuotesTheSchemaIntoEveryStatement(t *testing.T) {
	t.Parallel()
	q, err := New("order") // a reserved word: it only works quoted
	require.NoError(t, err)
	require.Equal(t, "order", q.Schema())
	stmts := statements(q)
	require.Contains(t, stmts, "claim")
	for name, sql := range stmts {
		require.Contains(t, sql, `"order".`, name)
		require.NotContains(t, sql, "{{schema}}", name)
	}
}

var placeholder = regexp.MustCompile(`\$(\d+)`)

func TestInsertStatement(t *testing.T) {
	t.Parallel()
	q, err := New("s")
	require.NoError(t, err)

	// The event's values are $1..$7, shared by every row; each row's own
	// values (task ID, receiver, queue, max_retry, timeout_ms) follow.
	require.Equal(t, q.insertPrefix+"($8, $1, $2, $3, $4, $5, $9, $10, $11, $12, $6, $7)", q.insertStatement(1))
	require.Equal(t, q.insertPrefix+
		"($8, $1, $2, $3, $4, $5, $9, $10, $11, $12, $6, $7), "+
		"($13, $1, $2, $3, $4, $5, $14, $15, $16, $17, $6, $7)", q.insertStatement(2))

	columns := strings.Count(insertColumns[strings.Index(insertColumns, "("):strings.Index(insertColumns, ")")], ",") + 1
	for _, n := range []int{1, 3, 16, 100} {
		sql := q.insertStatement(n)
		values := strings.TrimPrefix(sql, q.insertPrefix)
		tuples := strings.Split(strings.TrimSuffix(strings.TrimPrefix(values, "("), ")"), "), (")
		require.Len(t, tuples, n, "one tuple per row")
		seen := map[int]int{}
		for _, tuple := range tuples {
			require.Len(t, strings.Split(tuple, ", "), columns, "a value per column")
			for _, m := range placeholder.FindAllStringSubmatch(tuple, -1) {
				p, err := strconv.Atoi(m[1])
				require.NoError(t, err)
				seen[p]++
			}
		}
		want := map[int]int{}
		for p := 1; p <= sharedParams+rowParams*n; p++ {
			want[p] = 1
			if p <= sharedParams {
				want[p] = n
			}
		}
		require.Equal(t, want, seen, "n=%d: every parameter used, the event's once per row, each row's once", n)
	}
}

func TestInsertStatementIsBuiltOncePerRowCount(t *testing.T) {
	t.Parallel()
	q, err := New("s")
	require.NoError(t, err)

	const callers = 8
	got := make([]string, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = q.insertStatement(5)
		}()
	}
	wg.Wait()
	cached, ok := q.inserts.Load(5)
	require.True(t, ok)
	for _, sql := range got {
		require.Equal(t, unsafe.StringData(cached.(string)), unsafe.StringData(sql), "every caller gets the cached text")
	}
	require.Equal(t, unsafe.StringData(got[0]), unsafe.StringData(q.insertStatement(5)))
	_, ok = q.inserts.Load(6)
	require.False(t, ok, "only the counts asked for are built")
}

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
	for i, m := range ms {
		require.Equal(t, i+1, m.Version, "versions count up from 1 without gaps")
		require.Contains(t, m.SQL, `"order".`, m.Name)
		require.NotContains(t, m.SQL, "{{schema}}", m.Name)
	}
}

// testBundle is what a database test works on besides its Queries.
type testBundle struct {
	pool   *pgxpool.Pool
	schema string
}

// setup migrates a schema of the test's own and returns its statements.
func setup(t *testing.T) (*Queries, *testBundle) {
	t.Helper()
	b := &testBundle{pool: testenv.Pool(t), schema: testenv.Schema(t)}
	require.NoError(t, Migrate(t.Context(), b.pool, b.schema))
	q, err := New(b.schema)
	require.NoError(t, err)
	return q, b
}

// event returns an event of signal with a fresh ID.
func event(signal string) Event {
	id := ulid.Make()
	return Event{ID: id, CorrelationID: id, Signal: signal, Payload: []byte(`{"order_id":"o-1"}`)}
}

// target returns a target with a fresh task ID.
func target(receiver string) Target {
	return Target{TaskID: ulid.Make(), Receiver: receiver, Queue: "signals", MaxRetry: 20, TimeoutMS: 60_000}
}

// rowOf is the pending row Insert writes for e and tgt.
func rowOf(e Event, tgt Target) Row {
	return Row{
		ID: tgt.TaskID, EventID: e.ID, CorrelationID: e.CorrelationID, CausationID: e.CausationID,
		Depth: e.Depth, Signal: e.Signal, Receiver: tgt.Receiver, Queue: tgt.Queue,
		MaxRetry: tgt.MaxRetry, TimeoutMS: tgt.TimeoutMS, ProcessAt: e.ProcessAt, Payload: e.Payload,
	}
}

// insert writes one row per receiver of a fresh event of signal and
// returns the rows, oldest first.
func (b *testBundle) insert(t *testing.T, q *Queries, signal string, receivers ...string) []Row {
	t.Helper()
	e := event(signal)
	var targets []Target
	var rows []Row
	for _, r := range receivers {
		targets = append(targets, target(r))
		rows = append(rows, rowOf(e, targets[len(targets)-1]))
	}
	require.NoError(t, q.Insert(t.Context(), b.pool, e, targets))
	return rows
}

func (b *testBundle) pending(t *testing.T, q *Queries) []Row {
	t.Helper()
	rows, err := q.Pending(t.Context(), b.pool)
	require.NoError(t, err)
	return rows
}

func (b *testBundle) count(t *testing.T, q *Queries) (pending, failed int64) {
	t.Helper()
	pending, failed, err := q.Count(t.Context(), b.pool)
	require.NoError(t, err)
	return pending, failed
}

func ids(rows ...Row) [][16]byte {
	out := make([][16]byte, len(rows))
	for i, r := range rows {
		out[i] = r.ID
	}
	return out
}

// requireRowsEqual compares rows field by field, with ProcessAt compared as
// an instant: PostgreSQL hands it back in the local time zone.
func requireRowsEqual(t *testing.T, want, got []Row) {
	t.Helper()
	require.Len(t, got, len(want))
	for i := range want {
		w, g := want[i], got[i]
		require.Equal(t, w.ProcessAt == nil, g.ProcessAt == nil, "row %d: process_at", i)
		if w.ProcessAt != nil {
			require.True(t, w.ProcessAt.Equal(*g.ProcessAt), "row %d: process_at %v, want %v", i, *g.ProcessAt, *w.ProcessAt)
		}
		w.ProcessAt, g.ProcessAt = nil, nil
		require.Equal(t, w, g, "row %d", i)
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
	require.Equal(t, []string{"inbox", "outbox", "outbox_failed", "schema_migrations"}, tables)
	pending, failed := b.count(t, q)
	require.Zero(t, pending)
	require.Zero(t, failed)

	bare := testenv.Schema(t)
	tables, err = Tables(t.Context(), b.pool, bare)
	require.NoError(t, err)
	require.Empty(t, tables)
	_, err = Applied(t.Context(), b.pool, bare)
	require.Error(t, err, "no schema_migrations table")
	_, err = Applied(t.Context(), b.pool, "Bad")
	require.ErrorIs(t, err, ErrInvalidSchema)
	require.ErrorIs(t, Migrate(t.Context(), b.pool, "Bad"), ErrInvalidSchema)
}

func TestInsertWritesOneRowPerTarget(t *testing.T) {
	t.Parallel()
	q, b := setup(t)

	cause := ulid.Make()
	at := time.Now().Add(time.Hour).Truncate(time.Microsecond)
	e := event("order.placed")
	e.CausationID, e.Depth, e.ProcessAt = (*[16]byte)(&cause), 2, &at
	targets := []Target{target("email"), target("analytics"), target("warehouse")}
	targets[1].Queue, targets[1].MaxRetry, targets[1].TimeoutMS = "low", 3, 1500
	require.NoError(t, q.Insert(t.Context(), b.pool, e, targets))
	other := b.insert(t, q, "invoice.issued", "record")

	var want []Row
	for _, tgt := range targets {
		want = append(want, rowOf(e, tgt))
	}
	sent, err := q.Sent(t.Context(), b.pool, "order.placed")
	require.NoError(t, err)
	requireRowsEqual(t, want, sent)
	requireRowsEqual(t, append(want, other...), b.pending(t, q))
	pending, failed := b.count(t, q)
	require.Equal(t, int64(4), pending)
	require.Zero(t, failed)

	sent, err = q.Sent(t.Context(), b.pool, "never.sent")
	require.NoError(t, err)
	require.Empty(t, sent)
}

func TestClaimSkipsRowsAnotherTransactionHolds(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	rows := b.insert(t, q, "order.placed", "a", "b", "c")

	claim := func(tx pgx.Tx, limit int) []Row {
		t.Helper()
		claimed, err := q.Claim(t.Context(), tx, limit)
		require.NoError(t, err)
		return claimed
	}
	begin := func() pgx.Tx {
		t.Helper()
		tx, err := b.pool.Begin(t.Context())
		require.NoError(t, err)
		t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
		return tx
	}
	first := begin()
	requireRowsEqual(t, rows[:2], claim(first, 2))
	second := begin()
	requireRowsEqual(t, rows[2:], claim(second, 10))
	require.Empty(t, claim(begin(), 10), "every row is held")

	// A rolled-back claim frees its rows.
	require.NoError(t, first.Rollback(t.Context()))
	requireRowsEqual(t, rows[:2], claim(begin(), 10))
}

func TestDelete(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	rows := b.insert(t, q, "order.placed", "a", "b", "c")

	require.NoError(t, q.Delete(t.Context(), b.pool, append(ids(rows[0], rows[2]), ulid.Make())))
	requireRowsEqual(t, rows[1:2], b.pending(t, q))
	require.NoError(t, q.Delete(t.Context(), b.pool, nil))
	require.Len(t, b.pending(t, q), 1)
}

func TestRecordFailuresCountsAttempts(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	rows := b.insert(t, q, "order.placed", "a", "b", "c")

	require.NoError(t, q.RecordFailures(t.Context(), b.pool, ids(rows[0], rows[1]), []string{"first a", "first b"}))
	require.NoError(t, q.RecordFailures(t.Context(), b.pool, ids(rows[0]), []string{"second a"}))

	second, firstB := "second a", "first b"
	rows[0].Attempts, rows[0].LastError = 2, &second
	rows[1].Attempts, rows[1].LastError = 1, &firstB
	requireRowsEqual(t, rows, b.pending(t, q))
}

func TestSetAsideFailedRetargetAndRequeue(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	rows := b.insert(t, q, "order.placed", "a", "b", "c")
	require.NoError(t, q.RecordFailures(t.Context(), b.pool, ids(rows[0]), []string{"timeout"}))

	before := time.Now()
	require.NoError(t, q.SetAside(t.Context(), b.pool, ids(rows[0], rows[1]), []string{"bad queue a", "bad queue b"}))
	requireRowsEqual(t, rows[2:], b.pending(t, q))
	pending, failed := b.count(t, q)
	require.Equal(t, int64(1), pending)
	require.Equal(t, int64(2), failed)

	list, err := q.Failed(t.Context(), b.pool, 10)
	require.NoError(t, err)
	require.Len(t, list, 2)
	errA, errB := "bad queue a", "bad queue b"
	rows[0].Attempts, rows[0].LastError = 2, &errA // the attempt that set it aside counts
	rows[1].Attempts, rows[1].LastError = 1, &errB
	requireRowsEqual(t, rows[:2], []Row{list[0].Row, list[1].Row})
	for _, f := range list {
		require.WithinDuration(t, before, f.FailedAt, time.Minute)
	}
	list, err = q.Failed(t.Context(), b.pool, 1)
	require.NoError(t, err)
	require.Len(t, list, 1, "limit")
	require.Equal(t, rows[0].ID, list[0].ID, "oldest first")

	n, err := q.RetargetFailed(t.Context(), b.pool, append(ids(rows[0]), ulid.Make()), "fixed")
	require.NoError(t, err)
	require.Equal(t, int64(1), n)

	n, err = q.Requeue(t.Context(), b.pool, append(ids(rows[0]), ulid.Make()))
	require.NoError(t, err)
	require.Equal(t, int64(1), n, "unknown IDs are ignored")
	rows[0].Attempts, rows[0].Queue = 0, "fixed" // the last error stays, for the record
	requireRowsEqual(t, []Row{rows[0], rows[2]}, b.pending(t, q))
	list, err = q.Failed(t.Context(), b.pool, 10)
	require.NoError(t, err)
	requireRowsEqual(t, rows[1:2], []Row{list[0].Row})
}

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
