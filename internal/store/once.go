package store

import (
	"context"
	"strings"
	"time"
)

// The statements a receiver's own transaction runs to apply its effects
// once: Consume, which removes the delivery's row (the ledger row is the
// inbox), and the older inbox table Once writes to.
type onceStatements struct {
	consume, once, pruneInbox string
}

func newOnceStatements(r *strings.Replacer) onceStatements {
	return onceStatements{
		consume:    r.Replace(consumeSQL),
		once:       r.Replace(onceSQL),
		pruneInbox: r.Replace(pruneInboxSQL),
	}
}

const consumeSQL = `DELETE FROM {{schema}}.outbox WHERE xid = $1 AND id = $2`

// Consume removes the row ref names and reports whether this call removed
// it. In the receiver's transaction, the row is the delivery's inbox: while
// it exists, the effects have not been applied. A concurrent call for the
// same row waits for the first one's transaction and reports false if it
// commits, true if it rolls back.
func (q *Queries) Consume(ctx context.Context, db Executor, ref Ref) (bool, error) {
	tag, err := db.Exec(ctx, q.once.consume, ref.XID, ref.ID)
	return tag.RowsAffected() == 1, err
}

const onceSQL = `INSERT INTO {{schema}}.inbox (task_id, event_id, signal, receiver)
VALUES ($1, $2, $3, $4)
ON CONFLICT (task_id) DO NOTHING`

// Once records a task in the inbox and reports whether this call recorded
// it. A concurrent call for the same task waits for the first one's
// transaction and reports false if it commits.
func (q *Queries) Once(ctx context.Context, db Executor, taskID, eventID [16]byte, signal, receiver string) (bool, error) {
	tag, err := db.Exec(ctx, q.once.once, taskID, eventID, signal, receiver)
	return tag.RowsAffected() == 1, err
}

// pruneInboxSQL deletes inbox rows processed before $1, at most $2 of them,
// so that a million-row inbox goes in short transactions that hold no lock
// for long. No index serves processed_at (the senders of Once would pay for
// it); task IDs are ULIDs, so walking the primary key meets the oldest rows
// first and stops after $2 of them.
const pruneInboxSQL = `DELETE FROM {{schema}}.inbox
WHERE task_id IN (
    SELECT task_id FROM {{schema}}.inbox WHERE processed_at < $1 ORDER BY task_id LIMIT $2
)`

// PruneInbox deletes up to limit inbox rows processed before before and
// reports how many. Call it until it reports fewer than limit.
func (q *Queries) PruneInbox(ctx context.Context, db Executor, before time.Time, limit int) (int64, error) {
	tag, err := db.Exec(ctx, q.once.pruneInbox, before, limit)
	return tag.RowsAffected(), err
}
