package signalstest

import (
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/dj-signals/signals"
)

// DrainWithin is Drain waiting timeout instead of DrainTimeout, so that a
// test sees a timeout's failure without waiting 30 s.
func DrainWithin(t testing.TB, db signals.DB, redisOpt asynq.RedisConnOpt, reg *signals.Registry, timeout time.Duration) {
	t.Helper()
	drain(t, db, redisOpt, reg, timeout)
}
