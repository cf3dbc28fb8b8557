package signals

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"runtime/debug"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/dj-signals/signals/internal/envelope"
	"github.com/dj-signals/signals/internal/limit"
)

// Event is what a receiver is called with: the decoded payload and the
// metadata of one delivery.
//
// Delivery is at least once, so a receiver may see the same Event more than
// once: use TaskID (one per event and receiver) or ID (one per event) as the
// idempotency key.
type Event[T any] struct {
	// Payload is the value passed to SendReliable, decoded from JSON.
	Payload T
	// ID identifies the event: one ULID per SendReliable call, shared by all
	// of its receivers.
	ID ulid.ULID
	// TaskID identifies this receiver's delivery of the event; it is also
	// the asynq task ID.
	TaskID ulid.ULID
	// Signal is the signal's name.
	Signal string
	// Receiver is the name the receiver was connected under.
	Receiver string
	// Attempt is 1 on the first delivery and grows by one per retry.
	Attempt int
	// SentAt is when SendReliable was called, to the millisecond.
	SentAt time.Time
	// CorrelationID is the ID of the root event of a cascade: the event
	// itself unless it was sent by a receiver.
	CorrelationID ulid.ULID
	// CausationID is the ID of the event whose receiver sent this one, or
	// the zero ULID for an event sent outside a receiver.
	CausationID ulid.ULID
	// Depth is 0 for an event sent outside a receiver and one more than its
	// cause's depth otherwise.
	Depth int
	// OrderingKey is the event's ordering key for this receiver ([OrderingKey],
	// [OrderBy]), or "" if its deliveries run in no particular order.
	OrderingKey string

	registry *Registry // where Once and Consume find the event; nil means DefaultRegistry
	xid      uint64    // the sending transaction's ID: with TaskID, the row's key; 0 if not delivered
}

// NewEvent builds the Event a receiver connected as receiver would get on
// the first delivery of payload, with fresh IDs. It is for calling a
// receiver directly, as tests do; [Once] accepts the result.
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

// ReceiverFunc handles one delivery of a signal. Returning nil marks it
// done; an error schedules a retry with backoff, unless it wraps
// [ErrPermanent] (see [Permanent]). It must be idempotent.
type ReceiverFunc[T any] func(ctx context.Context, e Event[T]) error

// The defaults of the receiver options of the same names.
const (
	defaultMaxRetries = 20
	defaultTimeout    = time.Minute
	defaultBackoffMin = time.Second
	defaultBackoffMax = time.Hour
)

type receiverOptions struct {
	orderBy    any // func(T) string of the signal's T, checked at Connect
	queue      string
	maxRetries int
	timeout    time.Duration
	backoffMin time.Duration
	backoffMax time.Duration
	limits     limit.Limits
}

// defaultReceiverOptions are the options of a receiver connected without
// any, its tasks going to queue.
func defaultReceiverOptions(queue string) receiverOptions {
	return receiverOptions{
		queue:      queue,
		maxRetries: defaultMaxRetries,
		timeout:    defaultTimeout,
		backoffMin: defaultBackoffMin,
		backoffMax: defaultBackoffMax,
	}
}

// ReceiverOption tunes one receiver at [Signal.Connect].
type ReceiverOption func(*receiverOptions) error

// Queue sets the asynq queue the receiver's tasks go to. Defaults to the
// registry's queue ([RegistryConfig].Queue), one per application. Workers
// serve the queues of every connected receiver unless [WorkerConfig].Queues
// says otherwise.
func Queue(name string) ReceiverOption {
	return func(o *receiverOptions) error {
		if err := envelope.ValidateQueue(name); err != nil {
			return err
		}
		o.queue = name
		return nil
	}
}

// MaxRetries sets how many times a failed run is retried before the task
// is dead-lettered; 0 means never retry. Defaults to 20.
func MaxRetries(n int) ReceiverOption {
	return func(o *receiverOptions) error {
		if n < 0 {
			return fmt.Errorf("%w: MaxRetries(%d) is negative", ErrInvalidConfig, n)
		}
		o.maxRetries = n
		return nil
	}
}

// Timeout bounds one run of the receiver: its ctx is canceled after d and
// the run counts as failed. Defaults to 1 minute.
//
// What it cannot do is stop a receiver that ignores its ctx: Go has no way
// to end a goroutine. Such a run goes on; its worker does not start the
// same delivery again while it does, but asynq gives up on the run at
// Timeout (rounded up to a whole second) and schedules a retry, which a
// worker in another process may start. Receivers should pass ctx to
// everything that blocks.
func Timeout(d time.Duration) ReceiverOption {
	return func(o *receiverOptions) error {
		if d < time.Millisecond {
			return fmt.Errorf("%w: Timeout(%v) is below 1ms", ErrInvalidConfig, d)
		}
		o.timeout = d
		return nil
	}
}

// Backoff sets the delays between a failed run and its retry. Retry n
// waits a delay drawn uniformly between half and all of min·2^(n-1),
// capped at max. Defaults to a min of 1 s and a max of 1 h: the first
// retry then comes 0.5–1 s after the failure, the 12th 17–34 min after
// it, and every one from the 13th 30–60 min after it. asynq keeps a retry's time to the whole second (it drops
// the fraction) and a Worker looks for due retries every
// [WorkerConfig].DelayedTaskCheckInterval, so a retry comes up to 1 s
// before its delay is over and up to that interval after: with
// Backoff(200ms, ...) the first retry may come at once.
func Backoff(min, max time.Duration) ReceiverOption {
	return func(o *receiverOptions) error {
		if min <= 0 || max < min {
			return fmt.Errorf("%w: Backoff(%v, %v) needs 0 < min <= max", ErrInvalidConfig, min, max)
		}
		o.backoffMin, o.backoffMax = min, max
		return nil
	}
}

// ConcurrencyLimit lets at most n runs of the receiver be under way at once,
// counted across every [Worker] that shares the Redis (and the registry's
// schema), however many processes run them. Defaults to no limit.
//
// A task that finds the limit reached does not run and holds no worker
// slot: it goes back to asynq's retry set to wait for its turn, and the
// worker takes other tasks meanwhile, so other receivers are not held back.
// Waiting is not a failure: it does not use up a retry, does not change
// [Event].Attempt, is not seen by [Middleware].Receive, is logged at debug
// level only, and never makes a dead letter. Waiting tasks go in the order
// they started waiting; each is told how long its turn is likely to take
// (from the runs' measured durations) and comes back about then, so a
// backlog costs Redis a few calls per task, not a call per task per poll.
// asynq keeps retry times to the whole second and a Worker looks for due
// retries every [WorkerConfig].DelayedTaskCheckInterval; so that a slot
// freeing between two looks is not wasted, a task whose turn comes before
// the next look waits for it in the worker, in at most 4 of a Worker's
// slots per limited receiver, and only while more than a quarter of the
// Worker's slots are free. While the Worker is busier, a waiting task comes
// back no sooner than a second later, leaving the Worker to work that can
// run. With [OrderBy], an event that waits holds back its key's later
// events, as a retry does.
//
// A run holds its slot until its receiver returns. The slot of a worker
// that dies mid-run frees itself after the receiver's [Timeout] plus 10s.
// As with OrderBy, the limit rests on runs ending by their Timeout: a
// receiver that ignores its ctx past Timeout plus 10s no longer counts.
// Workers enforce limits (signalstest.Drain's too); signalstest.Eager,
// which runs receivers in the test's process, ignores them. A limited
// receiver's tasks carry one asynq retry more than its [MaxRetries], so
// that a wait on the last attempt is rescheduled rather than archived; the
// Worker still runs a failing receiver MaxRetries+1 times. ConcurrencyLimit
// returns an error for n below 1.
func ConcurrencyLimit(n int) ReceiverOption {
	return func(o *receiverOptions) error {
		if n < 1 {
			return fmt.Errorf("%w: ConcurrencyLimit(%d) is below 1", ErrInvalidConfig, n)
		}
		o.limits.Concurrency = n
		return nil
	}
}

// RateLimit lets runs of the receiver start at most perSecond times per
// second on average, counted across every [Worker] that shares the Redis
// (and the registry's schema), with at most burst of them at once after an
// idle spell: a token bucket holding burst tokens, refilled at perSecond,
// each run taking one when it starts. Defaults to no limit. It combines
// with [ConcurrencyLimit]: a run then needs both a slot and a token.
//
// A task that finds no token waits as [ConcurrencyLimit] describes:
// without holding a worker slot, without counting as a failure or using a
// retry, and without ever being dead-lettered for waiting. Measured with
// 4 worker processes, RateLimit(50, 5) started 49.8 to 50.3 runs/s over
// 10s. The receiver shares its queue's workers with the other receivers:
// while they are busy with a backlog, its waiting tasks queue behind it
// and fewer tokens are used; give it a [Queue] of its own if it must keep
// its rate whatever else runs. RateLimit returns an error for a perSecond
// that is not above 0 and finite, or a burst below 1.
func RateLimit(perSecond float64, burst int) ReceiverOption {
	return func(o *receiverOptions) error {
		if !(perSecond > 0) || math.IsInf(perSecond, 0) || burst < 1 {
			return fmt.Errorf("%w: RateLimit(%v, %d) needs a finite rate above 0 and a burst of at least 1", ErrInvalidConfig, perSecond, burst)
		}
		o.limits.Rate, o.limits.Burst = perSecond, burst
		return nil
	}
}

// OrderBy gives each event of the receiver the ordering key key(payload):
// the receiver runs the events of one key one at a time, in commit order
// (see [OrderingKey] for what that means exactly), while events of
// different keys run in parallel. An empty key means no order for that
// event. A key given at send time with the [OrderingKey] option takes
// precedence. Keys are UTF-8 text of at most 512 bytes, without NUL:
// SendReliable refuses an event whose key is not. key runs inside
// SendReliable and must not panic. Connect fails if key's parameter is not
// the signal's payload type.
//
// A failing event holds back the later events of its key, and only those,
// until it succeeds or is dead (after its retries, or at once for a
// [Permanent] error); then the key moves on to its next event. With the
// default [MaxRetries], [Backoff] and [Timeout], an event that fails every
// run holds its key for 4.6 to 9.1 hours of backoff plus its 21 runs (up to
// 21 minutes if each runs into the Timeout): lower MaxRetries or Backoff's
// max for keys that must not wait that long, and watch
// [ReceiverStats].HeldKeys. An event waiting for its [At] holds back its
// key until it has run. Requeuing a dead letter
// ([Ledger.RequeueDead]) puts it back in its old place: it runs before the
// key's events that are still pending.
//
// "One at a time" rests on the receiver's run ending by its [Timeout]: a
// receiver that ignores its ctx may still run when the key's next event
// starts. A worker that dies after a success and before recording it
// holds the key until the Dispatcher's repair finds the task completed
// ([DispatcherConfig].RepairAge). See the README's "Per-key ordering" for
// what ordering costs.
func OrderBy[T any](key func(payload T) string) ReceiverOption {
	return func(o *receiverOptions) error {
		if key == nil {
			return fmt.Errorf("%w: OrderBy(nil)", ErrInvalidConfig)
		}
		o.orderBy = key
		return nil
	}
}

// Permanent marks err as a failure that retrying cannot fix: the task is
// dead-lettered at once with err as its reason. The result matches both
// [ErrPermanent] and err with errors.Is. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

type permanentError struct{ err error }

func (e *permanentError) Error() string   { return "permanent: " + e.err.Error() }
func (e *permanentError) Unwrap() []error { return []error{ErrPermanent, e.err} }

// delivery is one decoded task, ready for its receiver.
type delivery struct {
	meta    envelope.Meta
	attempt int
	payload []byte
}

// deliver decodes d into the signal's Event and calls its receiver, bounded
// by the receiver's Timeout.
func (s *Signal[T]) deliver(ctx context.Context, d delivery) error {
	s.mu.RLock()
	rc := s.receivers[d.meta.Receiver]
	s.mu.RUnlock()
	if rc == nil {
		return fmt.Errorf("%w: signal %q has no receiver %q in this worker: connect it in every worker binary",
			errUnknownReceiver, s.name, d.meta.Receiver)
	}
	body, err := s.reg.decodePayload(d.payload)
	if err != nil {
		return fmt.Errorf("%w: payload of signal %q for receiver %q: %w", errUndecodable, s.name, d.meta.Receiver, err)
	}
	var payload T
	if err := json.Unmarshal(body, &payload); err != nil {
		return fmt.Errorf("%w: payload of signal %q for receiver %q: %w", errUndecodable, s.name, d.meta.Receiver, err)
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

func (p *panicError) Error() string { return fmt.Sprintf("%v: %v", errReceiverPanic, p.value) }
func (p *panicError) Unwrap() error { return errReceiverPanic }

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
