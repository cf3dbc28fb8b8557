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

	// The event's values are $1..$8, shared by every row; each row's own
	// values (task ID, receiver, queue, max_retry, timeout_ms) follow.
	// Without ordering keys, both ordering columns are NULL.
	require.Equal(t, q.insertPrefix+"($9, $1, $2, $3, $4, $5, $10, $11, $12, $13, $6, $7, $8, NULL, NULL)", q.insertStatement(insertShape{rows: 1}))
	require.Equal(t, q.insertPrefix+
		"($9, $1, $2, $3, $4, $5, $10, $11, $12, $13, $6, $7, $8, NULL, NULL), "+
		"($14, $1, $2, $3, $4, $5, $15, $16, $17, $18, $6, $7, $8, NULL, NULL)", q.insertStatement(insertShape{rows: 2}))
	// With keys, each row has a sixth value, its key, which also decides
	// whether the row takes a number from the sequence.
	require.Equal(t, q.insertPrefix+
		"($9, $1, $2, $3, $4, $5, $10, $11, $12, $13, $6, $7, $8, NULLIF($14::text, ''), CASE WHEN $14::text = '' THEN NULL ELSE nextval('\"s\".\"ordering_seq\"') END), "+
		"($15, $1, $2, $3, $4, $5, $16, $17, $18, $19, $6, $7, $8, NULLIF($20::text, ''), CASE WHEN $20::text = '' THEN NULL ELSE nextval('\"s\".\"ordering_seq\"') END)",
		q.insertStatement(insertShape{rows: 2, keyed: true}))

	columns := strings.Count(insertColumns[strings.Index(insertColumns, "("):strings.Index(insertColumns, ")")], ",") + 1
	for _, n := range []int{1, 3, 16, 100} {
		sql := q.insertStatement(insertShape{rows: n})
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
			got[i] = q.insertStatement(insertShape{rows: 5})
		}()
	}
	wg.Wait()
	cached, ok := q.inserts.Load(insertShape{rows: 5})
	require.True(t, ok)
	for _, sql := range got {
		require.Equal(t, unsafe.StringData(cached.(string)), unsafe.StringData(sql), "every caller gets the cached text")
	}
	require.Equal(t, unsafe.StringData(got[0]), unsafe.StringData(q.insertStatement(insertShape{rows: 5})))
	_, ok = q.inserts.Load(insertShape{rows: 6})
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

// begin starts a transaction on b's pool, rolled back when the test ends
// unless committed before.
func (b *testBundle) begin(t *testing.T) pgx.Tx {
	t.Helper()
	tx, err := b.pool.Begin(t.Context())
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	return tx
}

func (b *testBundle) pending(t *testing.T, q *Queries) []Row {
	t.Helper()
	rows, err := q.Pending(t.Context(), b.pool)
	require.NoError(t, err)
	return rows
}

func (b *testBundle) count(t *testing.T, q *Queries) Counts {
	t.Helper()
	c, err := q.Count(t.Context(), b.pool)
	require.NoError(t, err)
	return c
}

// claim claims in a transaction of its own, rolled back at once.
func (b *testBundle) claim(t *testing.T, q *Queries, limit, maxBytes int) []Row {
	t.Helper()
	tx, err := b.pool.Begin(t.Context())
	require.NoError(t, err)
	defer tx.Rollback(context.Background()) //nolint:errcheck // read only
	rows, err := q.Claim(t.Context(), tx, limit, maxBytes, &KeyCursor{})
	require.NoError(t, err)
	return rows
}

// stale claims stale rows in a transaction of its own, rolled back at once.
func (b *testBundle) stale(t *testing.T, q *Queries, age time.Duration) []Stale {
	t.Helper()
	tx, err := b.pool.Begin(t.Context())
	require.NoError(t, err)
	defer tx.Rollback(context.Background()) //nolint:errcheck // read only
	rows, err := q.ClaimStale(t.Context(), tx, age, 10)
	require.NoError(t, err)
	return rows
}

func (b *testBundle) dead(t *testing.T, q *Queries, f DeadFilter) []Dead {
	t.Helper()
	list, err := q.ListDead(t.Context(), b.pool, f)
	require.NoError(t, err)
	return list
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
func requireRowsEqual(t *testing.T, want, got []Row, msgAndArgs ...any) {
	t.Helper()
	require.Len(t, got, len(want), msgAndArgs...)
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
	require.Equal(t, []string{"dead", "inbox", "inflight", "ledger", "outbox", "schema_migrations"}, tables)
	require.Zero(t, b.count(t, q))

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
	require.Equal(t, Counts{Pending: 4}, b.count(t, q))

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
		claimed, err := q.Claim(t.Context(), tx, limit, 1<<20, &KeyCursor{})
		require.NoError(t, err)
		return claimed
	}
	first := b.begin(t)
	requireRowsEqual(t, rows[:2], claim(first, 2))
	second := b.begin(t)
	requireRowsEqual(t, rows[2:], claim(second, 10))
	require.Empty(t, claim(b.begin(t), 10), "every row is held")

	// A rolled-back claim frees its rows.
	require.NoError(t, first.Rollback(t.Context()))
	requireRowsEqual(t, rows[:2], claim(b.begin(t), 10))
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

func TestRetryLaterCountsAttemptsAndHoldsTheRowBack(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	rows := b.insert(t, q, "order.placed", "a", "b", "c")

	require.NoError(t, q.RetryLater(t.Context(), b.pool, []Failure{{ID: rows[0].ID, Error: "first a", Delay: time.Hour}, {ID: rows[1].ID, Error: "first b"}}))
	require.NoError(t, q.RetryLater(t.Context(), b.pool, []Failure{{ID: rows[0].ID, Error: "second a", Delay: time.Hour}}))

	second, firstB := "second a", "first b"
	rows[0].Attempts, rows[0].LastError = 2, &second
	rows[1].Attempts, rows[1].LastError = 1, &firstB
	requireRowsEqual(t, rows, b.pending(t, q))
	requireRowsEqual(t, rows[1:], b.claim(t, q, 10, 1<<20), "a row waits out its own delay; a zero delay is due at once")
}

func TestClaimStopsAtTheByteBudget(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	rows := b.insert(t, q, "order.placed", "a", "b", "c")
	size := len(rows[0].Payload)
	requireRowsEqual(t, rows[:2], b.claim(t, q, 10, 2*size))
	requireRowsEqual(t, rows[:1], b.claim(t, q, 10, 1), "at least one row, however large")
	requireRowsEqual(t, rows, b.claim(t, q, 10, 3*size))
}

func TestLedgerLifecycle(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	rows := b.insert(t, q, "order.placed", "a", "b", "c")

	require.NoError(t, q.MarkEnqueued(t.Context(), b.pool, ids(rows[0], rows[1])))
	require.Equal(t, Counts{Pending: 1, Enqueued: 2}, b.count(t, q))
	requireRowsEqual(t, rows[2:], b.claim(t, q, 10, 1<<20), "enqueued rows are not claimed again")

	stale := b.stale(t, q, 0)
	require.Len(t, stale, 2)
	require.Empty(t, b.stale(t, q, time.Hour), "rows enqueued a moment ago are not stale")

	require.NoError(t, q.Touch(t.Context(), b.pool, ids(rows[0])))
	require.Len(t, b.stale(t, q, time.Hour), 0)
	require.NoError(t, q.Reset(t.Context(), b.pool, ids(rows[1])))
	require.Equal(t, Counts{Pending: 2, Enqueued: 1}, b.count(t, q))

	require.NoError(t, q.Reissue(t.Context(), b.pool, ids(rows[0])))
	claimed := b.claim(t, q, 10, 1<<20)
	require.Len(t, claimed, 3)
	require.Equal(t, 1, claimed[0].Generation, "a reissued row gets a fresh asynq task ID")

	require.NoError(t, q.MarkEnqueued(t.Context(), b.pool, ids(rows...)))
	n, err := q.ResetEnqueued(t.Context(), b.pool, 2)
	require.NoError(t, err)
	require.Equal(t, int64(2), n, "bounded by its limit")
	n, err = q.ResetEnqueued(t.Context(), b.pool, 2)
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	require.Equal(t, Counts{Pending: 3}, b.count(t, q))

	id, err := q.LedgerID(t.Context(), b.pool)
	require.NoError(t, err)
	require.NotZero(t, id)
}

func TestBuryListRetargetRequeueAndDiscardDead(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	rows := b.insert(t, q, "order.placed", "a", "b", "c")

	before := time.Now()
	n, err := q.Bury(t.Context(), b.pool, []Burial{
		{ID: rows[0].ID, Reason: ReasonUnenqueueable, Error: "bad queue a", Attempts: 2},
		{ID: rows[1].ID, Reason: ReasonPermanent, Error: "Card Declined", Attempts: 1},
		{ID: ulid.Make(), Reason: ReasonPermanent, Error: "no such row"},
	})
	require.NoError(t, err)
	require.Equal(t, int64(2), n, "a row not in the outbox is not buried")
	requireRowsEqual(t, rows[2:], b.pending(t, q))
	require.Equal(t, Counts{Pending: 1, Dead: 2}, b.count(t, q))

	list := b.dead(t, q, DeadFilter{Limit: 10})
	require.Len(t, list, 2)
	errA, errB := "bad queue a", "Card Declined"
	rows[0].Attempts, rows[0].LastError = 2, &errA
	rows[1].Attempts, rows[1].LastError = 1, &errB
	requireRowsEqual(t, rows[:2], []Row{list[0].Row, list[1].Row})
	require.Equal(t, []string{ReasonUnenqueueable, ReasonPermanent}, []string{list[0].Reason, list[1].Reason})
	for _, d := range list {
		require.WithinDuration(t, before, d.DeadAt, time.Minute)
	}
	require.Len(t, b.dead(t, q, DeadFilter{Limit: 1}), 1, "limit")
	require.Len(t, b.dead(t, q, DeadFilter{ErrorLike: "card declined", Limit: 10}), 1, "error text, any case")
	require.Len(t, b.dead(t, q, DeadFilter{Receiver: "a", Limit: 10}), 1)
	require.Len(t, b.dead(t, q, DeadFilter{Signal: "other", Limit: 10}), 0)
	byID := b.dead(t, q, DeadFilter{IDs: ids(rows[1]), Limit: 10})
	require.Len(t, byID, 1)
	require.Equal(t, rows[1].ID, byID[0].ID)
	require.Len(t, b.dead(t, q, DeadFilter{DeadUntil: before.Add(-time.Minute), Limit: 10}), 0)
	require.Len(t, b.dead(t, q, DeadFilter{DeadSince: before.Add(-time.Minute), Limit: 10}), 2)

	n, err = q.RetargetDead(t.Context(), b.pool, append(ids(rows[0]), ulid.Make()), "fixed")
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	n, err = q.RequeueDead(t.Context(), b.pool, append(ids(rows[0]), ulid.Make()))
	require.NoError(t, err)
	require.Equal(t, int64(1), n, "unknown IDs are ignored")
	rows[0].Attempts, rows[0].Queue, rows[0].Generation = 0, "fixed", 1 // the last error stays, for the record
	requireRowsEqual(t, []Row{rows[0], rows[2]}, b.pending(t, q))

	n, err = q.DiscardDead(t.Context(), b.pool, ids(rows[1]))
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	require.Equal(t, Counts{Pending: 2}, b.count(t, q))
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

func TestLedgerMigrationKeepsSetAsideRowsAsDead(t *testing.T) {
	t.Parallel()
	_, b := setup(t)
	bare := testenv.Schema(t)
	ms, err := Migrations(bare)
	require.NoError(t, err)
	quoted := pgx.Identifier{bare}.Sanitize()
	// The schema as version 2 left it, with a row set aside.
	for _, m := range ms[:2] {
		_, err := b.pool.Exec(t.Context(), m.SQL)
		require.NoError(t, err)
	}
	_, err = b.pool.Exec(t.Context(), `CREATE TABLE `+quoted+`.schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());
INSERT INTO `+quoted+`.schema_migrations (version, name) VALUES (1, 'outbox'), (2, 'inbox')`)
	require.NoError(t, err)
	id := ulid.Make()
	_, err = b.pool.Exec(t.Context(), `INSERT INTO `+quoted+`.outbox_failed
    (id, event_id, correlation_id, depth, signal, receiver, queue, max_retry, timeout_ms, payload, attempts, last_error)
VALUES ($1, $1, $1, 0, 'order.placed', 'r', 'has spaces', 20, 60000, '{}', 10, 'bad queue')`, id)
	require.NoError(t, err)

	require.NoError(t, Migrate(t.Context(), b.pool, bare))
	old, err := New(bare)
	require.NoError(t, err)
	dead := b.dead(t, old, DeadFilter{Limit: 10})
	require.Len(t, dead, 1)
	require.Equal(t, [16]byte(id), dead[0].ID)
	require.Equal(t, ReasonUnenqueueable, dead[0].Reason)
	require.Equal(t, 10, dead[0].Attempts)
	require.Equal(t, "bad queue", *dead[0].LastError)
}

// TestAckWaitsForTheBatchThatMovesTheRow acks a row whose task a worker ran
// before the relay's batch committed: the ack must find it in inflight once
// the batch moves it there.
func TestAckWaitsForTheBatchThatMovesTheRow(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	rows := b.insert(t, q, "order.placed", "a")

	batch, err := b.pool.Begin(t.Context())
	require.NoError(t, err)
	defer batch.Rollback(context.Background()) //nolint:errcheck // committed below
	claimed, err := q.Claim(t.Context(), batch, 10, 1<<20, &KeyCursor{})
	require.NoError(t, err)
	require.Len(t, claimed, 1)
	require.NoError(t, q.MarkEnqueued(t.Context(), batch, ids(rows...)))

	acked := make(chan error, 1)
	go func() { acked <- q.Delete(context.Background(), b.pool, ids(rows...)) }()
	// The ack's first DELETE waits for the batch's row lock.
	testenv.Eventually(t, 10*time.Second, func() bool {
		var waiting int
		err := b.pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
WHERE wait_event_type = 'Lock' AND query LIKE 'DELETE FROM ' || $1 || '.outbox%'`, pgx.Identifier{b.schema}.Sanitize()).Scan(&waiting)
		require.NoError(t, err)
		return waiting == 1
	}, "the ack waits for the batch")
	select {
	case err := <-acked:
		t.Fatalf("the ack returned (%v) before the batch committed", err)
	default:
	}
	require.NoError(t, batch.Commit(t.Context()))
	require.NoError(t, <-acked)
	require.Zero(t, b.count(t, q), "the ack removed the row from inflight")
}
