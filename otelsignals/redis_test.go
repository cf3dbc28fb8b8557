package otelsignals_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// The Redis the tests run against, as in the core's tests: set
// SIGNALS_TEST_REDIS_ADDR to use another.
const redisAddrEnv = "SIGNALS_TEST_REDIS_ADDR"

func redisAddr() string {
	if v := os.Getenv(redisAddrEnv); v != "" {
		return v
	}
	return "127.0.0.1:6379"
}

// testQueue returns a fresh asynq queue name; when the test ends, what
// asynq v0.26 keeps for it in Redis is deleted.
func testQueue(t *testing.T) string {
	t.Helper()
	queue := "otel_" + strings.ToLower(ulid.Make().String())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, deleteQueue(ctx, queue))
	})
	return queue
}

// deleteQueue deletes what asynq v0.26 keeps in Redis for queue.
func deleteQueue(ctx context.Context, queue string) error {
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr()})
	defer rdb.Close()
	iter := rdb.Scan(ctx, 0, "asynq:{"+queue+"}:*", 1000).Iterator()
	for iter.Next(ctx) {
		if err := rdb.Unlink(ctx, iter.Val()).Err(); err != nil {
			return err
		}
	}
	if err := iter.Err(); err != nil {
		return err
	}
	return rdb.SRem(ctx, "asynq:queues", queue).Err()
}
