package signals

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"

	"github.com/dj-signals/signals/internal/backoff"
	"github.com/dj-signals/signals/internal/envelope"
	"github.com/dj-signals/signals/internal/kithook"
	"github.com/dj-signals/signals/internal/leasewatch"
	"github.com/dj-signals/signals/internal/limit"
	"github.com/dj-signals/signals/internal/store"
	"github.com/dj-signals/signals/internal/throttle"
)

// deliverer runs a Worker's deliveries, one task at a time, top to bottom:
// decode the task, look up its receiver, call it inside the registry's
// middleware, classify what it returned, and log a failure once. Each run
// comes to one outcome, which the Worker records in the ledger.
type deliverer struct {
	reg      *Registry
	log      *slog.Logger
	limiter  *limit.Limiter   // nil: limits are not enforced (signalstest.Eager)
	limitLog *throttle.Logger // the limiter's Redis errors, which repeat while Redis is down
	seats    *limitSeats      // where runs whose turn is near wait in the handler
}

// attempt places one run among the runs of its delivery.
type attempt struct {
	taskID   string // the task's ID, which is its row's ID
	queue    string
	retried  int // runs before this one
	maxRetry int // the run after maxRetry retries is the last
}

// attemptOf reads a run's place from the ctx asynq gives a handler.
func attemptOf(ctx context.Context) attempt {
	var at attempt
	at.taskID, _ = asynq.GetTaskID(ctx)
	at.queue, _ = asynq.GetQueueName(ctx)
	at.retried, _ = asynq.GetRetryCount(ctx)
	at.maxRetry, _ = asynq.GetMaxRetry(ctx)
	return at
}

// outcome is what one run of a task came to.
type outcome struct {
	row      store.Ref  // the outbox row; a zero ID if the task's ID cannot be read
	enqueued time.Time  // when the relay enqueued it; zero if unknown
	ordered  bool       // the row has an ordering key: its outcome frees the key's next row
	consumed bool       // the receiver removed the row itself, with Consume: nothing to ack
	attempt  int        // 1 on the first run
	dead     DeadReason // set when the delivery failed for good
	err      error      // as asynq must see it: nil, retry, or SkipRetry
}

// deliver runs t's receiver and says what the run came to.
func (d deliverer) deliver(ctx context.Context, t *asynq.Task, at attempt) outcome {
	meta, decodeErr := envelope.Decode(t.Type(), t.Headers())
	rowID, _ := envelope.RowID(at.taskID)
	o := outcome{
		row: store.Ref{XID: meta.XID, ID: rowID}, enqueued: meta.EnqueuedAt,
		ordered: meta.OrderingKey != "", attempt: at.retried + 1,
	}
	if decodeErr == nil && meta.Schema != "" && meta.Schema != d.reg.cfg.Schema {
		// Another registry's Dispatcher enqueued it to a queue this registry
		// serves too. Neither run it nor record anything in this outbox: the
		// row is in the other one, whose Worker takes the task on a retry.
		err := fmt.Errorf("signals: task %s of the registry on schema %q reached a worker of the registry on schema %q: both use queue %q; give each registry queues of its own (RegistryConfig.Queue); the task is retried for a worker of its own registry",
			at.taskID, meta.Schema, d.reg.cfg.Schema, at.queue)
		d.log.ErrorContext(ctx, "signals: task of another registry's outbox not run", "signal", meta.Signal, "receiver", meta.Receiver, "error", err)
		return outcome{err: err, attempt: o.attempt}
	}
	h := d.reg.lookup(meta.Signal) // the task's signal, looked up once; nil if unknown here
	if decodeErr == nil {
		permit, err := d.admit(ctx, h, meta, &at)
		if err != nil {
			return outcome{err: err, attempt: o.attempt}
		}
		defer d.release(ctx, meta, permit)
	}
	consumed := new(atomic.Bool)
	ctx = context.WithValue(ctx, consumedKey{}, consumed)
	step := func(ctx context.Context) error {
		err := decodeErr
		if err != nil {
			err = fmt.Errorf("%w: %w", errUndecodable, err)
		} else {
			err = d.call(ctx, h, meta, t.Payload(), o.attempt)
		}
		if err != nil && errors.Is(context.Cause(ctx), leasewatch.ErrLost) {
			// Stopped by the lease watch, which logs it: no failure.
			o.err = fmt.Errorf("%w (the receiver returned: %w)", leasewatch.ErrLost, err)
			return o.err
		}
		if err != nil {
			o.dead = deadReason(err, at.retried >= at.maxRetry)
			o.err = d.failed(ctx, meta, rowID, o, at.maxRetry, err)
		}
		return err
	}
	if mws := d.reg.wraps(); len(mws) == 0 {
		_ = step(ctx) // the outcome is in o
	} else {
		info := &ReceiveInfo{
			Signal: meta.Signal, Receiver: meta.Receiver, Queue: at.queue,
			TaskID: meta.TaskID, EventID: meta.EventID,
			Attempt: o.attempt, MaxRetry: at.maxRetry,
			SentAt:  time.UnixMilli(int64(meta.EventID.Time())),
			Headers: meta.Headers,
		}
		_ = wrap(ctx, mws, Middleware.receiveHook, info, func(ctx context.Context) error {
			err := step(ctx)
			info.Dead = o.dead
			return err
		})
	}
	o.consumed = consumed.Load()
	return o
}

// call hands a decoded task to its signal h, which calls the receiver.
func (d deliverer) call(ctx context.Context, h handle, meta envelope.Meta, payload []byte, attempt int) error {
	if h == nil {
		return fmt.Errorf("%w: no signal %q is registered in this worker: register it and connect its receivers in every worker binary",
			errUnknownReceiver, meta.Signal)
	}
	return h.deliver(ctx, delivery{meta: meta, attempt: attempt, payload: payload})
}

// failed logs a run's failure, once, and returns the error as asynq must
// see it: a dead delivery's wraps asynq.SkipRetry.
func (d deliverer) failed(ctx context.Context, meta envelope.Meta, rowID ulid.ULID, o outcome, maxRetry int, err error) error {
	attrs := []any{"signal", meta.Signal, "receiver", meta.Receiver, "event_id", idOrNil(meta.EventID), "task_id", idOrNil(rowID), "attempt", o.attempt, "error", err}
	var p *panicError
	if errors.As(err, &p) {
		attrs = append(attrs, "stack", p.stack)
	}
	if o.dead == "" {
		d.log.WarnContext(ctx, "signals: receiver failed; will retry", append(attrs, "max_retry", maxRetry)...)
		return err
	}
	d.log.ErrorContext(ctx, "signals: receiver failed for good; delivery is dead", append(attrs, "reason", o.dead)...)
	return deadLetter{err}
}

// retryDelay is the Worker's asynq.RetryDelayFunc: each receiver's
// [Backoff], the wait the limiter suggested for a task waiting for its
// receiver's limits, or a second for a run the lease watch stopped.
func (d deliverer) retryDelay(retried int, err error, t *asynq.Task) time.Duration {
	var w *limitWait
	if errors.As(err, &w) {
		return w.wait
	}
	if errors.Is(err, leasewatch.ErrLost) {
		return time.Second // the Dispatcher takes it back first, unless this worker's Redis came back
	}
	o := defaultReceiverOptions("")
	if meta, err := envelope.Decode(t.Type(), t.Headers()); err == nil {
		if ro, ok := options(d.reg.lookup(meta.Signal), meta.Receiver); ok {
			o = ro
		}
	}
	return backoff.Delay(retried+1, o.backoffMin, o.backoffMax)
}

// options returns the options of receiver of h's signal, if this worker
// knows them.
func options(h handle, receiver string) (receiverOptions, bool) {
	if h != nil {
		return h.receiverOptions(receiver)
	}
	return receiverOptions{}, false
}

// limitWait is the error of a run turned away by its receiver's limits
// ([ConcurrencyLimit], [RateLimit]): the receiver did not run. It is no
// failure: asynq reschedules the task after wait without counting a retry
// (isFailure), and nothing is logged above debug or recorded in the outbox.
type limitWait struct{ wait time.Duration }

func (w *limitWait) Error() string {
	return fmt.Sprintf("signals: receiver limit reached; waiting about %v for a turn (not a failure)", w.wait.Round(time.Millisecond))
}

// isFailure is the Worker's asynq IsFailure: every error but a wait for a
// limit and a run the lease watch stopped counts as a failed attempt.
func isFailure(err error) bool {
	var w *limitWait
	return !errors.As(err, &w) && !errors.Is(err, leasewatch.ErrLost)
}

// limitHandlerWait bounds each wait admit does inside the handler, for a
// run asynq cannot reschedule without archiving it.
const limitHandlerWait = time.Second

// admit takes a slot and a token for a run of a limited receiver; the
// zero Permit for an unlimited one. It returns a *limitWait when the run
// must wait for its turn.
//
// It also sets at.maxRetry to the receiver's own budget: Connect gives a
// limited receiver's tasks one asynq retry more than its MaxRetries, since
// asynq archives a task rescheduled after its last retry even when the
// reason is no failure. Only a task without that headroom (enqueued before
// the receiver was limited, or run past its budget after a lease expiry)
// waits inside the handler, holding its worker slot: asynq cannot
// reschedule it.
func (d deliverer) admit(ctx context.Context, h handle, meta envelope.Meta, at *attempt) (limit.Permit, error) {
	o, ok := options(h, meta.Receiver)
	if !ok || !o.limits.Limited() {
		return limit.Permit{}, nil
	}
	reschedulable := at.retried < at.maxRetry
	if at.maxRetry == o.maxRetries+1 {
		at.maxRetry = o.maxRetries
	}
	if d.limiter == nil {
		return limit.Permit{}, nil
	}
	key := limit.Key{Schema: d.reg.cfg.Schema, Signal: meta.Signal, Receiver: meta.Receiver}
	seatUntil := time.Now().Add(d.seats.within)
	var seat func()
	defer func() {
		if seat != nil {
			seat()
		}
	}()
	for {
		permit, wait, err := d.limiter.Acquire(ctx, key, meta.TaskID.String(), o.limits, limit.Lease(meta.Timeout))
		switch {
		case err != nil:
			d.limitLog.Log(slog.LevelWarn, "signals: check a receiver's limits in Redis; its task waits", "signal", meta.Signal, "receiver", meta.Receiver, "error", err)
			wait = time.Second
		case wait == 0:
			return permit, nil
		}
		soon := err == nil && time.Now().Add(wait).Before(seatUntil)
		if seat == nil && soon && reschedulable {
			seat = d.seats.take(key)
		}
		if seat == nil || !soon {
			d.log.DebugContext(ctx, "signals: receiver limit reached; task waits", "signal", meta.Signal, "receiver", meta.Receiver,
				"task_id", meta.TaskID.String(), "wait", wait)
			if reschedulable {
				if d.seats.crowded() {
					// A turn due within the second would bring the task
					// back at every look for due retries, taking a busy
					// Worker's time from work that can run.
					wait = max(wait, limitCrowdedWait)
				}
				return limit.Permit{}, &limitWait{wait: wait}
			}
			wait = min(wait, limitHandlerWait)
		}
		select {
		case <-ctx.Done():
			return limit.Permit{}, &limitWait{wait: wait}
		case <-time.After(wait):
		}
	}
}

// limitCrowdedWait is the shortest wait of a task turned away by its
// limit while its Worker is busy.
const limitCrowdedWait = time.Second

// limitSeatsPerReceiver is how many runs of one limited receiver may wait
// inside a Worker's handlers at once, holding their worker slots.
const limitSeatsPerReceiver = 4

// limitSeats are the few worker slots in which a limited receiver's runs
// whose turn comes before the next look for due retries wait for it,
// rather than go back to asynq: asynq keeps a retry's time to the whole
// second and moves due retries only every DelayedTaskCheckInterval, so a
// slot or token that frees between two looks would otherwise go unused
// until the next one. Each receiver has limitSeatsPerReceiver of them, so a
// limited receiver never holds more of a Worker's slots than that while its
// tasks wait, each for less than within; and none is given while a quarter
// of the Worker's slots or fewer are free, so that a busy Worker's slots go
// to work that can run.
type limitSeats struct {
	within time.Duration // the longest a seat is held: one DelayedTaskCheckInterval
	busy   *atomic.Int64 // the Worker's running handlers; nil: no check
	most   int64         // seats are given only while busy is at most this
	mu     sync.Mutex
	taken  map[limit.Key]int
}

// newLimitSeats returns the seats of a Worker running up to concurrency
// handlers at once, busy of them now.
func newLimitSeats(within time.Duration, concurrency int, busy *atomic.Int64) *limitSeats {
	return &limitSeats{within: within, busy: busy, most: int64(concurrency - (concurrency+3)/4), taken: map[limit.Key]int{}}
}

// crowded reports whether the Worker is too busy to give seats.
func (s *limitSeats) crowded() bool {
	return s.busy != nil && s.busy.Load() > s.most
}

// take returns the func that gives back a seat of key's receiver, or nil
// if its seats are all taken or the Worker is crowded.
func (s *limitSeats) take(key limit.Key) func() {
	if s.crowded() {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.taken[key] >= limitSeatsPerReceiver {
		return nil
	}
	s.taken[key]++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.taken[key]--; s.taken[key] == 0 {
			delete(s.taken, key)
		}
	}
}

// release gives a run's slot back once its receiver returned. A release
// that fails leaves the slot taken until its lease expires.
func (d deliverer) release(ctx context.Context, meta envelope.Meta, p limit.Permit) {
	if !p.Held() {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := p.Release(rctx); err != nil {
		d.limitLog.Log(slog.LevelWarn, "signals: release a receiver's concurrency slot; it frees itself when its lease expires",
			"signal", meta.Signal, "receiver", meta.Receiver, "error", err)
	}
}

// deadReason says why a failed delivery is dead, or "" if it is to be
// retried. A retry is bound to fail the same way for a permanent error, an
// undecodable task and a too deep cascade (the depth travels with the
// task); an unknown signal or receiver is retried, for a newer worker to
// take, until the retries run out.
func deadReason(err error, lastAttempt bool) DeadReason {
	switch {
	case errors.Is(err, errUndecodable):
		return ReasonUndecodable
	case errors.Is(err, errCascadeTooDeep):
		return ReasonCascadeTooDeep
	case errors.Is(err, ErrPermanent):
		return ReasonPermanent
	case !lastAttempt:
		return ""
	case errors.Is(err, errUnknownReceiver):
		return ReasonUnknownReceiver
	}
	return ReasonRetriesExhausted
}

// deadLetter tells asynq not to retry while keeping err's text as the
// archived task's reason, should the Worker fail to record the dead letter
// (else it tells asynq the task is done).
type deadLetter struct{ err error }

func (d deadLetter) Error() string   { return d.err.Error() }
func (d deadLetter) Unwrap() []error { return []error{d.err, asynq.SkipRetry} }

// idOrNil logs a missing ID (an undecodable task's) as nothing rather than
// as a string of zeros.
func idOrNil(id ulid.ULID) any {
	if id == (ulid.ULID{}) {
		return nil
	}
	return id.String()
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

// quiet is the logger of deliveries run by signalstest.Eager, which
// returns their errors to the test instead.
var quiet = slog.New(slog.DiscardHandler)

func init() {
	kithook.Deliver = func(ctx context.Context, reg any, t *asynq.Task, taskID, queue string, attemptN, maxRetry int) (string, error) {
		o := deliverer{reg: reg.(*Registry), log: quiet}.deliver(ctx, t, attempt{taskID: taskID, queue: queue, retried: attemptN - 1, maxRetry: maxRetry})
		return string(o.dead), o.err
	}
}
