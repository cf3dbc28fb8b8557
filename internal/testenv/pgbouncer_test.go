package testenv

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

func TestStartPgBouncer(t *testing.T) {
	t.Parallel()
	p := StartPgBouncer(t)
	connect := func() *pgx.Conn {
		conn, err := pgx.Connect(t.Context(), p.URL("default_query_exec_mode=exec"))
		require.NoError(t, err, "log:\n%s", p.Log())
		t.Cleanup(func() { _ = conn.Close(context.Background()) })
		return conn
	}
	backend := func(q interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	}) int {
		var pid int
		require.NoError(t, q.QueryRow(t.Context(), `SELECT pg_backend_pid()`).Scan(&pid))
		return pid
	}

	// In transaction pooling, a server connection goes back to the pool at
	// the end of each transaction: a statement of a's, on its own, leaves
	// its server connection to b's transaction (PgBouncer hands out the
	// server connection it used last), and a's next statement gets another
	// while b's transaction holds that one.
	a, b := connect(), connect()
	first := backend(a)
	tx, err := b.Begin(t.Context())
	require.NoError(t, err)
	require.Equal(t, first, backend(tx), "b's transaction runs on the server connection a just used")
	require.NotEqual(t, first, backend(a), "a moved to another server connection")
	require.NoError(t, tx.Commit(t.Context()))
}

func TestPgBouncerURL(t *testing.T) {
	t.Parallel()
	p := &PgBouncer{Addr: "127.0.0.1:6432", dir: t.TempDir()}
	var err error
	p.database, err = pgconn.ParseConfig("postgres://alice:it%27s%20secret@db.example:5433/shop?sslmode=require")
	require.NoError(t, err)
	require.Equal(t, "postgres://alice@127.0.0.1:6432/shop?sslmode=disable", p.URL(""), "no password: PgBouncer trusts its clients")
	require.Equal(t, "postgres://alice@127.0.0.1:6432/shop?sslmode=disable&default_query_exec_mode=exec", p.URL("default_query_exec_mode=exec"))

	require.NoError(t, p.writeConfig())
	config, err := os.ReadFile(p.configFile())
	require.NoError(t, err)
	require.Contains(t, string(config), `shop = host=db.example port=5433 dbname=shop user=alice password='it\'s secret'`+"\n")
	require.Contains(t, string(config), "pool_mode = transaction\n")
	users, err := os.ReadFile(p.authFile())
	require.NoError(t, err)
	require.Equal(t, `"alice" ""`+"\n", string(users))
}

func TestFindPgBouncer(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, err := findPgBouncer(dir, []string{t.TempDir()})
	require.ErrorContains(t, err, "install the pgbouncer package", "the message says how to fix it")

	bin := filepath.Join(dir, "pgbouncer")
	require.NoError(t, os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755))
	found, err := findPgBouncer("", []string{t.TempDir(), dir})
	require.NoError(t, err)
	require.Equal(t, bin, found, "found outside PATH, where Debian installs it")
}
