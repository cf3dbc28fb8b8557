package store

import (
	"context"
	"iter"

	"github.com/jackc/pgx/v5"
)

// Copier bulk-loads rows: *pgxpool.Pool, *pgx.Conn and pgx.Tx are.
type Copier interface {
	CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error)
}

// loadColumns are the outbox columns Load writes; the others keep their
// defaults, as for a row SendReliable just wrote.
var loadColumns = []string{"id", "event_id", "correlation_id", "causation_id", "depth", "signal", "receiver", "queue",
	"max_retry", "timeout_ms", "process_at", "payload"}

// Load writes rows into the outbox with COPY, as pending rows, and returns
// how many: a backlog for benchmarks and tools, far faster than inserts.
func (q *Queries) Load(ctx context.Context, db Copier, rows iter.Seq[Row]) (int64, error) {
	next, stop := iter.Pull(rows)
	defer stop()
	src := pgx.CopyFromFunc(func() ([]any, error) {
		r, ok := next()
		if !ok {
			return nil, nil
		}
		return []any{r.ID, r.EventID, r.CorrelationID, r.CausationID, r.Depth, r.Signal, r.Receiver, r.Queue,
			r.MaxRetry, r.TimeoutMS, r.ProcessAt, r.Payload}, nil
	})
	return db.CopyFrom(ctx, pgx.Identifier{q.schema, "outbox"}, loadColumns, src)
}

// Truncate empties the outbox, the dead letters and the inbox.
func (q *Queries) Truncate(ctx context.Context, db Executor) error {
	s := pgx.Identifier{q.schema}.Sanitize()
	_, err := db.Exec(ctx, `TRUNCATE `+s+`.outbox, `+s+`.dead, `+s+`.inbox`)
	return err
}

// Vacuum runs VACUUM ANALYZE on the outbox, as autovacuum would after a
// bulk load. It cannot run inside a transaction: pass a pool or connection.
func (q *Queries) Vacuum(ctx context.Context, db Executor) error {
	_, err := db.Exec(ctx, `VACUUM ANALYZE `+pgx.Identifier{q.schema, "outbox"}.Sanitize())
	return err
}
