package signals_test

import (
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/testenv"
)

func tableExists(t *testing.T, ctx context.Context, db interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, schema, table string) bool {
	t.Helper()
	var ok bool
	require.NoError(t, db.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, pgx.Identifier{schema, table}.Sanitize()).Scan(&ok))
	return ok
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
	var applied int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{schema, "schema_migrations"}.Sanitize()).Scan(&applied))
	require.Equal(t, len(migrations), applied, "each migration recorded once")
	require.True(t, tableExists(t, ctx, pool, schema, "outbox"))
	require.True(t, tableExists(t, ctx, pool, schema, "outbox_failed"))
	require.True(t, tableExists(t, ctx, pool, schema, "inbox"))
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
	require.True(t, tableExists(t, ctx, pool, schema, "outbox"))

	_, err = signals.Migrations(`x"; DROP SCHEMA public; --`)
	require.ErrorIs(t, err, signals.ErrInvalidSchema)
	require.ErrorIs(t, signals.MigrateSchema(ctx, pool, "Bad Name"), signals.ErrInvalidSchema)
}
