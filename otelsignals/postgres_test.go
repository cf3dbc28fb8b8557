package otelsignals_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"
)

// The PostgreSQL the tests run against, as in the core's tests: set
// SIGNALS_TEST_DATABASE_URL to use another.
const databaseURLEnv = "SIGNALS_TEST_DATABASE_URL"

func databaseURL() string {
	if v := os.Getenv(databaseURLEnv); v != "" {
		return v
	}
	return "postgres://postgres@127.0.0.1:5432/test"
}

// testPool returns a pool to databaseURL, closed when the test ends.
func testPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), databaseURL())
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	require.NoError(t, pool.Ping(ctx), "PostgreSQL at %s (set %s)", databaseURL(), databaseURLEnv)
	return pool
}

// testSchema returns a fresh outbox schema name, for the test's registry to
// migrate; the schema is dropped when the test ends.
func testSchema(t *testing.T) string {
	t.Helper()
	schema := "otel_" + strings.ToLower(ulid.Make().String())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// A connection of its own: the pool is closed by now.
		conn, err := pgx.Connect(ctx, databaseURL())
		require.NoError(t, err)
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
		require.NoError(t, err)
	})
	return schema
}
