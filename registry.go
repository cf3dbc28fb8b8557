package signals

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/dj-signals/signals/internal/backoff"
	"github.com/dj-signals/signals/internal/envelope"
	"github.com/dj-signals/signals/internal/store"
)

// Registry defaults.
const (
	// DefaultSchema is the PostgreSQL schema that holds the outbox tables.
	DefaultSchema = "signals"
	// DefaultMaxPayloadBytes is the largest JSON payload SendReliable
	// accepts: 256 KiB. Payloads should carry IDs, not documents.
	DefaultMaxPayloadBytes = 256 << 10
	// DefaultMaxDepth is how deep a cascade of signals sent by receivers may
	// go before SendReliable refuses with ErrCascadeTooDeep.
	DefaultMaxDepth = 8
)

// RegistryConfig configures a Registry. The zero value is valid.
type RegistryConfig struct {
	// Schema is the PostgreSQL schema of the outbox tables: 1 to 63
	// lowercase letters, digits or underscores. Defaults to DefaultSchema.
	// Dispatchers and Migrate must be given the same schema.
	Schema string
	// MaxPayloadBytes caps a payload's JSON size. Defaults to
	// DefaultMaxPayloadBytes.
	MaxPayloadBytes int
	// MaxDepth caps how many receivers deep a cascade of signals may go.
	// Defaults to DefaultMaxDepth.
	MaxDepth int
	// Logger receives receiver failures when the registry runs as an asynq
	// handler. Payloads are never logged. Defaults to slog.Default().
	Logger *slog.Logger
}

// Registry knows which signals exist and who listens to them. It is also
// the asynq.Handler that runs receivers, for teams that mount it in their
// own asynq.ServeMux under TaskTypePrefix. A Registry is safe for concurrent
// use.
type Registry struct {
	queries    *store.Queries
	maxPayload int
	maxDepth   int
	logger     *slog.Logger // nil: slog.Default() at the time of logging

	mu      sync.RWMutex
	signals map[string]handle
}

// handle is a Signal[T] seen without its type parameter.
type handle interface {
	deliver(ctx context.Context, d delivery) error
	receiverOptions(name string) (receiverOptions, bool)
	queues() []string
}

// DefaultRegistry holds the signals created with New. It uses DefaultSchema.
var DefaultRegistry = MustNewRegistry(RegistryConfig{})

// TaskTypePrefix starts the asynq task type of every signal task: mount a
// Registry with mux.Handle(signals.TaskTypePrefix, registry).
const TaskTypePrefix = envelope.TypePrefix

// NewRegistry returns an empty registry. It returns ErrInvalidSchema or
// ErrInvalidConfig for a config it cannot use.
func NewRegistry(cfg RegistryConfig) (*Registry, error) {
	if cfg.Schema == "" {
		cfg.Schema = DefaultSchema
	}
	q, err := store.New(cfg.Schema)
	if err != nil {
		return nil, err
	}
	if cfg.MaxPayloadBytes == 0 {
		cfg.MaxPayloadBytes = DefaultMaxPayloadBytes
	}
	if cfg.MaxDepth == 0 {
		cfg.MaxDepth = DefaultMaxDepth
	}
	if cfg.MaxPayloadBytes < 0 || cfg.MaxDepth < 0 {
		return nil, fmt.Errorf("%w: MaxPayloadBytes (%d) and MaxDepth (%d) must not be negative", ErrInvalidConfig, cfg.MaxPayloadBytes, cfg.MaxDepth)
	}
	return &Registry{
		queries:    q,
		maxPayload: cfg.MaxPayloadBytes,
		maxDepth:   cfg.MaxDepth,
		logger:     cfg.Logger,
		signals:    map[string]handle{},
	}, nil
}

// MustNewRegistry is NewRegistry that panics on error, for wiring code.
func MustNewRegistry(cfg RegistryConfig) *Registry {
	r, err := NewRegistry(cfg)
	if err != nil {
		panic(err)
	}
	return r
}

// Schema returns the PostgreSQL schema of the registry's outbox.
func (r *Registry) Schema() string { return r.queries.Schema() }

func (r *Registry) add(name string, h handle) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.signals[name]; dup {
		return fmt.Errorf("%w: %q is already registered", ErrDuplicateSignal, name)
	}
	r.signals[name] = h
	return nil
}

func (r *Registry) lookup(name string) handle {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.signals[name]
}

// Queues returns the sorted asynq queues used by the connected receivers:
// the queues a server running this registry must serve.
func (r *Registry) Queues() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	seen := map[string]bool{}
	for _, h := range r.signals {
		for _, q := range h.queues() {
			seen[q] = true
		}
	}
	out := make([]string, 0, len(seen))
	for q := range seen {
		out = append(out, q)
	}
	sort.Strings(out)
	return out
}

// ProcessTask runs the receiver a signal task is addressed to, so a Registry
// is an asynq.Handler. A receiver error is returned for asynq to retry; a
// permanent error (see Permanent), an unknown receiver, an undecodable task
// or a cascade beyond MaxDepth is returned wrapping asynq.SkipRetry, so the task is archived (asynq's dead
// letters) at once with the error as its reason.
func (r *Registry) ProcessTask(ctx context.Context, t *asynq.Task) error {
	err := r.process(ctx, t)
	if err == nil {
		return nil
	}
	id, _ := asynq.GetTaskID(ctx)
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	if isPermanent(err) {
		r.log().ErrorContext(ctx, "signals: receiver failed for good; task dead-lettered", "task_type", t.Type(), "task_id", id, "attempt", retried+1, "error", err)
		return deadLetter{err}
	}
	level := slog.LevelWarn
	if retried >= maxRetry {
		level = slog.LevelError
	}
	r.log().Log(ctx, level, "signals: receiver failed", "task_type", t.Type(), "task_id", id, "attempt", retried+1, "max_retry", maxRetry, "error", err)
	return err
}

func (r *Registry) process(ctx context.Context, t *asynq.Task) error {
	meta, err := envelope.Decode(t.Type(), t.Headers())
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUndecodable, err)
	}
	h := r.lookup(meta.Signal)
	if h == nil {
		return fmt.Errorf("%w: no signal %q is registered in this worker: register it and connect its receivers in every worker binary, then run the archived task again",
			ErrUnknownReceiver, meta.Signal)
	}
	retried, _ := asynq.GetRetryCount(ctx)
	return h.deliver(ctx, delivery{meta: meta, attempt: retried + 1, payload: t.Payload()})
}

func (r *Registry) log() *slog.Logger {
	if r.logger != nil {
		return r.logger
	}
	return slog.Default()
}

// isPermanent reports whether a retry is bound to fail the same way. A too
// deep cascade is: the depth travels with the task.
func isPermanent(err error) bool {
	for _, target := range []error{ErrPermanent, ErrUnknownReceiver, ErrUndecodable, ErrCascadeTooDeep} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// deadLetter tells asynq not to retry while keeping err's text as the
// archived task's reason.
type deadLetter struct{ err error }

func (d deadLetter) Error() string   { return d.err.Error() }
func (d deadLetter) Unwrap() []error { return []error{d.err, asynq.SkipRetry} }

// RetryDelay is an asynq.RetryDelayFunc applying each receiver's Backoff
// option. Worker uses it; set asynq.Config.RetryDelayFunc to it when the
// registry runs in your own asynq server.
func (r *Registry) RetryDelay(retried int, _ error, t *asynq.Task) time.Duration {
	o := defaultReceiverOptions()
	if meta, err := envelope.Decode(t.Type(), t.Headers()); err == nil {
		if h := r.lookup(meta.Signal); h != nil {
			if ro, ok := h.receiverOptions(meta.Receiver); ok {
				o = ro
			}
		}
	}
	return backoff.Delay(retried+1, o.backoffMin, o.backoffMax)
}
