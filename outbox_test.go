package signals_test

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/store"
	"github.com/dj-signals/signals/internal/testenv"
)

// requireTables requires that schema holds the outbox's tables.
func requireTables(t *testing.T, db store.Executor, schema string) {
	t.Helper()
	tables, err := store.Tables(t.Context(), db, schema)
	require.NoError(t, err)
	require.Subset(t, tables, []string{"outbox", "inflight", "dead", "inbox", "ledger"})
}

func TestMigrateSchemaIsIdempotentAndSafeConcurrently(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := testenv.Pool(t)
	schema := testenv.Schema(t)

	const starters = 6
	var wg sync.WaitGroup
	errs := make([]error, starters)
	for i := range starters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = signals.MigrateSchema(ctx, pool, schema)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	require.NoError(t, signals.MigrateSchema(ctx, pool, schema), "again, on an up-to-date schema")

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
	require.ErrorIs(t, err, signals.ErrInvalidSchema)
	require.ErrorIs(t, signals.MigrateSchema(ctx, pool, "Bad Name"), signals.ErrInvalidSchema)
}
