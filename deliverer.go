package signals

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"

	"github.com/dj-signals/signals/internal/backoff"
	"github.com/dj-signals/signals/internal/envelope"
	"github.com/dj-signals/signals/internal/kithook"
	"github.com/dj-signals/signals/internal/store"
)

// deliverer runs a Worker's deliveries, one task at a time, top to bottom:
// decode the task, look up its receiver, call it inside the registry's
// middleware, classify what it returned, and log a failure once. Each run
// comes to one outcome, which the Worker records in the ledger.
type deliverer struct {
	reg *Registry
	log *slog.Logger
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
	consumed := new(atomic.Bool)
	ctx = context.WithValue(ctx, consumedKey{}, consumed)
	step := func(ctx context.Context) error {
		err := decodeErr
		if err != nil {
			err = fmt.Errorf("%w: %w", ErrUndecodable, err)
		} else {
			err = d.call(ctx, meta, t.Payload(), o.attempt)
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
		_ = wrap(ctx, mws, Middleware.Receive, info, func(ctx context.Context) error {
			err := step(ctx)
			info.Dead = o.dead
			return err
		})
	}
	o.consumed = consumed.Load()
	return o
}

// call hands a decoded task to its signal, which calls the receiver.
func (d deliverer) call(ctx context.Context, meta envelope.Meta, payload []byte, attempt int) error {
	h := d.reg.lookup(meta.Signal)
	if h == nil {
		return fmt.Errorf("%w: no signal %q is registered in this worker: register it and connect its receivers in every worker binary",
			ErrUnknownReceiver, meta.Signal)
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
// [Backoff].
func (d deliverer) retryDelay(retried int, _ error, t *asynq.Task) time.Duration {
	o := defaultReceiverOptions("")
	if meta, err := envelope.Decode(t.Type(), t.Headers()); err == nil {
		if h := d.reg.lookup(meta.Signal); h != nil {
			if ro, ok := h.receiverOptions(meta.Receiver); ok {
				o = ro
			}
		}
	}
	return backoff.Delay(retried+1, o.backoffMin, o.backoffMax)
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
