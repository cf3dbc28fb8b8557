package signalstest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/relay"
	"github.com/dj-signals/signals/internal/store"
)

// Eager runs receivers in-process, right after each commit, with no relay
// and no Redis. Pass it where the code under test takes a
// signals.TxBeginner (pgx.BeginFunc accepts it too): transactions it begins
// run, on Commit, every receiver of every row then in the outbox, and
// Commit returns their errors. Unlike an "eager" task backend that swallows
// failures, a receiver's error reaches the test.
//
// Each receiver runs once, with Attempt 1 and no retry; delays are ignored.
// Signals the receivers send are run too, until the outbox is empty.
type Eager struct {
	db  signals.TxBeginner
	reg *signals.Registry
	q   *store.Queries
}

// NewEager returns an Eager beginning transactions on db (a *pgxpool.Pool)
// and running the receivers of reg.
func NewEager(db signals.TxBeginner, reg *signals.Registry) (*Eager, error) {
	q, err := store.New(reg.Schema())
	if err != nil {
		return nil, err
	}
	return &Eager{db: db, reg: reg, q: q}, nil
}

// Begin starts a transaction whose Commit runs the receivers.
func (e *Eager) Begin(ctx context.Context) (pgx.Tx, error) {
	tx, err := e.db.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return &eagerTx{Tx: tx, eager: e}, nil
}

type eagerTx struct {
	pgx.Tx
	eager *Eager
}

// Commit commits, then runs the receivers. A receiver's error is returned,
// though the transaction's changes stay committed.
func (tx *eagerTx) Commit(ctx context.Context) error {
	if err := tx.Tx.Commit(ctx); err != nil {
		return err
	}
	return tx.eager.Run(ctx)
}

// Run delivers every row in the outbox to its receiver, in-process, until
// the outbox is empty, and returns the receivers' errors joined.
func (e *Eager) Run(ctx context.Context) error {
	var errs []error
	for {
		n, err := e.batch(ctx, &errs)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		if n == 0 {
			return errors.Join(errs...)
		}
	}
}

// batch takes up to 100 rows out of the outbox, committing before it runs
// their receivers: a receiver that sends through this Eager commits and
// runs its own cascade without waiting for a connection held here.
func (e *Eager) batch(ctx context.Context, errs *[]error) (int, error) {
	var rows []store.Row
	err := pgx.BeginFunc(ctx, e.db, func(tx pgx.Tx) (err error) {
		if rows, err = e.q.Claim(ctx, tx, 100); err != nil || len(rows) == 0 {
			return err
		}
		ids := make([][16]byte, len(rows))
		for i, row := range rows {
			ids[i] = row.ID
		}
		return e.q.Delete(ctx, tx, ids)
	})
	if err != nil {
		return 0, err
	}
	for _, row := range rows {
		task, _, err := relay.Task(row, time.Second)
		if err == nil {
			err = e.reg.ProcessTask(ctx, task)
		}
		if err != nil {
			*errs = append(*errs, fmt.Errorf("receiver %q of %q: %w", row.Receiver, row.Signal, err))
		}
	}
	return len(rows), nil
}
