package store

import (
	"context"
	"strings"

	"github.com/jackc/pgx/v5"
)

// KitQueries holds the statements of the public test kit, package
// signalstest, for one schema: reads and claims narrowed to the work of one
// test, where the relay's statements take every row.
type KitQueries struct {
	takeEvents   string
	countPending string
	listPending  string
}

// NewKitQueries returns the test kit's statements for schema, which must
// pass ValidateSchema.
func NewKitQueries(schema string) (*KitQueries, error) {
	if err := ValidateSchema(schema); err != nil {
		return nil, err
	}
	r := strings.NewReplacer("{{schema}}", pgx.Identifier{schema}.Sanitize())
	return &KitQueries{
		takeEvents:   r.Replace(kitTakeEventsSQL),
		countPending: r.Replace(kitCountPendingSQL),
		listPending:  r.Replace(kitListPendingSQL),
	}, nil
}

// No index serves causation_id: the kit runs on test-sized outboxes.
const kitTakeEventsSQL = `WITH taken AS (
    DELETE FROM {{schema}}.outbox
    WHERE id IN (
        SELECT id FROM {{schema}}.outbox
        WHERE event_id = ANY($1::uuid[]) OR causation_id = ANY($1::uuid[])
        ORDER BY id
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    )
    RETURNING ` + rowColumns + `
)
SELECT * FROM taken ORDER BY id`

// TakeEvents deletes and returns up to limit rows, oldest first, that
// belong to one of the events or were sent by a receiver of one of them
// (their causation is one of the events), skipping rows another
// transaction holds.
func (k *KitQueries) TakeEvents(ctx context.Context, db Executor, events [][16]byte, limit int) ([]Row, error) {
	rows, err := db.Query(ctx, k.takeEvents, events, limit)
	if err != nil {
		return nil, err
	}
	return collectRows(rows)
}

// Task IDs are ULIDs, so "id >= since" keeps the rows written from since's
// millisecond on: uuid comparison is bytewise and a ULID starts with its
// time, big-endian. Rows are pending (outbox) or in flight (inflight).
const kitPendingRows = `SELECT ` + rowColumns + ` FROM {{schema}}.outbox WHERE signal = ANY($1::text[]) AND id >= $2
UNION ALL
SELECT ` + rowColumns + ` FROM {{schema}}.inflight WHERE signal = ANY($1::text[]) AND id >= $2`

const kitCountPendingSQL = `SELECT count(*) FROM (` + kitPendingRows + `) AS rows`

const kitListPendingSQL = kitPendingRows + `
ORDER BY id
LIMIT $3`

// CountPending counts the rows of the given signals whose ID is at least
// since and whose receivers have not succeeded, pending or in flight. Rows other transactions hold locked are counted too.
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
	return collectRows(rows)
}
