package testenv

import (
	"context"
	"log/slog"
	"sync"
)

// Logs is a slog.Handler keeping every record, for tests of what code
// logs. It is safe for concurrent use.
type Logs struct {
	mu      sync.Mutex
	records []slog.Record
}

// Enabled accepts every level.
func (l *Logs) Enabled(context.Context, slog.Level) bool { return true }

// WithAttrs returns l: attributes added to a logger are not kept.
func (l *Logs) WithAttrs([]slog.Attr) slog.Handler { return l }

// WithGroup returns l.
func (l *Logs) WithGroup(string) slog.Handler { return l }

// Handle keeps r.
func (l *Logs) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r)
	return nil
}

// Find returns the records with message msg, oldest first, each as its
// attributes' values in text, plus "level".
func (l *Logs) Find(msg string) []map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]string
	for _, r := range l.records {
		if r.Message != msg {
			continue
		}
		attrs := map[string]string{"level": r.Level.String()}
		r.Attrs(func(a slog.Attr) bool {
			attrs[a.Key] = a.Value.String()
			return true
		})
		out = append(out, attrs)
	}
	return out
}

// Len returns how many records were kept.
func (l *Logs) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.records)
}

// WarningsSince returns the messages of the warnings and errors kept from
// the from-th record on (a Len read earlier), oldest first.
func (l *Logs) WarningsSince(from int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, r := range l.records[min(from, len(l.records)):] {
		if r.Level >= slog.LevelWarn {
			out = append(out, r.Message)
		}
	}
	return out
}
