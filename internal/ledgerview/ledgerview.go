// Package ledgerview reads what package dashboard shows of a ledger beyond
// signals.Ledger's public methods: an event as the ledger holds it, with
// each receiver's delivery, the events of its cascade, and how many dead
// letters a filter selects. It reads through what the *signals.Ledger it is
// given reads through (its pool, its registry's schema and Codec, its
// Redis), which package signals hands over through kithook.
package ledgerview

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/kithook"
	"github.com/dj-signals/signals/internal/store"
)

// DeliveryState says where one receiver's row of an event is in the ledger.
// A done delivery is not in the ledger: its row is deleted when its
// receiver succeeds.
type DeliveryState string

// The states of a delivery the ledger holds.
const (
	// Pending: committed, waiting for a Dispatcher to enqueue it (or, after
	// a failed enqueue, for its next try).
	Pending DeliveryState = "pending"
	// InFlight: enqueued; its receiver has not succeeded yet.
	InFlight DeliveryState = "in flight"
	// Dead: failed for good; see signals.DeadLetter.
	Dead DeliveryState = "dead"
)

// Delivery is one receiver's row of an event as the ledger holds it.
type Delivery struct {
	// TaskID is the delivery's ID, Event.TaskID to its receiver.
	TaskID ulid.ULID
	// Receiver and Queue address it.
	Receiver, Queue string
	// State says where it is.
	State DeliveryState
	// Attempts counts failed enqueues of a live row, and the failed
	// attempts of a dead one.
	Attempts int
	// Error is the last enqueue error of a live row, or a dead one's error.
	Error string
	// Reason says why a dead row died; empty for a live one.
	Reason signals.DeadReason
	// DueAt is when it asked to be delivered (At); EnqueuedAt its last
	// recorded enqueue (known for rows with an ordering key and dead rows);
	// RetryAt when a row that failed to enqueue is tried again; DeadAt when
	// it died. Each is zero when it does not apply.
	DueAt, EnqueuedAt, RetryAt, DeadAt time.Time
	// OrderingKey is the key that orders it, if any.
	OrderingKey string
}

// EventRecord is an event as the ledger holds it: its deliveries that are
// not done yet or are dead, with the event's payload and place in its
// cascade.
type EventRecord struct {
	// ID is the event's ID, Event.ID to its receivers.
	ID ulid.ULID
	// Signal names it.
	Signal string
	// SentAt is when it was sent.
	SentAt time.Time
	// CorrelationID is the ID of its cascade's first event (its own ID if it
	// started one); CausationID that of the event whose receiver sent it,
	// zero if none did; Depth how many events came before it in its cascade.
	CorrelationID, CausationID ulid.ULID
	Depth                      int
	// Payload is the event's JSON payload, decoded with the registry's
	// Codec; nil when Encoded.
	Payload json.RawMessage
	// Encoded says the payload is encoded and the ledger's registry has no
	// Codec for it (the signals command's, say).
	Encoded bool
	// Headers are the event's own, as middleware set them at send.
	Headers map[string]string
	// Deliveries are its rows, one per receiver not done yet, sorted by
	// receiver.
	Deliveries []Delivery
}

// rowLimit bounds the rows, live and dead each, that one event's or one
// cascade's lookup returns.
const rowLimit = 1000

// View reads one ledger. It is safe for concurrent use.
type View struct {
	l kithook.Ledger
}

// New returns the view of ledger.
func New(ledger *signals.Ledger) *View {
	return &View{l: kithook.LedgerOf(ledger)}
}

// Event returns the event that id names, an event's ID or one of its
// deliveries' task IDs, as the ledger holds it; nil when the ledger holds
// no row of it (never sent, or every receiver done). It reads each of the
// ledger's tables through once or twice, and Redis for the Dispatchers'
// position (without Redis, every live row counts as pending).
func (v *View) Event(ctx context.Context, id ulid.ULID) (*EventRecord, error) {
	pos, _ := v.l.Position(ctx) // without it, live rows read as pending
	rows, err := v.l.Queries.EventRows(ctx, v.l.DB, pos, id, rowLimit)
	if err == nil && len(rows) == 0 {
		var ev [16]byte
		var found bool
		if ev, found, err = v.l.Queries.EventOf(ctx, v.l.DB, id); err == nil && found {
			rows, err = v.l.Queries.EventRows(ctx, v.l.DB, pos, ev, rowLimit)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("signals: read event %s: %w", id, v.l.Explain(err))
	}
	events := v.records(rows)
	if len(events) == 0 {
		return nil, nil
	}
	return &events[0], nil
}

// Cascade returns the events of the cascade whose first event is
// correlationID (an EventRecord's CorrelationID), as far as the ledger
// holds them, sorted by ID: so sent first, first. It returns at most 1,000
// deliveries in flight or pending and 1,000 dead, and reads each of the
// ledger's tables through once.
func (v *View) Cascade(ctx context.Context, correlationID ulid.ULID) ([]EventRecord, error) {
	pos, _ := v.l.Position(ctx)
	rows, err := v.l.Queries.CascadeRows(ctx, v.l.DB, pos, correlationID, rowLimit)
	if err != nil {
		return nil, fmt.Errorf("signals: read cascade %s: %w", correlationID, v.l.Explain(err))
	}
	return v.records(rows), nil
}

// CountDead returns how many dead letters f selects, whatever its Limit.
// It reads every letter that matches: on a large ledger, narrow f.
func (v *View) CountDead(ctx context.Context, f signals.DeadFilter) (int, error) {
	sf, err := v.l.DeadFilter(f)
	if err != nil {
		return 0, err
	}
	n, err := v.l.Queries.CountDead(ctx, v.l.DB, sf)
	if err != nil {
		return 0, fmt.Errorf("signals: count dead letters: %w", v.l.Explain(err))
	}
	return int(n), nil
}

// records groups rows by event, sorted by event ID.
func (v *View) records(rows []store.EventRow) []EventRecord {
	byID := map[ulid.ULID]*EventRecord{}
	var order []ulid.ULID
	for _, r := range rows {
		id := ulid.ULID(r.EventID)
		e, ok := byID[id]
		if !ok {
			e = &EventRecord{
				ID: id, Signal: r.Signal, SentAt: time.UnixMilli(int64(id.Time())),
				CorrelationID: r.CorrelationID, Depth: r.Depth, Headers: r.Headers,
			}
			e.Payload, e.Encoded = v.l.Payload(r.Payload)
			if r.CausationID != nil {
				e.CausationID = *r.CausationID
			}
			byID[id] = e
			order = append(order, id)
		}
		e.Deliveries = append(e.Deliveries, deliveryOf(r))
	}
	slices.SortFunc(order, func(a, b ulid.ULID) int { return a.Compare(b) })
	out := make([]EventRecord, len(order))
	for i, id := range order {
		out[i] = *byID[id]
		slices.SortFunc(out[i].Deliveries, func(a, b Delivery) int {
			if c := strings.Compare(a.Receiver, b.Receiver); c != 0 {
				return c
			}
			return a.TaskID.Compare(b.TaskID)
		})
	}
	return out
}

// deliveryOf is r as a Delivery.
func deliveryOf(r store.EventRow) Delivery {
	d := Delivery{TaskID: r.ID, Receiver: r.Receiver, Queue: r.Queue, Attempts: r.Attempts, Reason: signals.DeadReason(r.Reason)}
	switch {
	case r.Dead:
		d.State = Dead
	case r.Pending:
		d.State = Pending
	default:
		d.State = InFlight
	}
	if r.LastError != nil {
		d.Error = *r.LastError
	}
	if r.OrderingKey != nil {
		d.OrderingKey = *r.OrderingKey
	}
	for dst, src := range map[*time.Time]*time.Time{&d.DueAt: r.ProcessAt, &d.EnqueuedAt: r.EnqueuedAt, &d.RetryAt: r.NextAttemptAt, &d.DeadAt: r.DeadAt} {
		if src != nil {
			*dst = *src
		}
	}
	return d
}
