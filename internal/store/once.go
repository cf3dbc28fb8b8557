package store

import (
	"context"
	"github.com/jackc/pgx/v5"
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

// pruneInboxSQL deletes inbox rows processed before $1 whose task IDs come
// after $3, at most $2 of them, and returns how many and the last task ID
// it deleted, so that a million-row inbox goes in short transactions that
// hold no lock for long. No index serves processed_at (the senders of Once
// would pay for it); task IDs are ULIDs, so walking the primary key meets
// the oldest rows first and stops after $2 of them. Each chunk starts past
// the one before, not at the index's start, where the entries of the rows
// already deleted wait for vacuum: a million-row prune then costs each
// chunk its own rows, not every chunk's before it.
const pruneInboxSQL = `WITH gone AS (
    DELETE FROM {{schema}}.inbox
    WHERE task_id IN (
        SELECT task_id FROM {{schema}}.inbox WHERE task_id > $3 AND processed_at < $1 ORDER BY task_id LIMIT $2
    )
    RETURNING task_id
)
SELECT count(*), coalesce((array_agg(task_id ORDER BY task_id DESC))[1], $3) FROM gone`

// PruneInbox deletes up to limit inbox rows processed before before whose
// task IDs come after after (the zero ID: from the first), and reports how
// many and the last task ID deleted: the next call's after. Call it until
// it reports fewer than limit.
func (q *Queries) PruneInbox(ctx context.Context, db Executor, before time.Time, after [16]byte, limit int) (int64, [16]byte, error) {
	rows, err := db.Query(ctx, q.once.pruneInbox, before, limit, after)
	if err != nil {
		return 0, after, err
	}
	var n int64
	var last [16]byte
	_, err = pgx.ForEachRow(rows, []any{&n, &last}, func() error { return nil })
	return n, last, err
}
