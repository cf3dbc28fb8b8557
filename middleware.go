package signals

import (
	"context"
	"time"

	"github.com/oklog/ulid/v2"
)

// Middleware wraps the three steps of an event's trip: the send, each
// row's enqueue by a Dispatcher, and each run of a receiver. It is the
// surface for tracing, metrics and logging adapters (otelsignals, a nested
// module, is the OpenTelemetry one) and needs no dependency of the core.
// Set it with [RegistryConfig].Middleware; the first in the list is the
// outermost.
//
// Each field is optional: a nil one lets its step through, so a middleware
// sets only the steps it wraps. Each func must call next once, with the
// ctx the step should go on with (a span's, say), and return next's error,
// or an error of its own after next returned. They run on the hot path:
// keep them cheap.
type Middleware struct {
	// Send wraps SendReliable's write into the outbox, after validation.
	// Headers set in s.Headers before next travel with the event.
	Send func(ctx context.Context, s *SendInfo, next func(context.Context) error) error
	// Enqueue wraps one row's enqueue into Redis by a Dispatcher.
	Enqueue func(ctx context.Context, e *EnqueueInfo, next func(context.Context) error) error
	// Receive wraps one run of a receiver, from decoding the task to
	// classifying the receiver's error. The ctx given to next is the
	// receiver's.
	Receive func(ctx context.Context, r *ReceiveInfo, next func(context.Context) error) error
}

// SendInfo describes one SendReliable call to [Middleware.Send].
type SendInfo struct {
	// Signal is the signal's name; EventID the new event's ID.
	Signal  string
	EventID ulid.ULID
	// CorrelationID, CausationID and Depth place the event in its cascade,
	// as on [Event].
	CorrelationID, CausationID ulid.ULID
	Depth                      int
	// Receivers are the receivers a row is written for.
	Receivers []string
	// Headers travel with the event: set them before calling next, and they
	// are stored in its outbox rows, carried in its asynq tasks' headers,
	// and given to Enqueue and Receive. A trace context goes here. Keys
	// must not start with "signals-", which the library's own use.
	Headers map[string]string
}

// EnqueueInfo describes one row's enqueue to [Middleware.Enqueue].
type EnqueueInfo struct {
	// Signal, Receiver and Queue address the delivery.
	Signal, Receiver, Queue string
	// TaskID and EventID identify it, as on [Event].
	TaskID, EventID ulid.ULID
	// SentAt is when the event was sent.
	SentAt time.Time
	// Headers are the event's, as Send's middleware set them. Read only.
	Headers map[string]string
	// Resent reports a row enqueued before: repair is sending it again
	// because Redis lost its task or the worker running it died.
	Resent bool
	// Duplicate is set by next when Redis already held this task: an
	// earlier enqueue of the row, turned away by its task ID.
	Duplicate bool
}

// ReceiveInfo describes one run of a receiver to [Middleware.Receive].
type ReceiveInfo struct {
	// Signal, Receiver and Queue address the delivery.
	Signal, Receiver, Queue string
	// TaskID and EventID identify it, as on [Event]; zero when the task
	// cannot be decoded.
	TaskID, EventID ulid.ULID
	// Attempt is 1 on the first run; MaxRetry the receiver's retry budget.
	Attempt, MaxRetry int
	// SentAt is when the event was sent.
	SentAt time.Time
	// Headers are the event's, as Send's middleware set them. Read only.
	Headers map[string]string
	// Dead is set by next when this run's failure is final: why the
	// delivery is now dead.
	Dead DeadReason
}

// hook is one of a Middleware's fields, for the step whose info is I.
type hook[I any] func(ctx context.Context, info I, next func(context.Context) error) error

// The hooks of the three steps, for wrap to pick (Middleware.sendHook).
func (m Middleware) sendHook() hook[*SendInfo]       { return m.Send }
func (m Middleware) enqueueHook() hook[*EnqueueInfo] { return m.Enqueue }
func (m Middleware) receiveHook() hook[*ReceiveInfo] { return m.Receive }

// wrap runs step inside every middleware's hook that pick returns, the
// first outermost; a nil hook lets the step through.
func wrap[I any](ctx context.Context, mws []Middleware, pick func(Middleware) hook[I], info I, step func(context.Context) error) error {
	next := step
	for i := len(mws) - 1; i >= 0; i-- {
		if h := pick(mws[i]); h != nil {
			inner := next
			next = func(ctx context.Context) error { return h(ctx, info, inner) }
		}
	}
	return next(ctx)
}
