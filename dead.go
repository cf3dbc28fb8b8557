package signals

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"

	"github.com/dj-signals/signals/internal/store"
	"github.com/dj-signals/signals/internal/wake"
)

// DeadReason says why an event's delivery to a receiver is dead.
type DeadReason string

// The reasons a delivery is dead.
const (
	// ReasonUnenqueueable: the Dispatcher could not enqueue the row, either
	// MaxEnqueueAttempts times while Redis answered or at once because the
	// row is invalid.
	ReasonUnenqueueable DeadReason = store.ReasonUnenqueueable
	// ReasonRetriesExhausted: the receiver failed on every attempt.
	ReasonRetriesExhausted DeadReason = store.ReasonRetriesExhausted
	// ReasonPermanent: the receiver returned an error wrapped by Permanent.
	ReasonPermanent DeadReason = store.ReasonPermanent
	// ReasonUndecodable: the task's metadata or payload cannot be decoded.
	ReasonUndecodable DeadReason = store.ReasonUndecodable
	// ReasonUnknownReceiver: no worker knew the signal or receiver through
	// every retry (a rolling deploy that never finished, or a receiver
	// removed while events for it were in flight).
	ReasonUnknownReceiver DeadReason = store.ReasonUnknownReceiver
	// ReasonCascadeTooDeep: the event was sent beyond the registry's
	// MaxDepth.
	ReasonCascadeTooDeep DeadReason = store.ReasonCascadeTooDeep
	// ReasonArchived: asynq archived the task but the worker could not
	// record it; the Dispatcher's repair found it in asynq's archive.
	ReasonArchived DeadReason = store.ReasonArchived
)

// DeadLetter is one event's delivery to one receiver that failed for good,
// kept in PostgreSQL until requeued or discarded: never trimmed, whatever
// asynq's archive keeps.
type DeadLetter struct {
	// TaskID is the delivery's ID, Event.TaskID to its receiver.
	TaskID ulid.ULID
	// EventID is the event it belongs to.
	EventID ulid.ULID
	// Signal, Receiver and Queue address it.
	Signal, Receiver, Queue string
	// Reason says what kind of failure it was.
	Reason DeadReason
	// Error is the last error.
	Error string
	// Attempts is how many attempts failed: enqueues for
	// ReasonUnenqueueable, receiver runs otherwise.
	Attempts int
	// SentAt is when the event was sent; EnqueuedAt when the delivery was
	// last enqueued (zero if never); DeadAt when it was recorded as dead.
	SentAt, EnqueuedAt, DeadAt time.Time
	// Payload is the event's JSON payload, decoded with the registry's
	// [Codec]; nil when Encoded.
	Payload json.RawMessage
	// Encoded says the payload is encoded and the Ledger's registry has no
	// Codec for it (the signals command's, say).
	Encoded bool
	// Headers are the event's own, as middleware set them at send (a trace
	// context, say).
	Headers map[string]string
}

// DeadFilter selects dead letters for [Ledger.DeadLetters]; every zero
// field matches all.
type DeadFilter struct {
	// Signal and Receiver match names exactly.
	Signal, Receiver string
	// Since and Until bound when the letter was recorded: Since <= DeadAt
	// < Until.
	Since, Until time.Time
	// ErrorContains matches a substring of the error, ignoring case.
	ErrorContains string
	// TaskIDs, when set, selects only the letters with these task IDs.
	TaskIDs []ulid.ULID
	// EventIDs, when set, selects only the letters of these events.
	EventIDs []ulid.ULID
	// Reason, when set, selects only the letters dead for it.
	Reason DeadReason
	// After, when set, selects only the letters past it in the list's
	// order: pass the last letter's [DeadLetter.Cursor] to read the next
	// page. Letters requeued or discarded meanwhile do not move it.
	After string
	// Limit caps how many are returned. Defaults to 100.
	Limit int
}

// Cursor returns the place right after d in the order [Ledger.DeadLetters]
// lists dead letters in (by DeadAt, then TaskID), for
// [DeadFilter].After: an opaque token that fits in a URL.
func (d DeadLetter) Cursor() string {
	return fmt.Sprintf("%d.%s", d.DeadAt.UnixMicro(), d.TaskID)
}

// parseCursor reads what Cursor wrote; "" is before every letter.
func parseCursor(cursor string) (deadAt time.Time, taskID ulid.ULID, err error) {
	if cursor == "" {
		return time.Time{}, ulid.ULID{}, nil
	}
	micros, id, ok := strings.Cut(cursor, ".")
	us, err := strconv.ParseInt(micros, 10, 64)
	if !ok || err != nil {
		return time.Time{}, ulid.ULID{}, fmt.Errorf("%w: dead letter cursor %q is not one DeadLetter.Cursor returned", ErrInvalidConfig, cursor)
	}
	if taskID, err = ulid.ParseStrict(id); err != nil {
		return time.Time{}, ulid.ULID{}, fmt.Errorf("%w: dead letter cursor %q is not one DeadLetter.Cursor returned: %v", ErrInvalidConfig, cursor, err)
	}
	return time.UnixMicro(us), taskID, nil
}

// storeFilter is f as the store takes it, or an error for an After that
// no Cursor returned.
func (f DeadFilter) storeFilter() (store.DeadFilter, error) {
	afterDeadAt, afterID, err := parseCursor(f.After)
	return store.DeadFilter{
		Signal: f.Signal, Receiver: f.Receiver,
		DeadSince: f.Since, DeadUntil: f.Until,
		ErrorLike: f.ErrorContains, IDs: ids16(f.TaskIDs), EventIDs: ids16(f.EventIDs),
		Reason: string(f.Reason), AfterDeadAt: afterDeadAt, AfterID: afterID,
		Limit: f.Limit,
	}, err
}

// DeadLetters lists the dead letters f selects, the longest dead first.
func (l *Ledger) DeadLetters(ctx context.Context, f DeadFilter) ([]DeadLetter, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	sf, err := f.storeFilter()
	if err != nil {
		return nil, err
	}
	var rows []store.Dead
	err = pgx.BeginFunc(ctx, l.db, func(tx pgx.Tx) (err error) {
		rows, err = l.reg.queries.ListDead(ctx, tx, sf)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("signals: list dead letters: %w", l.reg.explain(err))
	}
	out := make([]DeadLetter, len(rows))
	for i, r := range rows {
		out[i] = DeadLetter{
			TaskID: r.ID, EventID: r.EventID,
			Signal: r.Signal, Receiver: r.Receiver, Queue: r.Queue,
			Reason: DeadReason(r.Reason), Attempts: r.Attempts,
			SentAt: time.UnixMilli(int64(ulid.ULID(r.EventID).Time())),
			DeadAt: r.DeadAt, Headers: r.Headers,
		}
		out[i].Payload, out[i].Encoded = l.reg.readablePayload(r.Payload)
		if r.LastError != nil {
			out[i].Error = *r.LastError
		}
		if r.EnqueuedAt != nil {
			out[i].EnqueuedAt = *r.EnqueuedAt
		}
	}
	return out, nil
}

// RequeueDead sends dead letters again, once their cause is fixed: each
// goes back into the outbox with its attempts reset and becomes a fresh
// asynq task, while its receiver sees the same Event.TaskID, so [Once]
// still recognizes an effect already applied. It returns how many moved;
// unknown IDs are ignored.
func (l *Ledger) RequeueDead(ctx context.Context, taskIDs ...ulid.ULID) (int, error) {
	n, err := l.moveDead(ctx, taskIDs, l.reg.queries.RequeueDead)
	if err != nil {
		return 0, fmt.Errorf("signals: requeue dead letters: %w", err)
	}
	wake.Notify(l.reg.Schema())
	return n, nil
}

// DiscardDead deletes dead letters for good and returns how many; unknown
// IDs are ignored.
func (l *Ledger) DiscardDead(ctx context.Context, taskIDs ...ulid.ULID) (int, error) {
	n, err := l.moveDead(ctx, taskIDs, l.reg.queries.DiscardDead)
	if err != nil {
		return 0, fmt.Errorf("signals: discard dead letters: %w", err)
	}
	return n, nil
}

func (l *Ledger) moveDead(ctx context.Context, taskIDs []ulid.ULID, move func(context.Context, store.Executor, [][16]byte) (int64, error)) (int, error) {
	var n int64
	err := pgx.BeginFunc(ctx, l.db, func(tx pgx.Tx) (err error) {
		n, err = move(ctx, tx, ids16(taskIDs))
		return err
	})
	return int(n), l.reg.explain(err)
}

// ids16 turns ULIDs into the store's byte arrays; nil stays nil.
func ids16(ids []ulid.ULID) [][16]byte {
	if ids == nil {
		return nil
	}
	out := make([][16]byte, len(ids))
	for i, id := range ids {
		out[i] = id
	}
	return out
}
