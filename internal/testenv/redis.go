package testenv

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/redis/go-redis/v9"
)

// RedisAddrEnv names the environment variable that points tests at a Redis
// server other than the default one.
const RedisAddrEnv = "SIGNALS_TEST_REDIS_ADDR"

const (
	defaultRedisAddr = "127.0.0.1:6379"

	// asynqQueuesKey is the set in which asynq lists every queue it has seen.
	asynqQueuesKey = "asynq:queues"
	// scanCount keeps each SCAN step, and so each DEL, small enough not to
	// stall a Redis server that other tests are using at the same time.
	scanCount = 1000
)

// RedisAddr returns the host:port of the Redis server tests run against: the
// value of SIGNALS_TEST_REDIS_ADDR, or 127.0.0.1:6379 when it is unset or
// empty.
func RedisAddr() string {
	if v := os.Getenv(RedisAddrEnv); v != "" {
		return v
	}
	return defaultRedisAddr
}

// Queue returns a fresh, unique asynq queue name of the form
// "q_<lowercase ULID>". When the test and its subtests complete, the queue's
// keys are deleted from the Redis server at RedisAddr and the queue is removed
// from asynq's list of queues.
func Queue(t testing.TB) string {
	t.Helper()
	return uniqueName(t, "q_", func(ctx context.Context, name string) error {
		if err := deleteQueue(ctx, RedisAddr(), name); err != nil {
			return fmt.Errorf("delete queue %s from Redis at %s: %w (set %s)", name, RedisAddr(), err, RedisAddrEnv)
		}
		return nil
	})
}

// DeleteQueueAtEnd deletes the keys of the asynq queue qname, a name the
// test did not get from Queue (a registry's default queue, say), from the
// Redis server at RedisAddr when the test and its subtests complete.
func DeleteQueueAtEnd(t testing.TB, qname string) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if err := deleteQueue(ctx, RedisAddr(), qname); err != nil {
			t.Errorf("testenv: delete queue %s from Redis at %s: %v (set %s)", qname, RedisAddr(), err, RedisAddrEnv)
		}
	})
}

// deleteQueue removes what asynq v0.26 keeps in Redis for queue qname: the
// keys under the hash tag {qname}, and its entry in asynqQueuesKey.
func deleteQueue(ctx context.Context, addr, qname string) error {
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	if err := deleteMatching(ctx, rdb, "asynq:{"+qname+"}:*"); err != nil {
		return err
	}
	if err := rdb.SRem(ctx, asynqQueuesKey, qname).Err(); err != nil {
		return fmt.Errorf("remove from %s: %w", asynqQueuesKey, err)
	}
	return nil
}

// deleteMatching deletes the keys that match pattern.
func deleteMatching(ctx context.Context, rdb *redis.Client, pattern string) error {
	var cursor uint64
	for {
		keys, next, err := rdb.Scan(ctx, cursor, pattern, scanCount).Result()
		if err != nil {
			return fmt.Errorf("scan %s: %w", pattern, err)
		}
		if len(keys) > 0 {
			if err := rdb.Del(ctx, keys...).Err(); err != nil {
				return fmt.Errorf("delete %s: %w", pattern, err)
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// forgetLedger deletes what the Dispatchers of the ledger ledgerID keep in
// the Redis at addr beside the tasks: its marker, clock, position and lock,
// whose names all hold "signals:ledger:<ledgerID>".
func forgetLedger(ctx context.Context, addr, ledgerID string) error {
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	return deleteMatching(ctx, rdb, "*signals:ledger:"+ledgerID+"*")
}
