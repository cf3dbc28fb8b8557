package dashboard

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/dj-signals/signals"
)

// Config configures the handler [New] returns. The zero Config serves
// every page and action.
type Config struct {
	// ReadOnly removes the requeue and discard actions: the pages show
	// them not, and the handler refuses their requests. Defaults to false.
	ReadOnly bool
	// TraceURL, when set, links an event's trace: the URL of a trace in
	// your tracing UI, with {trace_id} where the trace's ID goes, such as
	// "https://grafana.example.com/explore?traceId={trace_id}". The trace
	// ID is read from the event's traceparent header. Defaults to no link.
	TraceURL string
	// Refresh is how often the overview reloads itself. Defaults to 5s;
	// a negative value turns the reload off.
	Refresh time.Duration
	// StatsMaxAge is how old a snapshot of the ledger ([signals.Ledger.Stats],
	// a pass over the whole outbox) the overview may show: every browser
	// showing it within that time shares one. The overview waits at most
	// 750 ms for a new snapshot, then shows the one before, or none, saying
	// so, and reloads for the new one. Defaults to 5s; a negative value
	// computes one per request and waits for it.
	StatsMaxAge time.Duration
	// PageSize is how many dead letters a page lists. Defaults to 50; at
	// most 500.
	PageSize int
	// Logger receives the errors the pages show, and a line per action.
	// Nil means slog.Default().
	Logger *slog.Logger
}

// maxPageSize bounds a page of dead letters, and each batch of an action on
// all that match.
const maxPageSize = 500

// WithDefaults returns a copy of c with every zero field set to its
// default.
func (c *Config) WithDefaults() *Config {
	out := *c
	if out.Refresh == 0 {
		out.Refresh = 5 * time.Second
	}
	if out.StatsMaxAge == 0 {
		out.StatsMaxAge = 5 * time.Second
	}
	if out.PageSize == 0 {
		out.PageSize = 50
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	return &out
}

// validate checks a defaulted config.
func (c *Config) validate() error {
	if c.PageSize < 0 || c.PageSize > maxPageSize {
		return fmt.Errorf("%w: dashboard PageSize %d: want 1 to %d", signals.ErrInvalidConfig, c.PageSize, maxPageSize)
	}
	if c.TraceURL != "" && !strings.Contains(c.TraceURL, "{trace_id}") {
		return fmt.Errorf("%w: dashboard TraceURL has no {trace_id} for the trace's ID", signals.ErrInvalidConfig)
	}
	if c.TraceURL != "" && !strings.HasPrefix(c.TraceURL, "https://") && !strings.HasPrefix(c.TraceURL, "http://") {
		return fmt.Errorf("%w: dashboard TraceURL must be an http:// or https:// URL", signals.ErrInvalidConfig)
	}
	return nil
}
