package throttle

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// records is a slog.Handler keeping every record.
type records struct {
	mu sync.Mutex
	rs []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *records) WithGroup(string) slog.Handler            { return r }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rs = append(r.rs, rec)
	return nil
}

func TestLoggerLetsOneWarningPerWindowThrough(t *testing.T) {
	t.Parallel()
	h := &records{}
	l := New(slog.New(h), time.Hour)
	l.Log(slog.LevelError, "redis: connection refused")
	for range 18 {
		l.Log(slog.LevelWarn, "redis: connection refused")
		l.Log(slog.LevelInfo, "info passes")
	}
	require.Len(t, h.rs, 1+18, "one throttled line and every info line")
	require.Equal(t, "redis: connection refused", h.rs[0].Message)

	l.last = time.Now().Add(-2 * time.Hour) // the window has passed
	l.Log(slog.LevelWarn, "redis: connection refused")
	last := h.rs[len(h.rs)-1]
	var held int64
	last.Attrs(func(a slog.Attr) bool {
		if a.Key == "similar_lines_held_back" {
			held = a.Value.Int64()
		}
		return true
	})
	require.Equal(t, int64(18), held, "the next line says how many were held back")
}
