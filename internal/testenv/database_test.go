package testenv_test

import (
	"testing"

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
