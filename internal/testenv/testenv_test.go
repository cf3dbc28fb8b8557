package testenv_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dj-signals/signals/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// redisDo sends one RESP command to addr over a fresh connection and returns
// the first line of the reply (enough for +OK, :1, $-1, -ERR ...).
func redisDo(addr string, args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSuffix(line, "\r\n"), err
}

func mustRedis(t *testing.T, addr string, args ...string) string {
	t.Helper()
	reply, err := redisDo(addr, args...)
	require.NoError(t, err, "redis %v at %s", args, addr)
	return reply
}

// pgTarget returns host:port of testenv.DatabaseURL.
func pgTarget(t *testing.T) string {
	t.Helper()
	u, err := url.Parse(testenv.DatabaseURL())
	require.NoError(t, err)
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "5432")
	}
	return u.Host
}

var identRE = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

func TestDefaults(t *testing.T) {
	t.Setenv(testenv.DatabaseURLEnv, "")
	t.Setenv(testenv.RedisAddrEnv, "")
	require.Equal(t, "postgres://postgres@127.0.0.1:5432/test", testenv.DatabaseURL())
	require.Equal(t, "127.0.0.1:6379", testenv.RedisAddr())

	t.Setenv(testenv.DatabaseURLEnv, "postgres://x@db:1/y")
	t.Setenv(testenv.RedisAddrEnv, "redis:1")
	require.Equal(t, "postgres://x@db:1/y", testenv.DatabaseURL())
	require.Equal(t, "redis:1", testenv.RedisAddr())
}

func TestStartRedisStopStart(t *testing.T) {
	r := testenv.StartRedis(t)
	addr := r.Addr
	require.Equal(t, "+PONG", mustRedis(t, addr, "PING"))
	require.Equal(t, "+OK", mustRedis(t, addr, "SET", "k", "v"))

	r.Stop(t)
	require.Equal(t, addr, r.Addr)
	_, err := redisDo(addr, "PING")
	require.Error(t, err, "stopped redis-server still answers")
	r.Stop(t) // stopping twice is a no-op

	r.Start(t)
	require.Equal(t, addr, r.Addr, "restart must reuse the address")
	require.Equal(t, "+PONG", mustRedis(t, addr, "PING"))
	require.Equal(t, "$-1", mustRedis(t, addr, "GET", "k"), "data must not survive a restart (persistence is off)")
}

func TestPool(t *testing.T) {
	pool := testenv.Pool(t)
	var n int
	require.NoError(t, pool.QueryRow(t.Context(), "SELECT 1").Scan(&n))
	require.Equal(t, 1, n)
}

func TestProxyForwardsAndCuts(t *testing.T) {
	p := testenv.StartProxy(t, pgTarget(t))
	dsn := testenv.URLVia(t, p)
	require.Contains(t, dsn, p.Addr)

	connect := func() (*pgx.Conn, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		return pgx.Connect(ctx, dsn)
	}
	query := func(c *pgx.Conn) error {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		var n int
		if err := c.QueryRow(ctx, "SELECT 41 + 1").Scan(&n); err != nil {
			return err
		}
		if n != 42 {
			return fmt.Errorf("got %d", n)
		}
		return nil
	}
	closeConn := func(c *pgx.Conn) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	}

	c1, err := connect()
	require.NoError(t, err)
	defer closeConn(c1)
	require.NoError(t, query(c1))

	p.Cut()
	require.Error(t, query(c1), "query on a cut connection must fail")

	c2, err := connect()
	require.NoError(t, err, "proxy must accept new connections after Cut")
	defer closeConn(c2)
	require.NoError(t, query(c2))

	p.Block()
	require.Error(t, query(c2), "Block must close existing connections")
	_, err = connect()
	require.Error(t, err, "Block must refuse new connections")

	p.Unblock()
	c3, err := connect()
	require.NoError(t, err, "Unblock must accept new connections")
	defer closeConn(c3)
	require.NoError(t, query(c3))

	// A pool through the proxy recovers from a cut on its own.
	pool := testenv.PoolFor(t, dsn)
	p.Cut()
	testenv.Eventually(t, 10*time.Second, func() bool {
		var n int
		return pool.QueryRow(t.Context(), "SELECT 1").Scan(&n) == nil
	}, "pool through proxy did not recover after Cut")
}

func TestURLVia(t *testing.T) {
	t.Setenv(testenv.DatabaseURLEnv, "postgres://u:pw@db.example:6543/x?sslmode=disable&host=other")
	p := testenv.StartProxy(t, "127.0.0.1:1")
	u, err := url.Parse(testenv.URLVia(t, p))
	require.NoError(t, err)
	require.Equal(t, p.Addr, u.Host)
	require.Equal(t, "/x", u.Path)
	pw, _ := u.User.Password()
	require.Equal(t, "u", u.User.Username())
	require.Equal(t, "pw", pw)
	require.Equal(t, "disable", u.Query().Get("sslmode"))
	require.False(t, u.Query().Has("host"))
}

func TestSchema(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		s := testenv.Schema(t)
		require.Regexp(t, identRE, s)
		require.LessOrEqual(t, len(s), 63)
		require.True(t, strings.HasPrefix(s, "t_"), s)
		require.False(t, seen[s], "duplicate schema name %s", s)
		seen[s] = true
	}

	pool := testenv.Pool(t)
	exists := func(name string) bool {
		var ok bool
		err := pool.QueryRow(t.Context(),
			"SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", name).Scan(&ok)
		require.NoError(t, err)
		return ok
	}

	var name string
	t.Run("create", func(t *testing.T) {
		name = testenv.Schema(t)
		require.False(t, exists(name), "Schema must not create the schema")
		_, err := pool.Exec(t.Context(), "CREATE SCHEMA "+name)
		require.NoError(t, err)
		_, err = pool.Exec(t.Context(), "CREATE TABLE "+name+".x (id int)")
		require.NoError(t, err)
		require.True(t, exists(name))
	})
	require.False(t, exists(name), "schema %s must be dropped when the subtest ends", name)
}

func TestQueue(t *testing.T) {
	addr := testenv.RedisAddr()
	if _, err := redisDo(addr, "PING"); err != nil {
		t.Fatalf("Redis at %s unreachable (set %s): %v", addr, testenv.RedisAddrEnv, err)
	}

	a, b := testenv.Queue(t), testenv.Queue(t)
	require.NotEqual(t, a, b)
	require.Regexp(t, `^q_[a-z0-9]{26}$`, a)

	other := testenv.Queue(t)
	otherKey := "asynq:{" + other + "}:pending"
	require.Equal(t, ":1", mustRedis(t, addr, "LPUSH", otherKey, "x"))
	require.Equal(t, ":1", mustRedis(t, addr, "SADD", "asynq:queues", other))

	var q string
	t.Run("use", func(t *testing.T) {
		q = testenv.Queue(t)
		// More keys than one SCAN batch, so cleanup has to iterate.
		args := []string{"MSET"}
		for i := range 2500 {
			args = append(args, fmt.Sprintf("asynq:{%s}:t:%d", q, i), "v")
		}
		require.Equal(t, "+OK", mustRedis(t, addr, args...))
		require.Equal(t, ":1", mustRedis(t, addr, "LPUSH", "asynq:{"+q+"}:pending", "x"))
		require.Equal(t, ":1", mustRedis(t, addr, "SADD", "asynq:queues", q))
	})
	require.Equal(t, ":0", mustRedis(t, addr, "EXISTS", "asynq:{"+q+"}:pending"))
	require.Equal(t, ":0", mustRedis(t, addr, "EXISTS", "asynq:{"+q+"}:t:0"))
	require.Equal(t, ":0", mustRedis(t, addr, "EXISTS", "asynq:{"+q+"}:t:2499"))
	require.Equal(t, ":0", mustRedis(t, addr, "SISMEMBER", "asynq:queues", q))
	// Other queues are untouched (until their own cleanup runs).
	require.Equal(t, ":1", mustRedis(t, addr, "EXISTS", otherKey))
	require.Equal(t, ":1", mustRedis(t, addr, "SISMEMBER", "asynq:queues", other))
}

// fakeTB records Fatalf instead of stopping the goroutine.
type fakeTB struct {
	testing.TB
	failed string
}

func (f *fakeTB) Fatalf(format string, args ...any) { f.failed = fmt.Sprintf(format, args...) }

func TestEventually(t *testing.T) {
	calls := 0
	testenv.Eventually(t, time.Second, func() bool { calls++; return calls == 3 }, "never")
	require.Equal(t, 3, calls)

	f := &fakeTB{TB: t}
	start := time.Now()
	testenv.Eventually(f, 50*time.Millisecond, func() bool { return false }, "waited for %s", "godot")
	require.Equal(t, "waited for godot", f.failed)
	require.GreaterOrEqual(t, time.Since(start), 50*time.Millisecond)
}

func TestPoolForUnreachable(t *testing.T) {
	f := &fakeTB{TB: t}
	pool := testenv.PoolFor(f, "postgres://postgres:secret@127.0.0.1:1/test?connect_timeout=5")
	require.Nil(t, pool)
	t.Log(f.failed)
	require.Contains(t, f.failed, testenv.DatabaseURLEnv)
	require.Contains(t, f.failed, "127.0.0.1:1")
	require.NotContains(t, f.failed, "secret", "password must be redacted")
}

func TestStartRedisWithoutBinary(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	f := &fakeTB{TB: t}
	require.Nil(t, testenv.StartRedis(f))
	t.Log(f.failed)
	require.Contains(t, f.failed, "install the redis-server package")
}

func TestRedisStartPortTaken(t *testing.T) {
	r := testenv.StartRedis(t)
	r.Stop(t)
	ln, err := net.Listen("tcp", r.Addr)
	require.NoError(t, err)
	defer ln.Close()

	f := &fakeTB{TB: t}
	r.Start(f)
	t.Log(f.failed)
	require.Contains(t, f.failed, "exited early")
	require.Contains(t, f.failed, r.Addr)
}
