package signals

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"

	"github.com/dj-signals/signals/internal/backoff"
	"github.com/dj-signals/signals/internal/envelope"
	"github.com/dj-signals/signals/internal/store"
)

// TaskTypePrefix starts the asynq task type of every signal task, which is
// TaskTypePrefix + signal + ":" + receiver. Mount a [Registry] in your own
// asynq server with mux.Handle(signals.TaskTypePrefix, registry).
const TaskTypePrefix = "signals:"

// ProcessTask runs the receiver a signal task is addressed to, so a
// [Registry] is an asynq.Handler for teams that run their own asynq server.
// A receiver error is returned for asynq to retry. A task that retrying
// cannot help — a [Permanent] error, an undecodable task, a cascade beyond
// MaxDepth — is returned wrapping asynq.SkipRetry, so asynq archives it at
// once with the error as its reason. A task whose signal or receiver this
// registry does not know is retried: during a rolling deploy, a newer
// worker knows it.
//
// Mounted this way, nothing records outcomes in the outbox: rows stay until
// the Dispatcher's repair finds their tasks completed or archived in Redis
// (after [DispatcherConfig].RepairAge). A [Worker] records them at once.
func (r *Registry) ProcessTask(ctx context.Context, t *asynq.Task) error {
	return r.run(ctx, t).err
}

// ran is what one run of a task came to, for the ledger.
type ran struct {
	row      store.Ref  // the outbox row; a zero ID if the task's ID cannot be read
	enqueued time.Time  // when the relay enqueued it; zero if unknown
	ordered  bool       // the row has an ordering key: its outcome frees the key's next row
	consumed bool       // the receiver removed the row itself, with Consume: nothing to ack
	attempt  int        // 1 on the first run
	dead     DeadReason // set when the delivery failed for good
	err      error      // as asynq must see it: nil, retry, or SkipRetry
}

// run runs t's receiver inside the registry's middleware, logs a failure,
// and says what the run came to.
func (r *Registry) run(ctx context.Context, t *asynq.Task) ran {
	id, _ := asynq.GetTaskID(ctx)
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	res := ran{attempt: retried + 1}
	consumed := new(atomic.Bool)
	ctx = context.WithValue(ctx, consumedKey{}, consumed)
	rowID, _ := envelope.RowID(id)
	meta, decodeErr := envelope.Decode(t.Type(), t.Headers())
	res.row, res.enqueued = store.Ref{XID: meta.XID, ID: rowID}, meta.EnqueuedAt
	if decodeErr == nil && meta.Schema != "" && meta.Schema != r.cfg.Schema {
		// Another registry's Dispatcher enqueued it to a queue this registry
		// serves too. Neither run it nor record anything in this outbox: the
		// row is in the other one, whose Worker takes the task on a retry.
		res.err = fmt.Errorf("signals: task %s of the registry on schema %q reached a worker of the registry on schema %q: both use queue %q; give each registry queues of its own (RegistryConfig.Queue); the task is retried for a worker of its own registry",
			id, meta.Schema, r.cfg.Schema, queueOf(ctx))
		r.log().ErrorContext(ctx, "signals: task of another registry's outbox not run", "signal", meta.Signal, "receiver", meta.Receiver, "error", res.err)
		return ran{err: res.err, attempt: res.attempt}
	}
	res.ordered = meta.OrderingKey != ""
	step := func(ctx context.Context) error {
		err := decodeErr
		if err != nil {
			err = fmt.Errorf("%w: %w", ErrUndecodable, err)
		} else {
			err = r.process(ctx, meta, t.Payload(), res.attempt)
		}
		if err == nil {
			return nil
		}
		attrs := []any{"signal", meta.Signal, "receiver", meta.Receiver, "event_id", idOrNil(meta.EventID), "task_id", idOrNil(rowID), "attempt", res.attempt, "error", err}
		var p *panicError
		if errors.As(err, &p) {
			attrs = append(attrs, "stack", p.stack)
		}
		if res.dead = deadReason(err, retried >= maxRetry); res.dead != "" {
			r.log().ErrorContext(ctx, "signals: receiver failed for good; delivery is dead", append(attrs, "reason", res.dead)...)
			res.err = deadLetter{err}
		} else {
			r.log().WarnContext(ctx, "signals: receiver failed; will retry", append(attrs, "max_retry", maxRetry)...)
			res.err = err
		}
		return err
	}
	mws := r.wraps()
	if len(mws) == 0 {
		_ = step(ctx) // the outcome is in res
		res.consumed = consumed.Load()
		return res
	}
	info := &ReceiveInfo{
		Signal: meta.Signal, Receiver: meta.Receiver, Queue: queueOf(ctx),
		TaskID: meta.TaskID, EventID: meta.EventID,
		Attempt: res.attempt, MaxRetry: maxRetry,
		SentAt:  time.UnixMilli(int64(meta.EventID.Time())),
		Headers: meta.Headers,
	}
	_ = wrap(ctx, mws, Middleware.Receive, info, func(ctx context.Context) error {
		err := step(ctx)
		info.Dead = res.dead
		return err
	})
	res.consumed = consumed.Load()
	return res
}

// queueOf returns the queue of the task being run.
func queueOf(ctx context.Context) string {
	q, _ := asynq.GetQueueName(ctx)
	return q
}

// idOrNil logs a missing ID (an undecodable task's) as nothing rather than
// as a string of zeros.
func idOrNil(id ulid.ULID) any {
	if id == (ulid.ULID{}) {
		return nil
	}
	return id.String()
}

// deadReason says why a failed delivery is dead, or "" if it is to be
// retried. A retry is bound to fail the same way for a permanent error, an
// undecodable task and a too deep cascade (the depth travels with the
// task); an unknown signal or receiver is retried, for a newer worker to
// take, until the retries run out.
func deadReason(err error, lastAttempt bool) DeadReason {
	switch {
	case errors.Is(err, ErrUndecodable):
		return ReasonUndecodable
	case errors.Is(err, ErrCascadeTooDeep):
		return ReasonCascadeTooDeep
	case errors.Is(err, ErrPermanent):
		return ReasonPermanent
	case !lastAttempt:
		return ""
	case errors.Is(err, ErrUnknownReceiver):
		return ReasonUnknownReceiver
	}
	return ReasonRetriesExhausted
}

// delivery is one decoded task, ready for its receiver.
type delivery struct {
	meta    envelope.Meta
	attempt int
	payload []byte
}

// process hands a decoded task to its signal.
func (r *Registry) process(ctx context.Context, meta envelope.Meta, payload []byte, attempt int) error {
	h := r.lookup(meta.Signal)
	if h == nil {
		return fmt.Errorf("%w: no signal %q is registered in this worker: register it and connect its receivers in every worker binary",
			ErrUnknownReceiver, meta.Signal)
	}
	return h.deliver(ctx, delivery{meta: meta, attempt: attempt, payload: payload})
}

// deliver decodes d into the signal's Event and calls its receiver, bounded
// by the receiver's Timeout.
func (s *Signal[T]) deliver(ctx context.Context, d delivery) error {
	s.mu.RLock()
	rc := s.receivers[d.meta.Receiver]
	s.mu.RUnlock()
	if rc == nil {
		return fmt.Errorf("%w: signal %q has no receiver %q in this worker: connect it in every worker binary",
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
		OrderingKey:   d.meta.OrderingKey,
		registry:      s.reg,
		xid:           d.meta.XID,
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
			err = &panicError{value: p, stack: boundedStack(debug.Stack())}
		}
	}()
	return fn(ctx, e)
}

// panicError is a receiver's recovered panic. Its message is short, for
// asynq's record and the dead letter; the stack goes to the log, once.
type panicError struct {
	value any
	stack string
}

func (p *panicError) Error() string { return fmt.Sprintf("%v: %v", ErrReceiverPanic, p.value) }
func (p *panicError) Unwrap() error { return ErrReceiverPanic }

// maxStack bounds the stack a panic logs: the receiver's frames are near
// the top, below the runtime's and call's own.
const maxStack = 4 << 10

// boundedStack drops the frames of the recovery itself (everything up to
// the runtime's panic) and cuts the rest at maxStack bytes.
func boundedStack(stack []byte) string {
	s := string(stack)
	if i := strings.Index(s, "\npanic("); i >= 0 {
		if j := strings.Index(s[i+1:], "\n"); j >= 0 {
			s = s[i+1+j+1:]
		}
	}
	if len(s) > maxStack {
		s = s[:maxStack] + "\n..."
	}
	return s
}

// consumedKey carries, to Consume, where to say that the receiver removed
// its delivery's row itself.
type consumedKey struct{}

// consumedRow tells the delivery under way in ctx, if any, that its row
// is gone: the receiver's Consume removed it.
func consumedRow(ctx context.Context) {
	if c, ok := ctx.Value(consumedKey{}).(*atomic.Bool); ok {
		c.Store(true)
	}
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

// deadLetter tells asynq not to retry while keeping err's text as the
// archived task's reason.
type deadLetter struct{ err error }

func (d deadLetter) Error() string   { return d.err.Error() }
func (d deadLetter) Unwrap() []error { return []error{d.err, asynq.SkipRetry} }

// RetryDelay is an asynq.RetryDelayFunc applying each receiver's [Backoff]
// option. [Worker] uses it; set asynq.Config.RetryDelayFunc to it when the
// registry runs in your own asynq server.
func (r *Registry) RetryDelay(retried int, _ error, t *asynq.Task) time.Duration {
	o := defaultReceiverOptions("")
	if meta, err := envelope.Decode(t.Type(), t.Headers()); err == nil {
		if h := r.lookup(meta.Signal); h != nil {
			if ro, ok := h.receiverOptions(meta.Receiver); ok {
				o = ro
			}
		}
	}
	return backoff.Delay(retried+1, o.backoffMin, o.backoffMax)
}
