package testenv_test

import (
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dj-signals/signals/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeTB records Fatalf instead of ending the test, so that a test can check
// how testenv fails one.
type fakeTB struct {
	testing.TB
	failed string
}

func (f *fakeTB) Fatalf(format string, args ...any) { f.failed = fmt.Sprintf(format, args...) }

// newRedisClient returns a client for the Redis server at addr, closed when t
// completes.
func newRedisClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { require.NoError(t, rc.Close()) })
	return rc
}

func TestServerAddressesFromEnvironment(t *testing.T) {
	cases := []struct {
		env, value, want string
		get              func() string
	}{
		{testenv.DatabaseURLEnv, "", "postgres://postgres@127.0.0.1:5432/test", testenv.DatabaseURL},
		{testenv.DatabaseURLEnv, "postgres://x@db:1/y", "postgres://x@db:1/y", testenv.DatabaseURL},
		{testenv.RedisAddrEnv, "", "127.0.0.1:6379", testenv.RedisAddr},
		{testenv.RedisAddrEnv, "redis:1", "redis:1", testenv.RedisAddr},
	}
	for _, c := range cases {
		t.Setenv(c.env, c.value)
		require.Equal(t, c.want, c.get(), "%s=%q", c.env, c.value)
	}
}
