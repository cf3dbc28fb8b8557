package store

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dj-signals/signals/internal/envelope"
	"github.com/dj-signals/signals/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestInvalidSchemaIsRefused(t *testing.T) {
	t.Parallel()
	_, err := New("Bad")
	require.ErrorIs(t, err, envelope.ErrInvalidName)
	_, err = NewKitQueries("Bad")
	require.ErrorIs(t, err, envelope.ErrInvalidName)
	_, err = Migrations("Bad")
	require.ErrorIs(t, err, envelope.ErrInvalidName)
}

// statements returns every statement text held in v's string fields, and
// in those of the structs it holds, by field path.
func statements(v reflect.Value, prefix string, out map[string]string) map[string]string {
	for i := range v.NumField() {
		name := prefix + v.Type().Field(i).Name
		switch f := v.Field(i); {
		case name == "schema":
		case f.Kind() == reflect.String:
			out[name] = f.String()
		case f.Kind() == reflect.Struct && f.Type().PkgPath() == v.Type().PkgPath():
			statements(f, name+".", out)
		}
	}
	return out
}

func TestNewQuotesTheSchemaIntoEveryStatement(t *testing.T) {
	t.Parallel()
	q, err := New("order") // a reserved word: it only works quoted
	require.NoError(t, err)
	require.Equal(t, "order", q.Schema())
	kit, err := NewKitQueries("order")
	require.NoError(t, err)

	stmts := statements(reflect.ValueOf(q).Elem(), "", map[string]string{})
	for _, name := range []string{"window", "restamp", "keyed.claimHeads", "ledger.bury", "repair.claimStale", "dead.requeue", "stats.live", "once.consume"} {
		require.Contains(t, stmts, name, "the walk reaches the nested statements")
	}
	statements(reflect.ValueOf(kit).Elem(), "kit.", stmts)
	require.Contains(t, stmts, "kit.eventRows")
	for name, sql := range stmts {
		require.Contains(t, sql, `"order".`, name)
		require.NotContains(t, sql, "{{schema}}", name)
	}
}

// testBundle is what a database test works on besides its Queries.
type testBundle struct {
	pool   *pgxpool.Pool
	schema string
	kit    *KitQueries
}

// setup migrates a schema of the test's own and returns its statements.
func setup(t *testing.T) (*Queries, *testBundle) {
	t.Helper()
	b := &testBundle{pool: testenv.Pool(t), schema: testenv.Schema(t)}
	require.NoError(t, Migrate(t.Context(), b.pool, b.schema))
	q, err := New(b.schema)
	require.NoError(t, err)
	b.kit, err = NewKitQueries(b.schema)
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

// rowOf is the row Insert writes for e and tgt, but for the transaction's
// ID and the key's number, which the database gives it.
func rowOf(e Event, tgt Target) Row {
	row := Row{
		ID: tgt.TaskID, EventID: e.ID, CorrelationID: e.CorrelationID, CausationID: e.CausationID,
		Depth: e.Depth, Signal: e.Signal, Receiver: tgt.Receiver, Queue: tgt.Queue,
		MaxRetry: tgt.MaxRetry, TimeoutMS: tgt.TimeoutMS, ProcessAt: e.ProcessAt, Payload: e.Payload,
		Headers: headersOrNil(e.Headers),
	}
	if tgt.OrderingKey != "" {
		row.OrderingKey = &tgt.OrderingKey
	}
	return row
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

// write inserts e's rows in tx and returns them as written, with tx's ID
// and, for keyed rows, the numbers the sequence gave them.
func (b *testBundle) write(t *testing.T, q *Queries, tx pgx.Tx, e Event, targets []Target) []Row {
	t.Helper()
	require.NoError(t, q.Insert(t.Context(), tx, e, targets))
	var xid uint64
	require.NoError(t, tx.QueryRow(t.Context(), `SELECT pg_current_xact_id()`).Scan(&xid))
	rows := make([]Row, len(targets))
	for i, tgt := range targets {
		rows[i] = rowOf(e, tgt)
		rows[i].XID = xid
		if tgt.OrderingKey != "" {
			require.NoError(t, tx.QueryRow(t.Context(), b.sql(`SELECT ordering_seq FROM {{schema}}.outbox WHERE id = $1`), tgt.TaskID).Scan(&rows[i].OrderingSeq))
		}
	}
	return rows
}

// insertIn writes one row per receiver of a fresh event of signal in tx
// and returns the rows, oldest first.
func (b *testBundle) insertIn(t *testing.T, q *Queries, tx pgx.Tx, signal string, receivers ...string) []Row {
	t.Helper()
	e := event(signal)
	targets := make([]Target, len(receivers))
	for i, r := range receivers {
		targets[i] = target(r)
	}
	return b.write(t, q, tx, e, targets)
}

// insert is insertIn in a transaction of its own, committed.
func (b *testBundle) insert(t *testing.T, q *Queries, signal string, receivers ...string) []Row {
	t.Helper()
	tx := b.begin(t)
	rows := b.insertIn(t, q, tx, signal, receivers...)
	require.NoError(t, tx.Commit(t.Context()))
	return rows
}

// insertKeyed writes, in a transaction of its own, one event of
// order.placed for receiver r with ordering key key, and returns its row.
func (b *testBundle) insertKeyed(t *testing.T, q *Queries, key string) Row {
	t.Helper()
	tgt := target("r")
	tgt.OrderingKey = key
	tx := b.begin(t)
	rows := b.write(t, q, tx, event("order.placed"), []Target{tgt})
	require.NoError(t, tx.Commit(t.Context()))
	return rows[0]
}

// sql puts b's schema into a statement a test runs itself.
func (b *testBundle) sql(stmt string) string {
	return strings.ReplaceAll(stmt, "{{schema}}", pgx.Identifier{b.schema}.Sanitize())
}

// exec runs a statement of the test's own on b's schema: what no statement
// of the package does, such as ageing a row.
func (b *testBundle) exec(t *testing.T, stmt string, args ...any) {
	t.Helper()
	_, err := b.pool.Exec(t.Context(), b.sql(stmt), args...)
	require.NoError(t, err)
}

// now reads the database's clock.
func (b *testBundle) now(t *testing.T) time.Time {
	t.Helper()
	var now time.Time
	require.NoError(t, b.pool.QueryRow(t.Context(), `SELECT clock_timestamp()`).Scan(&now))
	return now
}

// rowState is what a live row records of its way through the relay, which
// Row does not carry.
type rowState struct {
	NextAttemptAt, EnqueuedAt, CheckedAt *time.Time
}

// state reads ref's rowState; the row must be live.
func (b *testBundle) state(t *testing.T, ref Ref) rowState {
	t.Helper()
	var s rowState
	require.NoError(t, b.pool.QueryRow(t.Context(), b.sql(`SELECT next_attempt_at, enqueued_at, checked_at FROM {{schema}}.outbox WHERE xid = $1 AND id = $2`),
		ref.XID, ref.ID).Scan(&s.NextAttemptAt, &s.EnqueuedAt, &s.CheckedAt))
	return s
}

// live lists every live row, oldest first.
func (b *testBundle) live(t *testing.T) []Row {
	t.Helper()
	rows, err := b.kit.Live(t.Context(), b.pool)
	require.NoError(t, err)
	return rows
}

func (b *testBundle) count(t *testing.T, q *Queries) Counts {
	t.Helper()
	c, err := q.Count(t.Context(), b.pool)
	require.NoError(t, err)
	return c
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

func refs(rows ...Row) []Ref {
	out := make([]Ref, len(rows))
	for i, r := range rows {
		out[i] = r.Ref()
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
