package store

import (
	"context"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/dj-signals/signals/internal/envelope"
)

// KitQueries holds the statements of the public test kit, package
// signalstest, and of the library's own tests, for one schema: reads and
// takes narrowed to the work of one test, where the relay's statements
// take every row.
type KitQueries struct {
	eventRows    string
	countPending string
	listPending  string
	sent         string
	live         string
}

// NewKitQueries returns the test kit's statements for schema, which must
// pass envelope.ValidateSchema.
func NewKitQueries(schema string) (*KitQueries, error) {
	if err := envelope.ValidateSchema(schema); err != nil {
		return nil, err
	}
	r := strings.NewReplacer("{{schema}}", pgx.Identifier{schema}.Sanitize())
	return &KitQueries{
		eventRows:    r.Replace(kitEventRowsSQL),
		countPending: r.Replace(kitCountPendingSQL),
		listPending:  r.Replace(kitListPendingSQL),
		sent:         r.Replace(kitSentSQL),
		live:         r.Replace(kitLiveSQL),
	}, nil
}

// No index serves event_id or causation_id: the kit runs on test-sized
// outboxes.
var kitEventRowsSQL = `SELECT ` + liveColumns + ` FROM {{schema}}.outbox
WHERE (event_id = ANY($1::uuid[]) OR causation_id = ANY($1::uuid[])) AND NOT id = ANY(coalesce($2::uuid[], '{}'))
ORDER BY id
LIMIT $3`

// EventRows returns up to limit live rows, oldest first, that belong to one
// of the events or were sent by a receiver of one of them (their causation
// is one of the events), but for the rows seen, without locking any.
func (k *KitQueries) EventRows(ctx context.Context, db Executor, events, seen [][16]byte, limit int) ([]Row, error) {
	rows, err := db.Query(ctx, k.eventRows, events, seen, limit)
	if err != nil {
		return nil, err
	}
	return collectLive(rows)
}

// Task IDs are ULIDs, so "id >= since" keeps the rows written from since's
// millisecond on: uuid comparison is bytewise and a ULID starts with its
// time, big-endian.
var kitPendingRows = `SELECT ` + liveColumns + ` FROM {{schema}}.outbox WHERE signal = ANY($1::text[]) AND id >= $2`

var kitCountPendingSQL = `SELECT count(*) FROM (` + kitPendingRows + `) AS rows`

var kitListPendingSQL = kitPendingRows + `
ORDER BY id
LIMIT $3`

// CountPending counts the live rows of the given signals whose ID is at
// least since: their receivers have not succeeded, pending or in flight.
// Rows other transactions hold locked are counted too.
func (k *KitQueries) CountPending(ctx context.Context, db Executor, signals []string, since [16]byte) (int64, error) {
	rows, err := db.Query(ctx, k.countPending, signals, since)
	if err != nil {
		return 0, err
	}
	return pgx.CollectExactlyOneRow(rows, pgx.RowTo[int64])
}

// ListPending lists up to limit of the rows CountPending counts, oldest
// first.
func (k *KitQueries) ListPending(ctx context.Context, db Executor, signals []string, since [16]byte, limit int) ([]Row, error) {
	rows, err := db.Query(ctx, k.listPending, signals, since, limit)
	if err != nil {
		return nil, err
	}
	return collectLive(rows)
}

var kitSentSQL = `SELECT ` + liveColumns + ` FROM {{schema}}.outbox WHERE signal = $1 ORDER BY id`

// Sent lists the live rows of one signal, oldest first.
func (k *KitQueries) Sent(ctx context.Context, db Executor, signal string) ([]Row, error) {
	rows, err := db.Query(ctx, k.sent, signal)
	if err != nil {
		return nil, err
	}
	return collectLive(rows)
}

var kitLiveSQL = `SELECT ` + liveColumns + ` FROM {{schema}}.outbox ORDER BY id`

// Live lists every live row, oldest first, without locking any: for tests
// and tools that look at the outbox, not for a relay.
func (k *KitQueries) Live(ctx context.Context, db Executor) ([]Row, error) {
	rows, err := db.Query(ctx, k.live)
	if err != nil {
		return nil, err
	}
	return collectLive(rows)
}
