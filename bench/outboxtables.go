package main

// Everything the benchmark does to the library's own tables goes through
// outboxTables, on internal/store's statements: the project keeps SQL on
// those tables there.

import (
	"context"
	"fmt"
	"iter"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dj-signals/signals/internal/store"
)

// outboxTables addresses one schema's outbox, dead letters and inbox.
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

// dead counts the dead letters.
func (o outboxTables) dead(ctx context.Context, db *pgxpool.Pool) (int64, error) {
	c, err := o.q.Count(ctx, db)
	return c.Dead, err
}

// unfinished counts the rows whose receivers have not succeeded yet:
// pending or enqueued, dead ones aside.
func (o outboxTables) unfinished(ctx context.Context, db *pgxpool.Pool) (int64, error) {
	c, err := o.q.Count(ctx, db)
	return c.Live, err
}

// load writes rows into the outbox with COPY and returns how many.
func (o outboxTables) load(ctx context.Context, db *pgxpool.Pool, rows iter.Seq[store.Row]) (int64, error) {
	n, err := o.q.Load(ctx, db, rows)
	if err != nil {
		return n, fmt.Errorf("copy outbox rows: %w", err)
	}
	return n, nil
}

// truncate empties the outbox, the dead letters and the inbox.
func (o outboxTables) truncate(ctx context.Context, db *pgxpool.Pool) error {
	if err := o.q.Truncate(ctx, db); err != nil {
		return fmt.Errorf("truncate outbox tables: %w", err)
	}
	return nil
}

// vacuum runs VACUUM ANALYZE on the outbox, as autovacuum would after a
// bulk load.
func (o outboxTables) vacuum(ctx context.Context, db *pgxpool.Pool) error {
	if err := o.q.Vacuum(ctx, db); err != nil {
		return fmt.Errorf("vacuum outbox: %w", err)
	}
	return nil
}
