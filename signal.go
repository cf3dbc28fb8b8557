package signals

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/oklog/ulid/v2"

	"github.com/dj-signals/signals/internal/envelope"
	"github.com/dj-signals/signals/internal/store"
	"github.com/dj-signals/signals/internal/wake"
)

// Signal is a typed signal with a stable name. Receivers connect to it at
// wiring time; SendReliable writes one outbox row per connected receiver in
// the caller's transaction. A Signal is safe for concurrent use.
type Signal[T any] struct {
	name string
	reg  *Registry

	mu        sync.RWMutex
	receivers map[string]*receiver[T]
	targets   []store.Target // one per receiver, TaskID left zero
}

type receiver[T any] struct {
	fn   ReceiverFunc[T]
	opts receiverOptions
}

// New creates a signal named name in DefaultRegistry. It is meant for
// package-level variables and panics if the name is invalid or taken, like
// regexp.MustCompile; use Register for an explicit registry and an error.
//
// Names are lowercase dot-separated words such as "order.placed" and must
// stay stable: they are stored in outbox rows and queued tasks.
func New[T any](name string) *Signal[T] {
	s, err := Register[T](DefaultRegistry, name)
	if err != nil {
		panic(err)
	}
	return s
}

// Register creates a signal named name in r. It returns ErrInvalidName for a
// name that is not lowercase dot-separated words, and ErrDuplicateSignal if r
// already has a signal of that name.
func Register[T any](r *Registry, name string) (*Signal[T], error) {
	if err := envelope.ValidateSignal(name); err != nil {
		return nil, err
	}
	s := &Signal[T]{name: name, reg: r, receivers: map[string]*receiver[T]{}}
	if err := r.add(name, s); err != nil {
		return nil, err
	}
	return s, nil
}

// Name returns the signal's name.
func (s *Signal[T]) Name() string { return s.name }

// Registry returns the registry the signal belongs to.
func (s *Signal[T]) Registry() *Registry { return s.reg }

// NewEvent builds the Event a receiver connected as receiver would get on
// the first delivery of payload, with fresh IDs. It is for calling a
// receiver directly, as tests do; Once accepts the result.
func (s *Signal[T]) NewEvent(receiver string, payload T) Event[T] {
	id := ulid.Make()
	return Event[T]{
		Payload:       payload,
		ID:            id,
		TaskID:        ulid.Make(),
		Signal:        s.name,
		Receiver:      receiver,
		Attempt:       1,
		SentAt:        time.UnixMilli(int64(id.Time())),
		CorrelationID: id,
		registry:      s.reg,
	}
}

// Connect registers fn as the receiver named name. It is meant for init-time
// wiring and panics on a nil fn, an invalid name or option, or a name
// already connected to this signal, like http.HandleFunc does.
//
// Every binary that sends the signal must connect the same receivers: the
// receivers connected at send time are the ones that will run.
func (s *Signal[T]) Connect(name string, fn ReceiverFunc[T], opts ...ReceiverOption) {
	if err := s.connect(name, fn, opts); err != nil {
		panic(err)
	}
}

func (s *Signal[T]) connect(name string, fn ReceiverFunc[T], opts []ReceiverOption) error {
	if err := envelope.ValidateReceiver(name); err != nil {
		return err
	}
	if fn == nil {
		return fmt.Errorf("%w: receiver %q of signal %q has a nil func", ErrInvalidConfig, name, s.name)
	}
	o := defaultReceiverOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return fmt.Errorf("receiver %q of signal %q: %w", name, s.name, err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.receivers[name]; dup {
		return fmt.Errorf("%w: signal %q already has a receiver %q", ErrDuplicateReceiver, s.name, name)
	}
	s.receivers[name] = &receiver[T]{fn: fn, opts: o}
	s.targets = append(s.targets, store.Target{
		Receiver:  name,
		Queue:     o.queue,
		MaxRetry:  o.maxRetries,
		TimeoutMS: o.timeout.Milliseconds(),
	})
	return nil
}

// SendOption tunes one SendReliable call.
type SendOption func(*sendOptions)

type sendOptions struct {
	processAt time.Time
}

// At delivers the event no earlier than t. A time in the past means at once.
// asynq schedules to the whole second, so the receivers start within about a
// second plus WorkerConfig.DelayedTaskCheckInterval after t.
func At(t time.Time) SendOption {
	return func(o *sendOptions) { o.processAt = t }
}

// Delay delivers the event no earlier than d after SendReliable is called.
// Zero or negative means at once. The resolution is as for At.
func Delay(d time.Duration) SendOption {
	return func(o *sendOptions) { o.processAt = time.Now().Add(d) }
}

// SendReliable writes one outbox row per connected receiver inside tx, with
// a single statement, and returns the new event's ID. If tx (or a savepoint
// around the call) rolls back, no receiver ever runs; once it commits, every
// receiver connected at this moment runs at least once.
//
// Validation comes first and sends nothing, leaving tx usable: a nil tx
// (ErrNilTx), a payload JSON cannot encode (ErrInvalidPayload), a payload
// above the registry's MaxPayloadBytes (ErrPayloadTooLarge), no connected
// receiver (ErrNoReceivers), a cascade beyond MaxDepth (ErrCascadeTooDeep).
// A finished or aborted tx yields ErrTxDone or ErrTxAborted.
//
// Called from inside a receiver (with the receiver's ctx), the new event
// records the receiver's event as its cause.
func (s *Signal[T]) SendReliable(ctx context.Context, tx pgx.Tx, payload T, opts ...SendOption) (ulid.ULID, error) {
	if tx == nil {
		return ulid.ULID{}, ErrNilTx
	}
	var so sendOptions
	for _, opt := range opts {
		opt(&so)
	}
	body, err := json.Marshal(payload)
	if err != nil {
		return ulid.ULID{}, fmt.Errorf("%w: signal %q: %w", ErrInvalidPayload, s.name, err)
	}
	if len(body) > s.reg.maxPayload {
		return ulid.ULID{}, fmt.Errorf("%w: signal %q: %d bytes of JSON exceed the limit of %d: send IDs, not documents, or raise RegistryConfig.MaxPayloadBytes",
			ErrPayloadTooLarge, s.name, len(body), s.reg.maxPayload)
	}

	s.mu.RLock()
	targets := make([]store.Target, len(s.targets))
	copy(targets, s.targets)
	s.mu.RUnlock()
	if len(targets) == 0 {
		return ulid.ULID{}, fmt.Errorf("%w: %q: import the package that connects its receivers (init wiring) in this binary", ErrNoReceivers, s.name)
	}

	event := store.Event{ID: ulid.Make(), Signal: s.name, Payload: body}
	event.CorrelationID = event.ID
	if cause, ok := causeFrom(ctx); ok {
		event.Depth = cause.Depth + 1
		if event.Depth > s.reg.maxDepth {
			return ulid.ULID{}, fmt.Errorf("%w: sending %q from receiver %q of %q would reach depth %d, above MaxDepth %d: a signal loop?",
				ErrCascadeTooDeep, s.name, cause.Receiver, cause.Signal, event.Depth, s.reg.maxDepth)
		}
		event.CorrelationID = cause.CorrelationID
		causation := [16]byte(cause.EventID)
		event.CausationID = &causation
	}
	if !so.processAt.IsZero() && so.processAt.After(time.Now()) {
		event.ProcessAt = &so.processAt
	}
	for i := range targets {
		targets[i].TaskID = ulid.Make()
	}

	if err := s.reg.queries.Insert(ctx, tx, event, targets); err != nil {
		return ulid.ULID{}, s.sendError(err)
	}
	wake.Notify(s.reg.queries.Schema())
	return event.ID, nil
}

func (s *Signal[T]) sendError(err error) error {
	if errors.Is(err, pgx.ErrTxClosed) {
		return fmt.Errorf("%w: send %q: %w", ErrTxDone, s.name, err)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "25P02" { // in_failed_sql_transaction
		return fmt.Errorf("%w: send %q: %w", ErrTxAborted, s.name, err)
	}
	if tablesMissing(err) {
		return fmt.Errorf("signals: send %q: the outbox tables of schema %q are missing: run signals.Migrate (or apply signals.Migrations) first: %w",
			s.name, s.reg.queries.Schema(), err)
	}
	return fmt.Errorf("signals: send %q: write outbox rows: %w", s.name, err)
}

// delivery is one decoded task, ready for its receiver.
type delivery struct {
	meta    envelope.Meta
	attempt int
	payload []byte
}

func (s *Signal[T]) receiverOptions(name string) (receiverOptions, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	rc, ok := s.receivers[name]
	if !ok {
		return receiverOptions{}, false
	}
	return rc.opts, true
}

func (s *Signal[T]) deliver(ctx context.Context, d delivery) error {
	s.mu.RLock()
	rc := s.receivers[d.meta.Receiver]
	s.mu.RUnlock()
	if rc == nil {
		return fmt.Errorf("%w: signal %q has no receiver %q in this worker: connect it in every worker binary, then run the archived task again",
			ErrUnknownReceiver, s.name, d.meta.Receiver)
	}
	var payload T
	if err := json.Unmarshal(d.payload, &payload); err != nil {
		return fmt.Errorf("%w: payload of signal %q for receiver %q: %w", ErrUndecodable, s.name, d.meta.Receiver, err)
	}
	e := Event[T]{
		Payload:       payload,
		ID:            d.meta.EventID,
		TaskID:        d.meta.TaskID,
		Signal:        s.name,
		Receiver:      d.meta.Receiver,
		Attempt:       d.attempt,
		SentAt:        time.UnixMilli(int64(d.meta.EventID.Time())),
		CorrelationID: d.meta.CorrelationID,
		CausationID:   d.meta.CausationID,
		Depth:         d.meta.Depth,
		registry:      s.reg,
	}
	ctx, cancel := context.WithTimeout(withCause(ctx, d.meta), d.meta.Timeout)
	defer cancel()
	return call(ctx, rc.fn, e)
}

// call runs fn, turning a panic into an error so that it counts as one
// failed attempt instead of crashing the worker.
func call[T any](ctx context.Context, fn ReceiverFunc[T], e Event[T]) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v\n%s", ErrReceiverPanic, p, debug.Stack())
		}
	}()
	return fn(ctx, e)
}

type causeKey struct{}

// withCause records the event being handled so that signals sent by its
// receiver carry causation, correlation and depth.
func withCause(ctx context.Context, m envelope.Meta) context.Context {
	return context.WithValue(ctx, causeKey{}, m)
}

func causeFrom(ctx context.Context) (envelope.Meta, bool) {
	m, ok := ctx.Value(causeKey{}).(envelope.Meta)
	return m, ok
}

func (s *Signal[T]) queues() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.targets))
	for _, t := range s.targets {
		out = append(out, t.Queue)
	}
	return out
}
