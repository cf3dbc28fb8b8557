package testenv_test

import (
	"context"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals/internal/testenv"
)

func TestSchema(t *testing.T) {
	t.Parallel()
	pool := testenv.Pool(t)
	exists := func(name string) bool {
		var ok bool
		require.NoError(t, pool.QueryRow(t.Context(),
			"SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", name).Scan(&ok))
		return ok
	}

	var name string
	t.Run("test", func(t *testing.T) {
		name = testenv.Schema(t)
		require.Regexp(t, `^t_[a-z0-9]{26}$`, name, "usable as an unquoted identifier")
		require.NotEqual(t, name, testenv.Schema(t))
		require.False(t, exists(name), "Schema leaves creating the schema to the test")
		_, err := pool.Exec(t.Context(), "CREATE SCHEMA "+name)
		require.NoError(t, err)
		_, err = pool.Exec(t.Context(), "CREATE TABLE "+name+".x (id int)")
		require.NoError(t, err)
	})
	require.False(t, exists(name), "schema %s, table and all, is dropped when its test ends", name)
}

func TestPoolForUnreachable(t *testing.T) {
	t.Parallel()
	f := &fakeTB{TB: t}
	require.Nil(t, testenv.PoolFor(f, "postgres://postgres:secret@127.0.0.1:1/test?connect_timeout=5"))
	require.Contains(t, f.failed, testenv.DatabaseURLEnv, "the message says how to point tests elsewhere")
	require.Contains(t, f.failed, "127.0.0.1:1")
	require.NotContains(t, f.failed, "secret", "the password is redacted")
}

func TestEnsureDatabaseCreatesAMissingOneOnce(t *testing.T) {
	t.Parallel()
	pool := testenv.Pool(t)
	name := "t_" + strings.ToLower(ulid.Make().String())
	t.Cleanup(func() {
		_, err := pool.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name)
		require.NoError(t, err)
	})
	cfg, err := pgx.ParseConfig(testenv.DatabaseURL())
	require.NoError(t, err)
	u := url.URL{Scheme: "postgres", User: url.User(cfg.User), Host: net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))), Path: "/" + name}

	f := &fakeTB{TB: t}
	require.Nil(t, testenv.PoolFor(f, u.String()))
	require.Contains(t, f.failed, "createdb -h "+cfg.Host, "the message gives the command that creates it")

	created, err := testenv.EnsureDatabase(t.Context(), u.String())
	require.NoError(t, err)
	require.True(t, created)
	created, err = testenv.EnsureDatabase(t.Context(), u.String())
	require.NoError(t, err)
	require.False(t, created, "there already")
	require.NotNil(t, testenv.PoolFor(t, u.String()))
}

// TestSchemaForgetsItsLedgerInRedis drops a schema whose ledger's
// Dispatchers kept keys in Redis: they go with it, and another ledger's
// stay.
func TestSchemaForgetsItsLedgerInRedis(t *testing.T) {
	t.Parallel()
	pool := testenv.Pool(t)
	rdb := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr()})
	t.Cleanup(func() { _ = rdb.Close() })
	mine, other := ulid.Make().String(), ulid.Make().String()
	keys := func(id string) []string {
		return []string{"signals:ledger:" + id, "{signals:ledger:" + id + "}:position", "{signals:ledger:" + id + "}:clock"}
	}
	for _, k := range append(keys(mine), keys(other)...) {
		require.NoError(t, rdb.Set(t.Context(), k, "x", time.Hour).Err())
	}
	t.Cleanup(func() { _ = rdb.Del(context.Background(), keys(other)...).Err() })

	t.Run("a test whose schema holds a ledger", func(t *testing.T) {
		schema := testenv.Schema(t)
		_, err := pool.Exec(t.Context(), "CREATE SCHEMA "+schema+"; CREATE TABLE "+schema+".ledger (id uuid)")
		require.NoError(t, err)
		id := ulid.MustParse(mine)
		_, err = pool.Exec(t.Context(), "INSERT INTO "+schema+".ledger VALUES ($1)", [16]byte(id))
		require.NoError(t, err)
	})
	n, err := rdb.Exists(t.Context(), keys(mine)...).Result()
	require.NoError(t, err)
	require.Zero(t, n, "the dropped schema's ledger keys are gone")
	n, err = rdb.Exists(t.Context(), keys(other)...).Result()
	require.NoError(t, err)
	require.EqualValues(t, 3, n, "another ledger's stay")
}
