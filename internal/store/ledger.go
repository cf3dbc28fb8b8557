package store

import (
	"context"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// The ledger's statements: what happens to a row after the relay claimed
// it, until it is removed (its receiver succeeded) or buried (dead).
type ledgerStatements struct {
	markEnqueued   string
	retryLater     string
	buryPending    string
	buryInflight   string
	deleteInflight string
	claimStale     string
	touch          string
	reset          string
	reissue        string
	resetEnqueued  string
	resetBetween   string
	ledgerID       string
	counts         string
}

func newLedgerStatements(r *strings.Replacer) ledgerStatements {
	return ledgerStatements{
		markEnqueued:   r.Replace(markEnqueuedSQL),
		retryLater:     r.Replace(retryLaterSQL),
		buryPending:    r.Replace(strings.NewReplacer("{{from}}", "outbox", "{{enqueued_at}}", "NULL::timestamptz").Replace(burySQL)),
		buryInflight:   r.Replace(strings.NewReplacer("{{from}}", "inflight", "{{enqueued_at}}", "enqueued_at").Replace(burySQL)),
		deleteInflight: r.Replace(deleteInflightSQL),
		claimStale:     r.Replace(claimStaleSQL),
		touch:          r.Replace(touchSQL),
		reset:          r.Replace(resetSQL),
		reissue:        r.Replace(reissueSQL),
		resetEnqueued:  r.Replace(resetEnqueuedSQL),
		resetBetween:   r.Replace(resetEnqueuedBetweenSQL),
		ledgerID:       r.Replace(ledgerIDSQL),
		counts:         r.Replace(countsSQL),
	}
}

// inflightColumns are the columns a row carries from outbox to inflight and
// back: all but next_attempt_at, which only a pending row has.
const inflightColumns = rowColumns

const markEnqueuedSQL = `WITH moved AS (
    DELETE FROM {{schema}}.outbox WHERE id = ANY($1::uuid[])
    RETURNING ` + inflightColumns + `
)
INSERT INTO {{schema}}.inflight (` + inflightColumns + `, enqueued_at)
SELECT id, event_id, correlation_id, causation_id, depth, signal, receiver, queue,
    max_retry, timeout_ms, process_at, payload, attempts, last_error, enqueues + 1, generation, headers, ordering_key, ordering_seq, now()
FROM moved`

// MarkEnqueued records that the rows' tasks are in Redis now: they move
// from outbox to inflight.
func (q *Queries) MarkEnqueued(ctx context.Context, db Executor, ids [][16]byte) error {
	_, err := db.Exec(ctx, q.ledger.markEnqueued, ids)
	return err
}

const retryLaterSQL = `UPDATE {{schema}}.outbox AS o
SET attempts = o.attempts + 1, last_error = f.err,
    next_attempt_at = now() + f.delay_ms * interval '1 millisecond'
FROM unnest($1::uuid[], $2::text[], $3::bigint[]) AS f(id, err, delay_ms)
WHERE o.id = f.id`

// Failure is one row's failed enqueue and how long the row waits before
// the next try.
type Failure struct {
	ID    [16]byte
	Error string
	Delay time.Duration
}

// RetryLater counts one failed enqueue on each row, with its error, and
// holds the row back for its delay, so that it alone waits.
func (q *Queries) RetryLater(ctx context.Context, db Executor, failures []Failure) error {
	ids := make([][16]byte, len(failures))
	errs := make([]string, len(failures))
	delays := make([]int64, len(failures))
	for i, f := range failures {
		ids[i], errs[i], delays[i] = f.ID, f.Error, f.Delay.Milliseconds()
	}
	_, err := db.Exec(ctx, q.ledger.retryLater, ids, errs, delays)
	return err
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
	ID       [16]byte
	Reason   string // one of the Reason constants
	Error    string
	Attempts int // failed attempts: enqueues for ReasonUnenqueueable, receiver runs otherwise
}

// burySQL moves rows from {{from}}, outbox or inflight, to dead, with
// {{enqueued_at}}: NULL for a pending row, which has no enqueue to record.
const burySQL = `WITH moved AS (
    DELETE FROM {{schema}}.{{from}} AS o
    USING unnest($1::uuid[], $2::text[], $3::text[], $4::int[]) AS f(id, reason, err, attempts)
    WHERE o.id = f.id
    RETURNING o.*, f.reason AS dead_reason, f.err AS dead_error, f.attempts AS dead_attempts
)
INSERT INTO {{schema}}.dead (` + rowColumns + `, enqueued_at, reason)
SELECT id, event_id, correlation_id, causation_id, depth, signal, receiver, queue,
    max_retry, timeout_ms, process_at, payload, dead_attempts, dead_error, enqueues, generation, headers, ordering_key, ordering_seq,
    {{enqueued_at}}, dead_reason
FROM moved`

// Bury moves rows, pending or in flight, to the dead letters, each with
// why, and reports how many moved: a row already removed or buried is not
// there to move. As for Delete, its two statements must not share a
// snapshot: run it in a transaction or on a pool.
func (q *Queries) Bury(ctx context.Context, db Executor, burials []Burial) (int64, error) {
	ids := make([][16]byte, len(burials))
	reasons := make([]string, len(burials))
	errs := make([]string, len(burials))
	attempts := make([]int32, len(burials))
	for i, b := range burials {
		ids[i], reasons[i], errs[i], attempts[i] = b.ID, b.Reason, b.Error, int32(b.Attempts)
	}
	var n int64
	for _, stmt := range []string{q.ledger.buryPending, q.ledger.buryInflight} {
		tag, err := db.Exec(ctx, stmt, ids, reasons, errs, attempts)
		if err != nil {
			return n, err
		}
		n += tag.RowsAffected()
	}
	return n, nil
}

const deleteInflightSQL = `DELETE FROM {{schema}}.inflight WHERE id = ANY($1::uuid[])`

// Stale is an enqueued row whose task repair checks in Redis.
type Stale struct {
	ID         [16]byte
	Queue      string
	Generation int
	Attempts   int
}

const claimStaleSQL = `SELECT id, queue, generation, attempts
FROM {{schema}}.inflight
WHERE coalesce(checked_at, enqueued_at) < now() - $1::bigint * interval '1 millisecond'
ORDER BY coalesce(checked_at, enqueued_at)
LIMIT $2
FOR UPDATE SKIP LOCKED`

// ClaimStale locks in tx up to limit rows enqueued (or last found alive in
// Redis) longer than age ago, longest first, skipping rows another relay's
// repair holds.
func (q *Queries) ClaimStale(ctx context.Context, tx pgx.Tx, age time.Duration, limit int) ([]Stale, error) {
	rows, err := tx.Query(ctx, q.ledger.claimStale, age.Milliseconds(), limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Stale, error) {
		var s Stale
		err := r.Scan(&s.ID, &s.Queue, &s.Generation, &s.Attempts)
		return s, err
	})
}

const touchSQL = `UPDATE {{schema}}.inflight SET checked_at = now() WHERE id = ANY($1::uuid[])`

// Touch records that the rows' tasks were found alive in Redis.
func (q *Queries) Touch(ctx context.Context, db Executor, ids [][16]byte) error {
	_, err := db.Exec(ctx, q.ledger.touch, ids)
	return err
}

// pendingAgainSQL moves rows from inflight back to outbox, pending, with
// {{generation}} as their new generation.
const pendingAgainSQL = `WITH moved AS (
    DELETE FROM {{schema}}.inflight WHERE {{which}}
    RETURNING ` + inflightColumns + `
)
INSERT INTO {{schema}}.outbox (` + inflightColumns + `)
SELECT id, event_id, correlation_id, causation_id, depth, signal, receiver, queue,
    max_retry, timeout_ms, process_at, payload, attempts, last_error, enqueues, {{generation}}, headers, ordering_key, ordering_seq
FROM moved`

var resetSQL = strings.NewReplacer("{{which}}", "id = ANY($1::uuid[])", "{{generation}}", "generation").Replace(pendingAgainSQL)

// Reset makes the rows pending again, for the relay to enqueue anew under
// the same task IDs: Redis no longer has their tasks.
func (q *Queries) Reset(ctx context.Context, db Executor, ids [][16]byte) error {
	_, err := db.Exec(ctx, q.ledger.reset, ids)
	return err
}

var reissueSQL = strings.NewReplacer("{{which}}", "id = ANY($1::uuid[])", "{{generation}}", "generation + 1").Replace(pendingAgainSQL)

// Reissue makes the rows pending again under a fresh asynq task ID: their
// old tasks sit in asynq's archive, which would turn the same ID away.
func (q *Queries) Reissue(ctx context.Context, db Executor, ids [][16]byte) error {
	_, err := db.Exec(ctx, q.ledger.reissue, ids)
	return err
}

var resetEnqueuedSQL = strings.NewReplacer(
	"{{which}}", "id IN (SELECT id FROM {{schema}}.inflight LIMIT $1 FOR UPDATE SKIP LOCKED)",
	"{{generation}}", "generation",
).Replace(pendingAgainSQL)

var resetEnqueuedBetweenSQL = strings.NewReplacer(
	"{{which}}", `id IN (SELECT id FROM {{schema}}.inflight
        WHERE coalesce(checked_at, enqueued_at) >= $2 AND enqueued_at >= $2 AND enqueued_at < $3
        LIMIT $1 FOR UPDATE SKIP LOCKED)`,
	"{{generation}}", "generation",
).Replace(pendingAgainSQL)

// ResetEnqueuedBetween makes up to limit rows enqueued at or after since
// and before until pending again and reports how many: Redis went back to
// a time before since. Call it until it reports fewer than limit.
func (q *Queries) ResetEnqueuedBetween(ctx context.Context, db Executor, since, until time.Time, limit int) (int64, error) {
	tag, err := db.Exec(ctx, q.ledger.resetBetween, limit, since, until)
	return tag.RowsAffected(), err
}

// ResetEnqueued makes up to limit enqueued rows pending again and reports
// how many: after Redis lost its data, every enqueued row may have lost its
// task. Call it until it reports fewer than limit.
func (q *Queries) ResetEnqueued(ctx context.Context, db Executor, limit int) (int64, error) {
	tag, err := db.Exec(ctx, q.ledger.resetEnqueued, limit)
	return tag.RowsAffected(), err
}

const ledgerIDSQL = `SELECT id FROM {{schema}}.ledger LIMIT 1`

// LedgerID returns the ID that names this outbox, one per database and
// schema.
func (q *Queries) LedgerID(ctx context.Context, db Executor) ([16]byte, error) {
	var id [16]byte
	rows, err := db.Query(ctx, q.ledger.ledgerID)
	if err != nil {
		return id, err
	}
	id, err = pgx.CollectExactlyOneRow(rows, pgx.RowTo[[16]byte])
	return id, err
}

const countsSQL = `SELECT
    (SELECT count(*) FROM {{schema}}.outbox),
    (SELECT count(*) FROM {{schema}}.inflight),
    (SELECT count(*) FROM {{schema}}.dead)`

// Counts is how many rows are in each state.
type Counts struct {
	Pending  int64 // waiting to be enqueued
	Enqueued int64 // in Redis, receiver not done yet
	Dead     int64
}

// Count returns how many rows are pending, enqueued and dead.
func (q *Queries) Count(ctx context.Context, db Executor) (Counts, error) {
	var c Counts
	rows, err := db.Query(ctx, q.ledger.counts)
	if err != nil {
		return c, err
	}
	c, err = pgx.CollectExactlyOneRow(rows, func(r pgx.CollectableRow) (Counts, error) {
		var c Counts
		err := r.Scan(&c.Pending, &c.Enqueued, &c.Dead)
		return c, err
	})
	return c, err
}
