package signalstest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/oklog/ulid/v2"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/kithook"
	"github.com/dj-signals/signals/internal/relay"
	"github.com/dj-signals/signals/internal/store"
)

// eagerBatch is how many outbox rows one take deletes and returns.
const eagerBatch = 100

// Eager runs receivers in-process, right after each commit, with no relay
// and no Redis. Pass it where the code under test takes a
// signals.DB (pgx.BeginFunc accepts it too): when a transaction it
// began commits, Commit runs the receivers of the events sent through that
// transaction, and returns their errors. Unlike an "eager" task backend
// that swallows failures, a receiver's error reaches the test.
//
// An Eager runs exactly what its own transactions sent, plus their cascade:
// the signals that those receivers send with the ctx they were given (which
// carries the cause), whether through this Eager or through a plain pool,
// and so on down the cascade. It never takes another sender's rows: rows
// committed through a pool, by another Eager or by another test stay in the
// outbox. So tests that share one registry and schema, such as signals made
// with signals.New at package level, may each use an Eager and run in
// parallel; see the package documentation for what does not isolate.
//
// Only events sent with the pgx.Tx that Begin returned, or a savepoint of
// it, are recorded: a wrapper of that Tx hides it from SendReliable. An
// event sent through a savepoint that rolls back is forgotten with it.
//
// Each delivery runs as a Worker runs it, retries included, but at once:
// a failing receiver is called again right away, with Attempt one higher,
// until it succeeds, returns a [signals.Permanent] error, or has run
// MaxRetries+1 times (the receiver's option; 20 retries by default). So a
// receiver that fails twice and then succeeds leaves Commit returning nil.
// Commit returns the last error of every delivery that ended dead, naming
// its receiver, joined; the transaction's changes stay committed all the
// same. [signals.At] and Backoff are ignored, and nothing is logged: the
// errors are Commit's.
//
// An Eager is safe for concurrent use; each transaction, like any pgx.Tx,
// is used by one goroutine at a time.
type Eager struct {
	db  signals.DB
	reg *signals.Registry
	q   *store.Queries
	kit *store.KitQueries
}

// NewEager returns an Eager beginning transactions on db (a *pgxpool.Pool)
// and running the receivers of reg, whose schema holds the outbox. It never
// closes db.
func NewEager(db signals.DB, reg *signals.Registry) (*Eager, error) {
	q, err := store.New(reg.Schema())
	if err != nil {
		return nil, err
	}
	kit, err := store.NewKitQueries(reg.Schema())
	if err != nil {
		return nil, err
	}
	return &Eager{db: db, reg: reg, q: q, kit: kit}, nil
}

// Begin starts a transaction whose Commit runs the receivers of the events
// sent through it.
func (e *Eager) Begin(ctx context.Context) (pgx.Tx, error) {
	tx, err := e.db.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return &eagerTx{Tx: tx, eager: e}, nil
}

// Exec runs a statement on db, outside any transaction of the Eager's: an
// event sent that way is not the Eager's to run.
func (e *Eager) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return e.db.Exec(ctx, sql, args...)
}

// Query runs a query on db, outside any transaction of the Eager's.
func (e *Eager) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return e.db.Query(ctx, sql, args...)
}

// eagerTx records the events sent through it. A savepoint's eagerTx hands
// its records to its parent when released and drops them when rolled back,
// so a top-level Commit knows exactly which committed events it sent.
type eagerTx struct {
	pgx.Tx
	eager  *Eager
	parent *eagerTx // nil for the top-level transaction
	sent   [][16]byte
}

var _ kithook.Recorder = (*eagerTx)(nil)

// Sent records an event SendReliable wrote through tx.
func (tx *eagerTx) Sent(eventID [16]byte) { tx.sent = append(tx.sent, eventID) }

// Begin starts a savepoint that records its own events.
func (tx *eagerTx) Begin(ctx context.Context) (pgx.Tx, error) {
	sp, err := tx.Tx.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return &eagerTx{Tx: sp, eager: tx.eager, parent: tx}, nil
}

// Commit commits, or releases the savepoint, then, for a top-level
// transaction, runs the receivers, retries included. The error of each
// delivery that ended dead is returned, though the transaction's changes
// stay committed.
func (tx *eagerTx) Commit(ctx context.Context) error {
	sent := tx.sent
	tx.sent = nil
	if err := tx.Tx.Commit(ctx); err != nil {
		return err
	}
	if tx.parent != nil {
		tx.parent.sent = append(tx.parent.sent, sent...)
		return nil
	}
	if len(sent) == 0 {
		return nil
	}
	return tx.eager.run(ctx, sent)
}

// Rollback rolls back and forgets the events sent through tx.
func (tx *eagerTx) Rollback(ctx context.Context) error {
	tx.sent = nil
	return tx.Tx.Rollback(ctx)
}

// run delivers the rows of the sent events, and of the events their
// receivers send, in-process, until none is left, and returns the errors
// of the deliveries that ended dead, joined. Each row stays in the outbox
// while its receiver runs, as a Worker's does, so that signals.Consume
// finds it; then the row is removed, whatever the delivery came to.
func (e *Eager) run(ctx context.Context, sent [][16]byte) error {
	events := append([][16]byte(nil), sent...)
	known := make(map[[16]byte]bool, len(events))
	for _, id := range events {
		known[id] = true
	}
	found := map[[16]byte]bool{}
	var seen [][16]byte
	var errs []error
	for {
		rows, err := e.kit.EventRows(ctx, e.db, events, seen, eagerBatch)
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("signalstest: read the events' outbox rows: %w", err))...)
		}
		if len(rows) == 0 {
			break
		}
		for _, row := range rows {
			seen = append(seen, row.ID)
			found[row.EventID] = true
			if !known[row.EventID] {
				known[row.EventID] = true
				events = append(events, row.EventID)
			}
			if err := e.deliver(ctx, row); err != nil {
				errs = append(errs, fmt.Errorf("receiver %q of %q: %w", row.Receiver, row.Signal, err))
			}
			if err := e.q.Delete(ctx, e.db, []store.Ref{row.Ref()}); err != nil {
				return errors.Join(append(errs, fmt.Errorf("signalstest: remove a delivered outbox row: %w", err))...)
			}
		}
	}
	for _, id := range sent {
		if !found[id] {
			errs = append(errs, fmt.Errorf("signalstest: event %s was sent through the Eager but has no row in the outbox of schema %q: "+
				"its signal belongs to a registry on another schema, or a Dispatcher running on this schema took it", ulid.ULID(id), e.reg.Schema()))
		}
	}
	return errors.Join(errs...)
}

// deliver runs one row's delivery until it succeeds or ends dead, and
// returns the error it ended dead with.
func (e *Eager) deliver(ctx context.Context, row store.Row) error {
	task, _, err := relay.Task(row, e.reg.Schema(), time.Second)
	if err != nil {
		return err
	}
	taskID := ulid.ULID(row.ID).String()
	for attempt := 1; ; attempt++ {
		dead, err := kithook.Deliver(ctx, e.reg, task, taskID, row.Queue, attempt, row.MaxRetry)
		if err == nil || dead != "" || attempt > row.MaxRetry {
			return err
		}
	}
}
