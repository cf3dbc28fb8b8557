package main

// Everything the benchmark does to the library's own tables goes through
// outboxTables. The project keeps SQL on those tables in internal/store;
// insert and pending use store's statements. load, truncate and vacuum wait
// for store to offer theirs (Load, Truncate, Vacuum): until then their SQL
// lives here, and moving each is a one-line change in its body.

import (
	"context"
	"fmt"
	"iter"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dj-signals/signals/internal/store"
)

// outboxTables addresses one schema's outbox, outbox_failed and inbox.
type outboxTables struct {
	q *store.Queries
}

func newOutboxTables(schema string) (outboxTables, error) {
	q, err := store.New(schema)
	if err != nil {
		return outboxTables{}, err
	}
	return outboxTables{q: q}, nil
}

// insert writes one event's rows, one per target, with the statement
// SendReliable uses.
func (o outboxTables) insert(ctx context.Context, tx pgx.Tx, e store.Event, targets []store.Target) error {
	return o.q.Insert(ctx, tx, e, targets)
}

// pending counts the rows the relay has not enqueued yet, and those it set
// aside.
func (o outboxTables) pending(ctx context.Context, db *pgxpool.Pool) (pending, failed int64, err error) {
	return o.q.Count(ctx, db)
}

// loadColumns are the outbox columns load writes; the others keep their
// defaults (attempts 0, last_error NULL).
var loadColumns = []string{"id", "event_id", "correlation_id", "causation_id", "depth", "signal", "receiver", "queue",
	"max_retry", "timeout_ms", "process_at", "payload"}

// load writes rows into the outbox with COPY and returns how many.
// To become store's (*Queries).Load.
func (o outboxTables) load(ctx context.Context, db *pgxpool.Pool, rows iter.Seq[store.Row]) (int64, error) {
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
	n, err := db.CopyFrom(ctx, pgx.Identifier{o.q.Schema(), "outbox"}, loadColumns, src)
	if err != nil {
		return n, fmt.Errorf("copy outbox rows: %w", err)
	}
	return n, nil
}

// truncate empties the outbox, outbox_failed and inbox tables.
// To become store's (*Queries).Truncate.
func (o outboxTables) truncate(ctx context.Context, db *pgxpool.Pool) error {
	s := pgx.Identifier{o.q.Schema()}.Sanitize()
	if _, err := db.Exec(ctx, `TRUNCATE `+s+`.outbox, `+s+`.outbox_failed, `+s+`.inbox`); err != nil {
		return fmt.Errorf("truncate outbox tables: %w", err)
	}
	return nil
}

// vacuum runs VACUUM ANALYZE on the outbox, as autovacuum would after a
// bulk load.
// To become store's (*Queries).Vacuum.
func (o outboxTables) vacuum(ctx context.Context, db *pgxpool.Pool) error {
	if _, err := db.Exec(ctx, `VACUUM ANALYZE `+pgx.Identifier{o.q.Schema(), "outbox"}.Sanitize()); err != nil {
		return fmt.Errorf("vacuum outbox: %w", err)
	}
	return nil
}
