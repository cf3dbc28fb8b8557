package testenv_test

import (
	"context"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals/internal/testenv"
)

func TestProxy(t *testing.T) {
	t.Parallel()
	u, err := url.Parse(testenv.DatabaseURL())
	require.NoError(t, err)
	port := u.Port()
	if port == "" {
		port = "5432"
	}
	p := testenv.StartProxy(t, net.JoinHostPort(u.Hostname(), port))
	dsn := testenv.URLVia(t, p)

	connect := func() (*pgx.Conn, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err == nil {
			t.Cleanup(func() { _ = conn.Close(context.Background()) })
		}
		return conn, err
	}
	ping := func(conn *pgx.Conn) error {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		return conn.Ping(ctx)
	}
	requireForwards := func(msg string) *pgx.Conn {
		t.Helper()
		conn, err := connect()
		require.NoError(t, err, msg)
		require.NoError(t, ping(conn), msg)
		return conn
	}

	conn := requireForwards("the proxy forwards to PostgreSQL")
	p.Cut()
	require.Error(t, ping(conn), "Cut closes open connections")
	conn = requireForwards("Cut leaves new connections alone")

	p.Block()
	require.Error(t, ping(conn), "Block closes open connections")
	_, err = connect()
	require.Error(t, err, "Block refuses new connections")
	p.Unblock()
	requireForwards("Unblock accepts new connections again")
}

func TestURLVia(t *testing.T) {
	t.Setenv(testenv.DatabaseURLEnv, "postgres://u:pw@db.example:6543/x?sslmode=disable&host=other")
	p := testenv.StartProxy(t, "127.0.0.1:1")
	u, err := url.Parse(testenv.URLVia(t, p))
	require.NoError(t, err)
	require.Equal(t, p.Addr, u.Host)
	require.Equal(t, "/x", u.Path)
	require.Equal(t, "u:pw", u.User.String())
	require.Equal(t, "disable", u.Query().Get("sslmode"))
	require.False(t, u.Query().Has("host"), "a host parameter would bypass the proxy")
}
