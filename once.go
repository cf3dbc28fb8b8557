package signals

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"

	"github.com/dj-signals/signals/internal/store"
)

// Once makes a receiver's database effects happen once per event and
// receiver, however many times the event is delivered. Call it first inside
// the receiver's own transaction and apply the effects only when it returns
// true:
//
//	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
//		first, err := signals.Once(ctx, tx, e)
//		if err != nil || !first {
//			return err // already applied by an earlier delivery
//		}
//		return repo.RecordReceipt(ctx, tx, e.Payload.OrderID)
//	})
//
// It records e.TaskID in the inbox table of the schema of the registry that
// delivered e ([DefaultRegistry] for an Event built by hand rather than by
// a delivery or [Signal.NewEvent]). If the transaction rolls back, the
// record goes with it and a retry applies the effects again; a concurrent delivery of the same event waits on the first
// one's transaction and then returns false. Effects outside the database
// (an HTTP call, an email) are not covered: make those idempotent with
// e.TaskID as the key.
//
// Inbox rows are kept; delete old ones (by processed_at) on your schedule.
func Once[T any](ctx context.Context, tx pgx.Tx, e Event[T]) (bool, error) {
	if tx == nil {
		return false, ErrNilTx
	}
	if e.TaskID == (ulid.ULID{}) {
		return false, fmt.Errorf("%w: Once needs the event's TaskID: pass the Event the receiver was given, or one from Signal.NewEvent", ErrInvalidEvent)
	}
	reg := e.registry
	if reg == nil {
		reg = DefaultRegistry
	}
	first, err := reg.queries.Once(ctx, tx, e.TaskID, e.ID, e.Signal, e.Receiver)
	if store.TablesMissing(err) {
		return false, fmt.Errorf("signals: record task %s in the inbox: %w", e.TaskID, missingTables(reg.Schema(), err))
	}
	if err != nil {
		return false, fmt.Errorf("signals: record task %s in the inbox: %w", e.TaskID, err)
	}
	return first, nil
}
