// Package store holds every SQL statement of the library: the embedded
// migrations and the queries on the outbox tables. Nothing outside this
// package writes SQL text.
//
// A live row is in outbox from its sender's INSERT until its receiver
// succeeds (the ack's DELETE) or it dies (moved to dead). Which live rows
// are enqueued follows from the Dispatchers' position over the sending
// transactions' IDs (window.go), so the happy path writes nothing else;
// rows change one by one only off it: a failed enqueue or a repair waits in
// next_attempt_at (ledger.go, repair.go), and rows with an ordering key
// record their enqueue in enqueued_at (ordering.go).
package store

import (
	"context"
	"errors"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/dj-signals/signals/internal/envelope"
)

// Queries holds the statements for one schema, built once so that hot paths
// do no string work and pgx can cache the prepared statements by text.
type Queries struct {
	schema string

	insertPrefix string
	inserts      sync.Map // insertShape → INSERT text
	window       string
	restamp      string
	keyed        keyedStatements
	ledger       ledgerStatements
	repair       repairStatements
	dead         deadStatements
	stats        statsStatements
	once         onceStatements
}

// New returns the statements for schema, which must pass
// envelope.ValidateSchema.
func New(schema string) (*Queries, error) {
	if err := envelope.ValidateSchema(schema); err != nil {
		return nil, err
	}
	r := strings.NewReplacer("{{schema}}", pgx.Identifier{schema}.Sanitize())
	return &Queries{
		schema:       schema,
		insertPrefix: r.Replace(insertColumns),
		window:       r.Replace(windowSQL),
		restamp:      r.Replace(restampSQL),
		keyed:        newKeyedStatements(r),
		ledger:       newLedgerStatements(r),
		repair:       newRepairStatements(r),
		dead:         newDeadStatements(r),
		stats:        newStatsStatements(r),
		once:         newOnceStatements(r),
	}, nil
}

// Schema returns the schema the statements address.
func (q *Queries) Schema() string { return q.schema }

// Executor is what a statement runs on: a pgx.Tx, *pgx.Conn or *pgxpool.Pool.
type Executor interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Beginner starts transactions: *pgxpool.Pool, *pgx.Conn and pgx.Tx all are.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// DB runs statements on their own and starts transactions: a
// *pgxpool.Pool, usually.
type DB interface {
	Beginner
	Executor
}

// TablesMissing reports whether err says a table or the schema of the
// library does not exist: the migrations were not applied.
func TablesMissing(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000") // undefined_table, invalid_schema_name
}
