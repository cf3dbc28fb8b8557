// Package throttle keeps a log that repeats itself, as asynq's does while
// Redis is down, to a line per window: the first warning or error of a
// window goes out, the others are counted, and the count goes out with the
// next line that does.
package throttle

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Logger passes lines below Warn through and throttles the others. It is
// safe for concurrent use.
type Logger struct {
	l      *slog.Logger
	window time.Duration

	mu      sync.Mutex
	last    time.Time // when the last throttled line went out
	dropped int       // lines held back since
}

// New returns a Logger writing to l at most one warning or error per window.
func New(l *slog.Logger, window time.Duration) *Logger {
	return &Logger{l: l, window: window}
}

// Log writes msg, with its attributes (slog's key-value pairs), at level,
// unless it is a warning or an error and another went out less than a
// window ago.
func (t *Logger) Log(level slog.Level, msg string, attrs ...any) {
	if level < slog.LevelWarn {
		t.l.Log(context.Background(), level, msg, attrs...)
		return
	}
	t.mu.Lock()
	now := time.Now()
	if !t.last.IsZero() && now.Sub(t.last) < t.window {
		t.dropped++
		t.mu.Unlock()
		return
	}
	dropped := t.dropped
	t.last, t.dropped = now, 0
	t.mu.Unlock()
	if dropped > 0 {
		attrs = append(attrs, "similar_lines_held_back", dropped, "window", t.window)
	}
	t.l.Log(context.Background(), level, msg, attrs...)
}
