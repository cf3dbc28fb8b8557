package signals

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"

	"github.com/dj-signals/signals/internal/store"
)

// Consume makes a receiver's database effects happen exactly once per
// event and receiver, with no write of their own: it removes the
// delivery's row from the outbox inside the receiver's transaction. Call
// it first in that transaction and apply the effects only when it returns
// true:
//
//	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
//		mine, err := signals.Consume(ctx, tx, e)
//		if err != nil || !mine {
//			return err // applied by an earlier delivery of the event
//		}
//		return repo.RecordReceipt(ctx, tx, e.Payload.OrderID)
//	})
//
// While the row exists, the effects have not been applied; when tx commits,
// the row is gone: the delivery is done (the Worker, given the receiver's
// ctx here, sends no ack of its own) and every later delivery of the event, after a Redis
// that lost its data, a worker that died after the commit or a requeue,
// gets false. If tx rolls back, the row stays and a retry applies the
// effects. A concurrent delivery of the same event waits for tx and then
// gets false, or true if tx rolled back. For a receiver with an ordering
// key, the key's next event may start once tx commits.
//
// e must be the Event the receiver was given: its row is found by the
// event's transaction and task IDs, in the schema of the registry that
// delivered it. An Event from [Signal.NewEvent] has no row; Consume then
// records it in the inbox, as [Once] does, so a test that calls a receiver
// directly sees the same once-only behaviour. Effects outside the database
// (an HTTP call, an email) are not covered: make those idempotent with
// e.TaskID as the key.
func Consume[T any](ctx context.Context, tx pgx.Tx, e Event[T]) (bool, error) {
	if e.xid == 0 {
		return Once(ctx, tx, e)
	}
	if tx == nil {
		return false, errNilTx
	}
	reg := e.registry
	if reg == nil {
		reg = DefaultRegistry
	}
	mine, err := reg.queries.Consume(ctx, tx, store.Ref{XID: e.xid, ID: e.TaskID})
	if err != nil {
		return false, fmt.Errorf("signals: consume delivery %s: %w", e.TaskID, reg.explain(err))
	}
	if mine {
		consumedRow(ctx) // the Worker need not ack it
	}
	return mine, nil
}

// Once makes a receiver's database effects happen once per event and
// receiver by recording the delivery in an inbox table, inside the
// receiver's transaction; it is used as [Consume] is, and returns true for
// the delivery that applies the effects. Prefer Consume: it records nothing
// (the delivery's own row is its inbox) and, when the transaction commits,
// the delivery is done at once, where Once costs an inbox row kept after
// the event and the Worker's ack on top. Once suits a receiver whose
// effects live in another database than the outbox's, or code written
// for it before Consume.
//
// It records e.TaskID in the inbox table of the schema of the registry that
// delivered e ([DefaultRegistry] for an Event built by hand rather than by
// a delivery or [Signal.NewEvent]). If the transaction rolls back, the
// record goes with it and a retry applies the effects again; a concurrent
// delivery of the same event waits on the first one's transaction and then
// returns false. Inbox rows are kept: remove those older than your longest
// redelivery window with [Ledger.PruneInbox] or `signals inbox prune`.
func Once[T any](ctx context.Context, tx pgx.Tx, e Event[T]) (bool, error) {
	if tx == nil {
		return false, errNilTx
	}
	if e.TaskID == (ulid.ULID{}) {
		return false, fmt.Errorf("%w: Once needs the event's TaskID: pass the Event the receiver was given, or one from Signal.NewEvent", ErrInvalidEvent)
	}
	reg := e.registry
	if reg == nil {
		reg = DefaultRegistry
	}
	first, err := reg.queries.Once(ctx, tx, e.TaskID, e.ID, e.Signal, e.Receiver)
	if err != nil {
		return false, fmt.Errorf("signals: record task %s in the inbox: %w", e.TaskID, reg.explain(err))
	}
	return first, nil
}
