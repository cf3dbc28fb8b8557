package main

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/testenv"
	"github.com/dj-signals/signals/otelsignals"
)

// testTelemetry records the spans of every run of the demo in the test
// binary. The middleware that feeds it goes into DefaultRegistry once, in
// TestMain, as main does, so that -count=N does not stack N of them.
var testTelemetry *telemetry

func TestMain(m *testing.M) {
	var err error
	if testTelemetry, err = newTelemetry(true); err != nil {
		fmt.Fprintln(os.Stderr, "set up telemetry:", err)
		os.Exit(1)
	}
	signals.DefaultRegistry.Use(otelsignals.New(otelsignals.Config{
		TracerProvider: testTelemetry.tracerProvider,
		MeterProvider:  testTelemetry.meterProvider,
	}))
	os.Exit(m.Run())
}

// TestDemoNarrative runs make demo's narrative against the test servers.
func TestDemoNarrative(t *testing.T) {
	t.Setenv("DATABASE_URL", testenv.DatabaseURL())
	t.Setenv("REDIS_ADDR", testenv.RedisAddr())
	var out bytes.Buffer
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	require.NoError(t, run(t.Context(), "127.0.0.1:0", true, testTelemetry, &out, quiet), "demo output:\n%s", &out)
	text := out.String()
	require.Contains(t, text, "Every guarantee held.")

	t.Run("OneTraceEndToEnd", func(t *testing.T) {
		// The demo prints the spans of one trace ID only, as a tree: every
		// step showing under it is in that trace.
		require.Equal(t, 1, strings.Count(text, "   trace "), text)
		start := strings.Index(text, "   trace ")
		end := strings.Index(text, "   GET /metrics")
		require.True(t, start >= 0 && end > start, text)
		tree := text[start:end]
		for _, step := range []string{
			`(?m)^   POST /orders +\+`,
			`(?m)^   └─ send shop\.order_placed +\+`,
			`(?m)^      [├└]─ enqueue shop\.order_placed → email-receipt +\+`,
			`(?m)^      [├└]─ enqueue shop\.order_placed → notify-warehouse +\+`,
			`(?m)^      [├└]─ receive shop\.order_placed → email-receipt, attempt 1 +\+[0-9.]+ms +[0-9.]+ms$`,
			`(?m)^      [├└]─ receive shop\.order_placed → notify-warehouse, attempt 1 +\+.*error: warehouse answered 503`,
			`(?m)^      [├└]─ receive shop\.order_placed → notify-warehouse, attempt 2 +\+[0-9.]+ms +[0-9.]+ms$`,
		} {
			require.Regexp(t, regexp.MustCompile(step), tree)
		}
	})

	t.Run("MetricsServed", func(t *testing.T) {
		for _, name := range []string{"signals_sent_total", "signals_enqueued_total", "signals_receive_failed_total", "signals_delivery_lag_seconds_count"} {
			line := `(?m)^   ` + name + `\{[^}]*receiver="notify-warehouse"[^}]*signal="shop\.order_placed"\} [0-9]+$`
			require.Regexp(t, regexp.MustCompile(line), text)
		}
	})
}
