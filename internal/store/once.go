package store

import "context"

const onceSQL = `INSERT INTO {{schema}}.inbox (task_id, event_id, signal, receiver)
VALUES ($1, $2, $3, $4)
ON CONFLICT (task_id) DO NOTHING`

// Once records a task in the inbox and reports whether this call recorded
// it. A concurrent call for the same task waits for the first one's
// transaction and reports false if it commits.
func (q *Queries) Once(ctx context.Context, db Executor, taskID, eventID [16]byte, signal, receiver string) (bool, error) {
	tag, err := db.Exec(ctx, q.once, taskID, eventID, signal, receiver)
	return tag.RowsAffected() == 1, err
}
