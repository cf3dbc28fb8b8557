package store

import (
	"context"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// The dead letters' statements: an operator lists, counts, requeues and
// discards, and looks up an event with its cascade (event.go).
type deadStatements struct {
	list     string
	count    string
	requeue  string
	discard  string
	retarget string
	event    eventStatements
}

func newDeadStatements(r *strings.Replacer) deadStatements {
	return deadStatements{
		list:     r.Replace(listDeadSQL),
		count:    r.Replace(countDeadSQL),
		requeue:  r.Replace(requeueDeadSQL),
		discard:  r.Replace(discardDeadSQL),
		retarget: r.Replace(retargetDeadSQL),
		event:    newEventStatements(r),
	}
}

// Dead is a dead letter: the row as it was, and why it died.
type Dead struct {
	Row
	Reason     string
	EnqueuedAt *time.Time // its last enqueue, if it ever was
	DeadAt     time.Time
}

// DeadFilter selects dead letters; a zero field matches all.
type DeadFilter struct {
	Signal    string
	Receiver  string
	DeadSince time.Time  // dead at or after
	DeadUntil time.Time  // dead before
	ErrorLike string     // substring of the error, case-insensitive
	IDs       [][16]byte // only these rows, when not nil
	EventIDs  [][16]byte // only these events' rows, when not nil
	Reason    string     // one of the Reason constants
	// AfterDeadAt and AfterID, when AfterDeadAt is not zero, select only
	// the letters past that one in the list's order (dead_at, id): a cursor
	// that stays put while letters before it are requeued or discarded.
	AfterDeadAt time.Time
	AfterID     [16]byte
	Limit       int // ignored by CountDead
}

// deadWhere is the condition of f's letters, $1 to $5 and $7 to $11.
const deadWhere = `($1 = '' OR signal = $1)
  AND ($2 = '' OR receiver = $2)
  AND ($3::timestamptz IS NULL OR dead_at >= $3)
  AND ($4::timestamptz IS NULL OR dead_at < $4)
  AND ($5 = '' OR strpos(lower(coalesce(last_error, '')), lower($5)) > 0)
  AND ($7::uuid[] IS NULL OR id = ANY($7))
  AND ($8::uuid[] IS NULL OR event_id = ANY($8))
  AND ($9 = '' OR reason = $9)
  AND ($10::timestamptz IS NULL OR (dead_at, id) > ($10, $11::uuid))`

var listDeadSQL = `SELECT ` + columns("", nil) + `, reason, enqueued_at, dead_at
FROM {{schema}}.dead
WHERE ` + deadWhere + `
ORDER BY dead_at, id
LIMIT $6`

// countDeadSQL has no use for $6, the list's limit, but names it so that
// both statements take the same arguments (PostgreSQL refuses a parameter
// it cannot type).
const countDeadSQL = `SELECT count(*) FROM {{schema}}.dead
WHERE $6::int IS NOT NULL AND ` + deadWhere

// args are f's values for deadWhere, and the limit as $6.
func (f DeadFilter) args() []any {
	return []any{f.Signal, f.Receiver, timeOrNil(f.DeadSince), timeOrNil(f.DeadUntil), f.ErrorLike, f.Limit,
		f.IDs, f.EventIDs, f.Reason, timeOrNil(f.AfterDeadAt), f.AfterID}
}

// ListDead returns the dead letters f selects, oldest death first.
func (q *Queries) ListDead(ctx context.Context, db Executor, f DeadFilter) ([]Dead, error) {
	rows, err := db.Query(ctx, q.dead.list, f.args()...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Dead, error) {
		var d Dead
		err := r.Scan(append(d.Row.fields(), &d.Reason, &d.EnqueuedAt, &d.DeadAt)...)
		return d, err
	})
}

// CountDead returns how many dead letters f selects, whatever its Limit.
func (q *Queries) CountDead(ctx context.Context, db Executor, f DeadFilter) (int64, error) {
	rows, err := db.Query(ctx, q.dead.count, f.args()...)
	if err != nil {
		return 0, err
	}
	return pgx.CollectExactlyOneRow(rows, pgx.RowTo[int64])
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// A requeued row goes back to the outbox as pending, with its attempts
// reset and its generation bumped: the archived asynq task may still hold
// the old task ID, so the new one must differ. Its xid is the requeueing
// transaction's, so the Dispatchers' position finds it as a new row.
var requeueDeadSQL = `WITH moved AS (
    DELETE FROM {{schema}}.dead WHERE id = ANY($1::uuid[])
    RETURNING *
)
INSERT INTO {{schema}}.outbox (` + columns("", nil) + `)
SELECT ` + columns("", map[string]string{"attempts": "0", "generation": "generation + 1"}) + `
FROM moved`

// RequeueDead moves dead letters back to the outbox and reports how many
// moved; unknown IDs are ignored.
func (q *Queries) RequeueDead(ctx context.Context, db Executor, ids [][16]byte) (int64, error) {
	tag, err := db.Exec(ctx, q.dead.requeue, ids)
	return tag.RowsAffected(), err
}

const discardDeadSQL = `DELETE FROM {{schema}}.dead WHERE id = ANY($1::uuid[])`

// DiscardDead deletes dead letters for good and reports how many.
func (q *Queries) DiscardDead(ctx context.Context, db Executor, ids [][16]byte) (int64, error) {
	tag, err := db.Exec(ctx, q.dead.discard, ids)
	return tag.RowsAffected(), err
}

const retargetDeadSQL = `UPDATE {{schema}}.dead SET queue = $2 WHERE id = ANY($1::uuid[])`

// RetargetDead points dead letters at another queue, as an operator does to
// fix rows that died for their queue name before requeueing them, and
// reports how many changed.
func (q *Queries) RetargetDead(ctx context.Context, db Executor, ids [][16]byte, queue string) (int64, error) {
	tag, err := db.Exec(ctx, q.dead.retarget, ids, queue)
	return tag.RowsAffected(), err
}
