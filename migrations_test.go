package signals_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/relay"
	"github.com/dj-signals/signals/internal/store"
	"github.com/dj-signals/signals/internal/testenv"
)

// requireTables requires that schema holds the outbox's tables.
func requireTables(t *testing.T, db store.Executor, schema string) {
	t.Helper()
	tables, err := store.Tables(t.Context(), db, schema)
	require.NoError(t, err)
	require.Subset(t, tables, []string{"outbox", "dead", "inbox", "ledger"})
}

func TestMigrateIsIdempotentAndSafeConcurrently(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := testenv.Pool(t)
	schema := testenv.Schema(t)
	reg := newRegistry(t, signals.RegistryConfig{Schema: schema})

	const starters = 6
	var wg sync.WaitGroup
	errs := make([]error, starters)
	for i := range starters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = reg.Migrate(ctx, pool)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	require.NoError(t, reg.Migrate(ctx, pool), "again, on an up-to-date schema")

	migrations, err := signals.Migrations(schema)
	require.NoError(t, err)
	applied, err := store.Applied(ctx, pool, schema)
	require.NoError(t, err)
	require.Len(t, applied, len(migrations), "each migration recorded once")
	for i, m := range migrations {
		require.Equal(t, m.Version, applied[i])
	}
	requireTables(t, pool, schema)
}

func TestMigrationsAreExportedForOtherTools(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := testenv.Pool(t)
	schema := testenv.Schema(t)

	migrations, err := signals.Migrations(schema)
	require.NoError(t, err)
	require.NotEmpty(t, migrations)
	for i, m := range migrations {
		require.Equal(t, i+1, m.Version)
		require.NotEmpty(t, m.Name)
		require.Contains(t, m.SQL, `"`+schema+`".`, "schema is quoted into the SQL")
		require.NotContains(t, m.SQL, "{{schema}}")
		_, err := pool.Exec(ctx, m.SQL) // as goose or golang-migrate would
		require.NoError(t, err, "migration %d", m.Version)
	}
	requireTables(t, pool, schema)

	_, err = signals.Migrations(`x"; DROP SCHEMA public; --`)
	require.ErrorIs(t, err, signals.ErrInvalidName)
}

// TestAVersion5LedgerUpgradesWhileItsTasksAreInRedis builds a ledger at
// migration 5 holding rows pending, in flight (their tasks in Redis, as the
// older relay enqueued them) and dead, with and without an ordering key;
// migrates it and runs today's Dispatcher and Worker: every live row's
// receiver runs once, the dead letter stays dead until requeued, and then
// runs too.
func TestAVersion5LedgerUpgradesWhileItsTasksAreInRedis(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := testenv.Pool(t)
	schema := testenv.Schema(t)
	migrations, err := signals.Migrations(schema)
	require.NoError(t, err)
	require.Greater(t, len(migrations), 5)
	for _, m := range migrations[:5] {
		_, err := pool.Exec(ctx, m.SQL)
		require.NoError(t, err, "migration %d", m.Version)
	}
	_, err = pool.Exec(ctx, `CREATE TABLE `+schema+`.schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());
INSERT INTO `+schema+`.schema_migrations (version, name) SELECT v, 'v' || v FROM generate_series(1, 5) AS v`)
	require.NoError(t, err)

	f := setupOnSchema(t, schema)
	runs := newCounter()
	sig := signals.Register[orderPlaced](f.reg, "order.placed")
	for _, name := range []string{"plain", "keyed"} {
		sig.Connect(name, func(_ context.Context, e signals.Event[orderPlaced]) error {
			runs.add(e.Payload.OrderID)
			return nil
		}, signals.Queue(f.queue))
	}

	// The rows as migration 5's code left them.
	type v5row struct {
		table, receiver, key, order string
		enqueued                    bool // its task is in Redis
	}
	rows := []v5row{
		{"outbox", "plain", "", "pending", false},
		{"outbox", "keyed", "customer-1", "pending-keyed", false},
		{"inflight", "plain", "", "in-flight", true},
		{"inflight", "keyed", "customer-2", "in-flight-keyed", true},
		{"dead", "plain", "", "dead", false},
	}
	client := asynq.NewClient(f.redis)
	t.Cleanup(func() { _ = client.Close() })
	var deadID ulid.ULID
	for i, r := range rows {
		id := ulid.Make()
		payload := `{"order_id":"` + r.order + `"}`
		var key any
		if r.key != "" {
			key = r.key
		}
		extra, values := "", ""
		switch r.table {
		case "inflight":
			extra, values = ", enqueued_at", ", now()"
		case "dead":
			extra, values, deadID = ", reason", ", 'retries exhausted'", id
		}
		_, err := pool.Exec(ctx, `INSERT INTO `+schema+`.`+r.table+` (id, event_id, correlation_id, depth, signal, receiver, queue,
    max_retry, timeout_ms, payload, ordering_key, ordering_seq`+extra+`)
VALUES ($1, $1, $1, 0, 'order.placed', $2, $3, 20, 30000, $4::bytea, $5::text, CASE WHEN $5::text IS NULL THEN NULL ELSE $6::bigint END`+values+`)`,
			id, r.receiver, f.queue, []byte(payload), key, i)
		require.NoError(t, err, r.order)
		if r.enqueued {
			row := store.Row{ID: id, EventID: id, CorrelationID: id, Signal: "order.placed", Receiver: r.receiver,
				Queue: f.queue, MaxRetry: 20, TimeoutMS: 30_000, Payload: []byte(payload)}
			if r.key != "" {
				row.OrderingKey = &r.key
			}
			task, opts, err := relay.Task(row, schema, time.Minute) // no xid: as the older relay enqueued it
			require.NoError(t, err)
			_, err = client.EnqueueContext(ctx, task, opts...)
			require.NoError(t, err)
		}
	}

	require.NoError(t, f.reg.Migrate(ctx, pool))
	f.runDispatcher(t, signals.DispatcherConfig{})
	f.runWorker(t)
	require.Eventually(t, func() bool { return f.pending(t) == 0 }, eventually, tick, "every live row done")
	require.Equal(t, map[string]int{"pending": 1, "pending-keyed": 1, "in-flight": 1, "in-flight-keyed": 1}, runs.snapshot(),
		"each live row's receiver ran once")

	l := f.ledger(t)
	dead, err := l.DeadLetters(ctx, signals.DeadFilter{})
	require.NoError(t, err)
	require.Len(t, dead, 1)
	require.Equal(t, deadID, dead[0].TaskID)
	n, err := l.RequeueDead(ctx, deadID)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Eventually(t, func() bool { return runs.get("dead") == 1 }, eventually, tick, "the requeued dead letter runs")
}
