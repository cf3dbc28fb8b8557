package store

import (
	"context"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// The repair's statements: rows long enqueued whose tasks Redis may have
// lost, and keyed rows whose enqueue a Redis that lost its data forgot.
type repairStatements struct {
	claimStale      string
	claimStaleKeyed string
	touch           string
	resend          string
	reissue         string
	resetKeyed      string
	resetKeyedSince string
}

func newRepairStatements(r *strings.Replacer) repairStatements {
	return repairStatements{
		claimStale:      r.Replace(claimStaleSQL),
		claimStaleKeyed: r.Replace(claimStaleKeyedSQL),
		touch:           r.Replace(touchSQL),
		resend:          r.Replace(resendSQL),
		reissue:         r.Replace(reissueSQL),
		resetKeyed:      r.Replace(resetKeyedSQL),
		resetKeyedSince: r.Replace(resetKeyedSinceSQL),
	}
}

// Stale is an enqueued row whose task repair checks in Redis.
type Stale struct {
	Ref
	Queue      string
	Generation int
	Attempts   int
}

const staleColumns = `xid, id, queue, generation, attempts`

// claimStaleSQL: rows without a key whose transactions were visible in the
// covered snapshot of a position read at least RepairAge ago ($1), so
// enqueued at least that long, and not found alive in Redis since. In a
// healthy ledger the range below its xmax holds only rows acked since the
// last vacuum; a transaction held open elsewhere holds back none of them.
const claimStaleSQL = `SELECT ` + staleColumns + `
FROM {{schema}}.outbox
WHERE xid < pg_snapshot_xmax($1::pg_snapshot) AND pg_visible_in_snapshot(xid, $1::pg_snapshot)
  AND ordering_key IS NULL AND next_attempt_at IS NULL
  AND (checked_at IS NULL OR checked_at < now() - $2::bigint * interval '1 millisecond')
ORDER BY xid, id
LIMIT $3
FOR UPDATE SKIP LOCKED`

const claimStaleKeyedSQL = `SELECT ` + staleColumns + `
FROM {{schema}}.outbox
WHERE enqueued_at IS NOT NULL AND coalesce(checked_at, enqueued_at) < now() - $1::bigint * interval '1 millisecond'
ORDER BY coalesce(checked_at, enqueued_at)
LIMIT $2
FOR UPDATE SKIP LOCKED`

// ClaimStale locks in tx up to limit enqueued rows not found alive in Redis
// for age: rows without a key whose transactions covered, the covered
// snapshot of a position at least age old, sees ("" for none), and keyed
// rows enqueued that long ago; skipping rows another relay's repair holds.
func (q *Queries) ClaimStale(ctx context.Context, tx pgx.Tx, covered string, age time.Duration, limit int) ([]Stale, error) {
	var out []Stale
	scan := func(r pgx.CollectableRow) (Stale, error) {
		var s Stale
		err := r.Scan(&s.XID, &s.ID, &s.Queue, &s.Generation, &s.Attempts)
		return s, err
	}
	if covered != "" {
		rows, err := tx.Query(ctx, q.repair.claimStale, covered, age.Milliseconds(), limit)
		if err != nil {
			return nil, err
		}
		if out, err = pgx.CollectRows(rows, scan); err != nil {
			return nil, err
		}
	}
	if len(out) < limit {
		rows, err := tx.Query(ctx, q.repair.claimStaleKeyed, age.Milliseconds(), limit-len(out))
		if err != nil {
			return nil, err
		}
		keyed, err := pgx.CollectRows(rows, scan)
		if err != nil {
			return nil, err
		}
		out = append(out, keyed...)
	}
	return out, nil
}

const touchSQL = `UPDATE {{schema}}.outbox SET checked_at = now() WHERE ` + byRef

// Touch records that the rows' tasks were found alive in Redis.
func (q *Queries) Touch(ctx context.Context, db Executor, refs []Ref) error {
	return q.exec(ctx, db, q.repair.touch, refs)
}

// pendingAgain makes rows pending again, to go out when next_attempt_at
// comes. A row without a key goes at once. A keyed row first waits out its
// timeout: a run of its task may still be going on in a worker (Redis lost
// the task, not the worker its run), and the next run of the key must not
// start beside it.
const pendingAgain = `next_attempt_at = CASE WHEN ordering_key IS NULL THEN now()
        ELSE now() + timeout_ms * interval '1 millisecond' END,
    enqueued_at = NULL, checked_at = NULL, enqueues = enqueues + 1`

const resendSQL = `UPDATE {{schema}}.outbox SET ` + pendingAgain + ` WHERE ` + byRef

// Resend makes the rows pending again under their task IDs: Redis no
// longer has their tasks.
func (q *Queries) Resend(ctx context.Context, db Executor, refs []Ref) error {
	return q.exec(ctx, db, q.repair.resend, refs)
}

const reissueSQL = `UPDATE {{schema}}.outbox
SET next_attempt_at = now(), enqueued_at = NULL, checked_at = NULL, enqueues = enqueues + 1, generation = generation + 1
WHERE ` + byRef

// Reissue makes the rows pending again under a fresh asynq task ID: their
// old tasks sit in asynq's archive, which would turn the same ID away. The
// worker that ran them died, so no run goes on: keyed rows go at once too.
func (q *Queries) Reissue(ctx context.Context, db Executor, refs []Ref) error {
	return q.exec(ctx, db, q.repair.reissue, refs)
}

const resetKeyedSQL = `UPDATE {{schema}}.outbox SET ` + pendingAgain + `
WHERE (xid, id) IN (SELECT xid, id FROM {{schema}}.outbox WHERE enqueued_at IS NOT NULL LIMIT $1 FOR UPDATE SKIP LOCKED)`

// ResetKeyed makes up to limit enqueued keyed rows pending again and
// reports how many: Redis lost its data, and their tasks with it. Call it
// until it reports fewer than limit.
func (q *Queries) ResetKeyed(ctx context.Context, db Executor, limit int) (int64, error) {
	tag, err := db.Exec(ctx, q.repair.resetKeyed, limit)
	return tag.RowsAffected(), err
}

const resetKeyedSinceSQL = `UPDATE {{schema}}.outbox SET ` + pendingAgain + `
WHERE (xid, id) IN (SELECT xid, id FROM {{schema}}.outbox
    WHERE enqueued_at IS NOT NULL AND coalesce(checked_at, enqueued_at) >= $2 AND enqueued_at >= $2
    LIMIT $1 FOR UPDATE SKIP LOCKED)`

// ResetKeyedSince makes up to limit keyed rows enqueued at or after since
// pending again and reports how many: Redis went back to a time before
// since. Call it until it reports fewer than limit.
func (q *Queries) ResetKeyedSince(ctx context.Context, db Executor, since time.Time, limit int) (int64, error) {
	tag, err := db.Exec(ctx, q.repair.resetKeyedSince, limit, since)
	return tag.RowsAffected(), err
}

// exec runs a statement on the rows refs name.
func (q *Queries) exec(ctx context.Context, db Executor, sql string, refs []Ref) error {
	xids, ids := refArrays(refs)
	_, err := db.Exec(ctx, sql, xids, ids)
	return err
}
