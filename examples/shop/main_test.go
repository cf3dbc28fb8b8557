package main

import (
	"bytes"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/dj-signals/signals/internal/testenv"
)

// TestDemoNarrative runs make demo's narrative against the test servers.
func TestDemoNarrative(t *testing.T) {
	t.Setenv("DATABASE_URL", testenv.DatabaseURL())
	t.Setenv("REDIS_ADDR", testenv.RedisAddr())
	var out bytes.Buffer
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := run(t.Context(), "127.0.0.1:0", true, &out, quiet); err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "Every guarantee held.") {
		t.Fatalf("demo did not finish:\n%s", out.String())
	}
}
