package throttle

import (
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals/internal/testenv"
)

func TestLoggerLetsOneWarningPerWindowThrough(t *testing.T) {
	t.Parallel()
	h := &testenv.Logs{}
	l := New(slog.New(h), time.Hour)
	l.Log(slog.LevelError, "redis: connection refused")
	for range 18 {
		l.Log(slog.LevelWarn, "redis: connection refused")
		l.Log(slog.LevelInfo, "info passes")
	}
	require.Equal(t, 1+18, h.Len(), "one throttled line and every info line")
	require.Len(t, h.Find("redis: connection refused"), 1)

	l.last = time.Now().Add(-2 * time.Hour) // the window has passed
	l.Log(slog.LevelWarn, "redis: connection refused")
	lines := h.Find("redis: connection refused")
	require.Len(t, lines, 2)
	require.Equal(t, "18", lines[1]["similar_lines_held_back"], "the next line says how many were held back")
}
