package main

import (
	"testing"

	"github.com/dj-signals/signals/internal/testenv"
)

// TestQuickstartRuns runs the README's quick start against the test
// database and Redis.
func TestQuickstartRuns(t *testing.T) {
	t.Setenv("DATABASE_URL", testenv.DatabaseURL())
	t.Setenv("REDIS_ADDR", testenv.RedisAddr())
	if err := run(t.Context()); err != nil {
		t.Fatal(err)
	}
}
