package testenv

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"
)

// DatabaseURLEnv names the environment variable that points tests at a
// PostgreSQL database other than the default one.
const DatabaseURLEnv = "SIGNALS_TEST_DATABASE_URL"

const (
	defaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/test"

	// connectTimeout is long enough for a database that is still starting,
	// as in CI, and short enough that a missing one fails the test quickly.
	connectTimeout = 15 * time.Second
)

// DatabaseURL returns the PostgreSQL connection URL tests run against: the
// value of SIGNALS_TEST_DATABASE_URL, or postgres://postgres@127.0.0.1:5432/test
// when it is unset or empty.
func DatabaseURL() string {
	if v := os.Getenv(DatabaseURLEnv); v != "" {
		return v
	}
	return defaultDatabaseURL
}

// Pool returns a new, pinged connection pool to DatabaseURL. The pool is
// closed when the test and its subtests complete. If PostgreSQL cannot be
// reached the test fails with a message naming SIGNALS_TEST_DATABASE_URL.
func Pool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return PoolFor(t, DatabaseURL())
}

// PoolFor is like Pool but connects to the given URL, typically one returned
// by URLVia.
func PoolFor(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatalf("testenv: invalid PostgreSQL URL %q: %v (set %s to a valid postgres:// URL)",
			redactURL(url), err, DatabaseURLEnv)
		return nil // t may be a fake whose Fatalf returns
	}
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		if missingDatabase(err) {
			t.Fatalf("testenv: %v; `make test` creates it, or create it yourself: %s", err, createCommand(url))
			return nil
		}
		t.Fatalf("testenv: cannot reach PostgreSQL at %s: %v (start PostgreSQL or set %s; default %s)",
			redactURL(url), err, DatabaseURLEnv, defaultDatabaseURL)
		return nil
	}
	t.Cleanup(pool.Close)
	return pool
}

// EnsureDatabase creates the database the URL names if PostgreSQL says it
// does not exist, connecting to the server's postgres database to do so,
// and reports whether it did. Any other failure to connect is returned as
// it is. Concurrent callers are fine: a database created meanwhile by
// another counts as there.
func EnsureDatabase(ctx context.Context, dbURL string) (created bool, err error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err == nil {
		return false, conn.Close(ctx)
	}
	if !missingDatabase(err) {
		return false, fmt.Errorf("connect to %s: %w (start PostgreSQL or set %s)", redactURL(dbURL), err, DatabaseURLEnv)
	}
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		return false, err
	}
	name := cfg.Database
	cfg.Database = "postgres"
	admin, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, fmt.Errorf("database %q does not exist, and connecting to the postgres database to create it failed: %w; create it yourself: %s",
			name, err, createCommand(dbURL))
	}
	defer admin.Close(ctx)
	_, err = admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database: created meanwhile
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("create database %q: %w; create it yourself: %s", name, err, createCommand(dbURL))
	}
	return true, nil
}

// missingDatabase reports whether err is PostgreSQL's invalid_catalog_name:
// the database named in the URL does not exist.
func missingDatabase(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "3D000"
}

// createCommand is the psql command that creates the database dbURL names.
func createCommand(dbURL string) string {
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		return "createdb <name>"
	}
	return fmt.Sprintf("createdb -h %s -p %d -U %s %s", cfg.Host, cfg.Port, cfg.User, pgx.Identifier{cfg.Database}.Sanitize())
}

// Schema returns a fresh, unique PostgreSQL schema name of the form
// "t_<lowercase ULID>", a valid unquoted identifier. Schema does not create
// the schema; when the test and its subtests complete it is dropped, with
// everything in it, if it exists, and what its ledger's Dispatchers kept in
// the Redis at RedisAddr (marker, clock, position) goes with it.
func Schema(t testing.TB) string {
	t.Helper()
	return uniqueName(t, "t_", dropSchema)
}

func dropSchema(ctx context.Context, name string) error {
	// A connection of its own: the test's pools may be closed by now.
	conn, err := pgx.Connect(ctx, DatabaseURL())
	if err != nil {
		return fmt.Errorf("drop schema %s: connect to %s: %w (set %s)",
			name, redactURL(DatabaseURL()), err, DatabaseURLEnv)
	}
	defer conn.Close(ctx)
	// The schema's ledger names what its Dispatchers kept in Redis: without
	// it (never migrated, say) they kept nothing.
	var ledgerID [16]byte
	if conn.QueryRow(ctx, "SELECT id FROM "+pgx.Identifier{name, "ledger"}.Sanitize()+" LIMIT 1").Scan(&ledgerID) == nil {
		if err := forgetLedger(ctx, RedisAddr(), ulid.ULID(ledgerID).String()); err != nil {
			return fmt.Errorf("drop schema %s: forget its ledger in Redis at %s: %w (set %s)", name, RedisAddr(), err, RedisAddrEnv)
		}
	}
	sql := "DROP SCHEMA IF EXISTS " + pgx.Identifier{name}.Sanitize() + " CASCADE"
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

// redactURL hides a URL's password, because test output ends up in CI logs.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" {
		return s
	}
	return u.Redacted()
}
