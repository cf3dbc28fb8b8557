package store

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// The statements that look up an event's rows, live and dead, for an
// operator: by the event's ID, by one of its rows' IDs, and by its cascade's
// correlation ID. Only the primary keys are indexed (an index for these
// lookups would cost every sender a write), so each reads its tables
// through; a limit bounds what it returns.
type eventStatements struct {
	byEvent, byCorrelation, eventOf string
}

func newEventStatements(r *strings.Replacer) eventStatements {
	return eventStatements{
		byEvent:       r.Replace(strings.ReplaceAll(eventRowsSQL, "@key", "event_id")),
		byCorrelation: r.Replace(strings.ReplaceAll(eventRowsSQL, "@key", "correlation_id")),
		eventOf:       r.Replace(eventOfSQL),
	}
}

// EventRow is one row of an event, live or dead, as an operator sees it.
type EventRow struct {
	Row
	// Dead says the row is a dead letter, with Reason and DeadAt.
	Dead   bool
	Reason string
	DeadAt *time.Time
	// Pending says a live row waits for a Dispatcher to enqueue it; a live
	// row not pending is in flight.
	Pending bool
	// EnqueuedAt is a keyed or dead row's last enqueue; NextAttemptAt is
	// when a live row that failed to enqueue is tried again.
	EnqueuedAt, NextAttemptAt *time.Time
}

// eventRowsSQL reads the live and dead rows whose @key is $5, live first,
// at most $6; $1 to $4 are the Dispatchers' position, as for Stats.
var eventRowsSQL = `(SELECT ` + columns("o.", nil) + `, false, NULL::text, NULL::timestamptz, ` + isPendingOf("o") + `, o.enqueued_at, o.next_attempt_at
FROM {{schema}}.outbox AS o WHERE o.@key = $5 ORDER BY o.event_id, o.id LIMIT $6)
UNION ALL
(SELECT ` + columns("d.", nil) + `, true, d.reason, d.dead_at, false, d.enqueued_at, NULL::timestamptz
FROM {{schema}}.dead AS d WHERE d.@key = $5 ORDER BY d.event_id, d.id LIMIT $6)`

// eventOfSQL finds the event of a row, live or dead, by the row's ID.
const eventOfSQL = `SELECT event_id FROM {{schema}}.outbox WHERE id = $1
UNION ALL
SELECT event_id FROM {{schema}}.dead WHERE id = $1
LIMIT 1`

// EventRows returns the rows of the event id, live and dead, at most limit
// of each; p is the Dispatchers' position, which tells pending rows from
// rows in flight.
func (q *Queries) EventRows(ctx context.Context, db Executor, p Position, id [16]byte, limit int) ([]EventRow, error) {
	return q.eventRows(ctx, db, q.dead.event.byEvent, p, id, limit)
}

// CascadeRows returns the rows, live and dead, of the events of the cascade
// correlation, at most limit of each, as EventRows does.
func (q *Queries) CascadeRows(ctx context.Context, db Executor, p Position, correlation [16]byte, limit int) ([]EventRow, error) {
	return q.eventRows(ctx, db, q.dead.event.byCorrelation, p, correlation, limit)
}

func (q *Queries) eventRows(ctx context.Context, db Executor, sql string, p Position, key [16]byte, limit int) ([]EventRow, error) {
	var upto *string
	if p.Upto != "" {
		upto = &p.Upto
	}
	rows, err := db.Query(ctx, sql, p.Covered, upto, p.After.XID, p.After.ID, key, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (EventRow, error) {
		var e EventRow
		var reason *string
		err := r.Scan(append(e.Row.fields(), &e.Dead, &reason, &e.DeadAt, &e.Pending, &e.EnqueuedAt, &e.NextAttemptAt)...)
		if reason != nil {
			e.Reason = *reason
		}
		return e, err
	})
}

// EventOf returns the event of the row id, live or dead, and whether the
// ledger holds such a row.
func (q *Queries) EventOf(ctx context.Context, db Executor, id [16]byte) ([16]byte, bool, error) {
	rows, err := db.Query(ctx, q.dead.event.eventOf, id)
	if err != nil {
		return [16]byte{}, false, err
	}
	ev, err := pgx.CollectExactlyOneRow(rows, pgx.RowTo[[16]byte])
	if errors.Is(err, pgx.ErrNoRows) {
		return [16]byte{}, false, nil
	}
	return ev, err == nil, err
}
