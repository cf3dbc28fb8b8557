package signals

import (
	"cmp"
	"context"
	"fmt"
	"regexp"
	"runtime/debug"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/dj-signals/signals/internal/envelope"
	"github.com/dj-signals/signals/internal/kithook"
	"github.com/dj-signals/signals/internal/store"
)

// The defaults of the [RegistryConfig] fields of the same names.
const (
	defaultSchema          = "signals"
	defaultMaxPayloadBytes = 256 << 10
	defaultMaxDepth        = 8
)

// RegistryConfig configures a [Registry]. The zero value is valid; every
// zero field takes its default.
type RegistryConfig struct {
	// Schema is the PostgreSQL schema of the outbox tables: 1 to 63
	// lowercase letters, digits or underscores, not starting with a digit.
	// Dispatchers and workers built on the registry use it too; migrate it
	// with [Registry.Migrate]. Defaults to "signals".
	Schema string
	// MaxPayloadBytes caps a payload's JSON size: [Signal.SendReliable]
	// refuses a larger one. Payloads should carry IDs, not documents.
	// Defaults to 256 KiB (262144).
	MaxPayloadBytes int
	// MaxDepth caps how many receivers deep a cascade of signals may go:
	// beyond it, [Signal.SendReliable] refuses with [ErrInvalidEvent],
	// which stops an endless loop of signals sending signals. Defaults to 8.
	MaxDepth int
	// Queue is the asynq queue of the receivers connected without the
	// [Queue] option. Defaults to "signals." followed by the main module's
	// path from the binary's build info, with characters a queue name cannot
	// hold replaced by '-' (for github.com/acme/shop:
	// "signals.github.com-acme-shop"), or to "signals" for a binary without
	// build info; a Schema other than the default "signals" is appended
	// ("signals.github.com-acme-shop.tenant_a"). So every binary built from
	// one module agrees, two applications sharing one Redis never take each
	// other's tasks, and neither do two registries of one application on
	// different schemas. Set it when the binaries of one application are
	// built from different modules.
	//
	// A queue carries one schema's tasks: connecting a receiver to a queue
	// that a registry on another schema already uses in this process fails
	// with [ErrInvalidConfig] naming both, and a Worker never runs a task
	// that another schema's Dispatcher enqueued (it retries it, for that
	// schema's Worker to take, and logs the clash).
	Queue string
	// Middleware wraps every send, enqueue and receive of the registry's
	// signals, the first outermost: tracing and metrics adapters go here.
	// Registry.Use adds more later. Defaults to none.
	Middleware []Middleware
	// Codec, when set, encodes every payload before SendReliable stores it
	// and decodes it before a receiver runs; the Ledger's dead letters and
	// events come decoded, and readers without the codec (the signals
	// command, a registry without it) see them as encoded. MaxPayloadBytes
	// applies to the JSON, before encoding. Every registry that sends or
	// works the schema's signals needs the same codec. Defaults to none:
	// payloads are stored as JSON.
	Codec Codec
}

// WithDefaults returns c with every zero field set to its default: the
// settings a Registry made with c runs with ([NewRegistry] calls it),
// including the Queue computed from the binary's build info. The README's
// defaults table lists the same values.
func (c RegistryConfig) WithDefaults() RegistryConfig {
	c.Schema = cmp.Or(c.Schema, defaultSchema)
	c.MaxPayloadBytes = cmp.Or(c.MaxPayloadBytes, defaultMaxPayloadBytes)
	c.MaxDepth = cmp.Or(c.MaxDepth, defaultMaxDepth)
	c.Queue = cmp.Or(c.Queue, applicationQueue(c.Schema))
	return c
}

// applicationQueue is the default queue of a registry on schema: named
// after the main module, so that it is the same in every binary of one
// application and differs between applications, and after the schema
// unless it is the default one, so that registries on different schemas
// never share it.
func applicationQueue(schema string) string {
	q := "signals"
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Path != "" {
		q += "." + notInQueueName.ReplaceAllString(info.Main.Path, "-")
	}
	if schema != defaultSchema {
		q += "." + schema
	}
	return q
}

var notInQueueName = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// validate checks a defaulted config.
func (c RegistryConfig) validate() error {
	if err := envelope.ValidateSchema(c.Schema); err != nil {
		return err
	}
	if err := envelope.ValidateQueue(c.Queue); err != nil {
		return err
	}
	if c.MaxPayloadBytes < 0 || c.MaxDepth < 0 {
		return fmt.Errorf("%w: MaxPayloadBytes (%d) and MaxDepth (%d) must not be negative", ErrInvalidConfig, c.MaxPayloadBytes, c.MaxDepth)
	}
	return nil
}

// Registry knows which signals exist and who listens to them, and holds the
// settings that senders, [Dispatcher] and [Worker] must agree on: pass the
// same Registry to all of them. A Registry is safe for concurrent use.
type Registry struct {
	cfg        RegistryConfig
	queries    *store.Queries
	middleware atomic.Pointer[[]Middleware] // read on every send and delivery

	mu      sync.RWMutex
	signals map[string]handle
}

// handle is a Signal[T] seen without its type parameter.
type handle interface {
	deliver(ctx context.Context, d delivery) error
	receiverOptions(name string) (receiverOptions, bool)
	receiverNames() []string
	queues() []string
}

// DefaultRegistry holds the signals created with [New]. Its config is the
// zero RegistryConfig: schema "signals", the other fields at their
// defaults too.
var DefaultRegistry = newDefaultRegistry()

// newDefaultRegistry is NewRegistry of the zero config, which is valid.
func newDefaultRegistry() *Registry {
	r, err := NewRegistry(RegistryConfig{})
	if err != nil {
		panic(err) // a bug in the defaults
	}
	return r
}

// NewRegistry returns an empty registry. It returns [ErrInvalidName] for a
// Schema or Queue that breaks the naming rules and [ErrInvalidConfig] for
// another field it cannot use.
func NewRegistry(cfg RegistryConfig) (*Registry, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	q, err := store.New(cfg.Schema)
	if err != nil {
		return nil, err
	}
	r := &Registry{cfg: cfg, queries: q, signals: map[string]handle{}}
	r.middleware.Store(&cfg.Middleware)
	return r, nil
}

// Use adds middleware after cfg's, innermost last: the way to instrument
// DefaultRegistry, whose config is fixed. Call it once per process, at
// wiring time, before the first send and before Dispatcher.Run, which
// reads the middleware once: each call adds, so calling it twice with the
// same middleware wraps every step in it twice. It is safe for concurrent
// use.
func (r *Registry) Use(mws ...Middleware) {
	r.mu.Lock()
	defer r.mu.Unlock()
	all := append(slices.Clip(*r.middleware.Load()), mws...)
	r.middleware.Store(&all)
}

// wraps returns the registry's middleware, outermost first.
func (r *Registry) wraps() []Middleware { return *r.middleware.Load() }

// Schema returns the PostgreSQL schema of the registry's outbox.
func (r *Registry) Schema() string { return r.cfg.Schema }

func (r *Registry) add(name string, h handle) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.signals[name]; dup {
		return fmt.Errorf("%w: signal %q is already registered", ErrDuplicateName, name)
	}
	r.signals[name] = h
	return nil
}

// queueSchemas maps each queue a registry of this process uses to the
// registry's schema: a queue carries one outbox's tasks, or the Workers of
// two registries would run each other's events.
var queueSchemas sync.Map // queue → schema

// useQueue records that the registry's receivers, or a Worker of the
// registry, use queue, or refuses if a registry on another schema does.
func (r *Registry) useQueue(queue string) error {
	if owner, _ := queueSchemas.LoadOrStore(queue, r.cfg.Schema); owner != r.cfg.Schema {
		return fmt.Errorf("%w: queue %q carries the tasks of the registry on schema %q, so the registry on schema %q cannot use it: each would run the other's events; give each registry queues of its own (RegistryConfig.Queue, the Queue option)",
			ErrInvalidConfig, queue, owner, r.cfg.Schema)
	}
	return nil
}

func (r *Registry) lookup(name string) handle {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.signals[name]
}

// knows reports whether the registry has the signal with the receiver
// connected.
func (r *Registry) knows(signal, receiver string) bool {
	h := r.lookup(signal)
	if h == nil {
		return false
	}
	_, ok := h.receiverOptions(receiver)
	return ok
}

// connected lists every signal and receiver connected in the registry.
func (r *Registry) connected() [][2]string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out [][2]string
	for name, h := range r.signals {
		for _, rc := range h.receiverNames() {
			out = append(out, [2]string{name, rc})
		}
	}
	return out
}

func init() {
	kithook.SignalNames = func(reg any) []string { return reg.(*Registry).signalNames() }
}

// signalNames returns the sorted names of the registry's signals, for
// package signalstest.
func (r *Registry) signalNames() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.signals))
	for name := range r.signals {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
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
