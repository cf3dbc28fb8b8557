package store

import (
	"context"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// The ledger's statements off the position's happy path: rows that wait out
// a failed enqueue and go out again when due, acks, and burials.
type ledgerStatements struct {
	claimDue   string
	sentDue    string
	retryLater string
	delete     string
	bury       string
	ledgerID   string
	setMarker  string
	counts     string
}

func newLedgerStatements(r *strings.Replacer) ledgerStatements {
	return ledgerStatements{
		claimDue:   r.Replace(claimDueSQL),
		sentDue:    r.Replace(sentDueSQL),
		retryLater: r.Replace(retryLaterSQL),
		delete:     r.Replace(deleteSQL),
		bury:       r.Replace(burySQL),
		ledgerID:   r.Replace(ledgerIDSQL),
		setMarker:  r.Replace(setMarkerSQL),
		counts:     r.Replace(countsSQL),
	}
}

// claimDueSQL locks the rows without an ordering key whose next_attempt_at
// has come: rows that failed to enqueue, and rows repair sent back. Keyed
// rows wait in next_attempt_at too, but take their turn in their key's walk.
var claimDueSQL = `SELECT ` + liveColumns + `, octet_length(payload)
FROM {{schema}}.outbox
WHERE next_attempt_at <= now() AND ordering_key IS NULL
ORDER BY next_attempt_at
LIMIT $1
FOR UPDATE SKIP LOCKED`

// ClaimDue locks in tx up to limit rows without an ordering key that are due
// again, whose payloads add up to at most maxBytes (always at least one),
// skipping rows another relay holds.
func (q *Queries) ClaimDue(ctx context.Context, tx pgx.Tx, limit, maxBytes int) ([]Row, error) {
	rows, err := tx.Query(ctx, q.ledger.claimDue, limit)
	if err != nil {
		return nil, err
	}
	var out []Row
	var total, size int
	var row Row
	_, err = pgx.ForEachRow(rows, append(row.liveFields(), &size), func() error {
		if len(out) == 0 || total+size <= maxBytes {
			out = append(out, row)
			total += size
		}
		return nil
	})
	return out, err
}

// A due row sent again is enqueued like any other behind the position; repair
// counts its age from now, as from a keyed row's enqueue.
const sentDueSQL = `UPDATE {{schema}}.outbox SET next_attempt_at = NULL, checked_at = now() WHERE ` + byRef

// SentDue records that due rows without an ordering key are in Redis again.
func (q *Queries) SentDue(ctx context.Context, db Executor, refs []Ref) error {
	return q.exec(ctx, db, q.ledger.sentDue, refs)
}

const retryLaterSQL = `UPDATE {{schema}}.outbox AS o
SET attempts = o.attempts + 1, last_error = f.err,
    next_attempt_at = now() + f.delay_ms * interval '1 millisecond'
FROM unnest($1::xid8[], $2::uuid[], $3::text[], $4::bigint[]) AS f(xid, id, err, delay_ms)
WHERE o.xid = f.xid AND o.id = f.id`

// Failure is one row's failed enqueue and how long the row waits before
// the next try.
type Failure struct {
	Ref
	Error string
	Delay time.Duration
}

// RetryLater counts one failed enqueue on each row, with its error, and
// holds the row back for its delay, so that it alone waits.
func (q *Queries) RetryLater(ctx context.Context, db Executor, failures []Failure) error {
	xids := make([]uint64, len(failures))
	ids := make([][16]byte, len(failures))
	errs := make([]string, len(failures))
	delays := make([]int64, len(failures))
	for i, f := range failures {
		xids[i], ids[i], errs[i], delays[i] = f.XID, f.ID, f.Error, f.Delay.Milliseconds()
	}
	_, err := db.Exec(ctx, q.ledger.retryLater, xids, ids, errs, delays)
	return err
}

const deleteSQL = `DELETE FROM {{schema}}.outbox WHERE ` + byRef

// Delete removes the rows refs name: their receivers succeeded.
func (q *Queries) Delete(ctx context.Context, db Executor, refs []Ref) error {
	return q.exec(ctx, db, q.ledger.delete, refs)
}

// Reasons a row is dead, stored in dead.reason.
const (
	ReasonUnenqueueable    = "unenqueueable"     // the relay could not enqueue it
	ReasonRetriesExhausted = "retries exhausted" // its receiver failed MaxRetries+1 times
	ReasonPermanent        = "permanent"         // its receiver returned a permanent error
	ReasonUndecodable      = "undecodable"       // the task or payload cannot be decoded
	ReasonUnknownReceiver  = "unknown receiver"  // no worker knew its signal or receiver
	ReasonCascadeTooDeep   = "cascade too deep"  // it was sent beyond MaxDepth
	ReasonArchived         = "archived"          // repair found it in asynq's archive
)

// Burial is why one row is dead.
type Burial struct {
	Ref
	Reason   string // one of the Reason constants
	Error    string
	Attempts int // failed attempts: enqueues for ReasonUnenqueueable, receiver runs otherwise
	// EnqueuedAt is the last enqueue, if the burier knows it (a worker
	// reads it from the task); a keyed row's is on the row.
	EnqueuedAt *time.Time
}

// burySQL moves rows from outbox to dead, each with its reason, error,
// attempts and last enqueue.
var burySQL = `WITH moved AS (
    DELETE FROM {{schema}}.outbox AS o
    USING unnest($1::xid8[], $2::uuid[], $3::text[], $4::text[], $5::int[], $6::timestamptz[])
        AS f(xid, id, reason, err, attempts, enqueued_at)
    WHERE o.xid = f.xid AND o.id = f.id
    RETURNING o.*, f.reason AS dead_reason, f.err AS dead_error, f.attempts AS dead_attempts,
        coalesce(f.enqueued_at, o.enqueued_at) AS dead_enqueued_at
)
INSERT INTO {{schema}}.dead (` + columns("", nil) + `, enqueued_at, reason)
SELECT ` + columns("", map[string]string{"attempts": "dead_attempts", "last_error": "dead_error"}) + `, dead_enqueued_at, dead_reason
FROM moved`

// Bury moves rows to the dead letters, each with why, and reports how many
// moved: a row already removed or buried is not there to move.
func (q *Queries) Bury(ctx context.Context, db Executor, burials []Burial) (int64, error) {
	xids := make([]uint64, len(burials))
	ids := make([][16]byte, len(burials))
	reasons := make([]string, len(burials))
	errs := make([]string, len(burials))
	attempts := make([]int32, len(burials))
	enqueued := make([]*time.Time, len(burials))
	for i, b := range burials {
		xids[i], ids[i], reasons[i], errs[i], attempts[i], enqueued[i] = b.XID, b.ID, b.Reason, b.Error, int32(b.Attempts), b.EnqueuedAt
	}
	tag, err := db.Exec(ctx, q.ledger.bury, xids, ids, reasons, errs, attempts, enqueued)
	return tag.RowsAffected(), err
}

const ledgerIDSQL = `SELECT id FROM {{schema}}.ledger LIMIT 1`

// LedgerID returns the ID that names this outbox, one per database and
// schema.
func (q *Queries) LedgerID(ctx context.Context, db Executor) ([16]byte, error) {
	rows, err := db.Query(ctx, q.ledger.ledgerID)
	if err != nil {
		return [16]byte{}, err
	}
	return pgx.CollectExactlyOneRow(rows, pgx.RowTo[[16]byte])
}

const setMarkerSQL = `UPDATE {{schema}}.ledger AS l SET marker = $1
FROM (SELECT id, marker FROM {{schema}}.ledger FOR UPDATE) AS old
WHERE l.id = old.id
RETURNING old.marker`

// SetMarker records the marker a relay set in Redis and reports whether one
// was recorded before: if so, the marker it replaces was lost with Redis's
// data; if not, this is the ledger's first.
func (q *Queries) SetMarker(ctx context.Context, db Executor, marker string) (bool, error) {
	rows, err := db.Query(ctx, q.ledger.setMarker, marker)
	if err != nil {
		return false, err
	}
	old, err := pgx.CollectExactlyOneRow(rows, pgx.RowTo[*string])
	return old != nil, err
}

const countsSQL = `SELECT
    (SELECT count(*) FROM {{schema}}.outbox),
    (SELECT count(*) FROM {{schema}}.dead)`

// Counts is how many rows are live and dead.
type Counts struct {
	Live int64 // their receivers have not succeeded yet, pending or in flight
	Dead int64
}

// Count returns how many rows are live and dead.
func (q *Queries) Count(ctx context.Context, db Executor) (Counts, error) {
	rows, err := db.Query(ctx, q.ledger.counts)
	if err != nil {
		return Counts{}, err
	}
	return pgx.CollectExactlyOneRow(rows, func(r pgx.CollectableRow) (Counts, error) {
		var c Counts
		err := r.Scan(&c.Live, &c.Dead)
		return c, err
	})
}
