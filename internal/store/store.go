// Package store holds every SQL statement of the library: the embedded
// migrations and the queries on the outbox tables. Nothing outside this
// package writes SQL text.
package store

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrInvalidSchema is returned for a schema name that is not a plain
// lowercase PostgreSQL identifier.
var ErrInvalidSchema = errors.New("signals: invalid schema name")

var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// ValidateSchema checks that name is a lowercase identifier of at most 63
// bytes: letters, digits and underscores, not starting with a digit.
func ValidateSchema(name string) error {
	if !schemaName.MatchString(name) {
		return fmt.Errorf("%w %q: use 1 to 63 lowercase letters, digits or underscores, not starting with a digit", ErrInvalidSchema, name)
	}
	return nil
}

// Queries holds the statements for one schema, built once so that hot paths
// do no string work and pgx can cache the prepared statements by text.
type Queries struct {
	schema string

	insertPrefix string
	inserts      sync.Map // insertShape → INSERT text
	claim        string
	heads        string // the ordered claim's statements (ordering.go)
	lockKeys     string
	claimHeads   string
	claimed      string
	delete       string
	once         string
	sent         string
	pending      string
	ledger       ledgerStatements
	dead         deadStatements
	stats        statsStatements
}

// New returns the statements for schema, which must pass ValidateSchema.
func New(schema string) (*Queries, error) {
	if err := ValidateSchema(schema); err != nil {
		return nil, err
	}
	s := pgx.Identifier{schema}.Sanitize()
	r := strings.NewReplacer("{{schema}}", s)
	return &Queries{
		schema:       schema,
		insertPrefix: r.Replace(insertColumns),
		claim:        r.Replace(claimSQL),
		heads:        r.Replace(headsSQL),
		lockKeys:     r.Replace(lockKeysSQL),
		claimHeads:   r.Replace(claimHeadsSQL),
		claimed:      r.Replace(claimedSQL),
		delete:       r.Replace(deleteSQL),
		once:         r.Replace(onceSQL),
		sent:         r.Replace(sentSQL),
		pending:      r.Replace(pendingSQL),
		ledger:       newLedgerStatements(r),
		dead:         newDeadStatements(r),
		stats:        newStatsStatements(r),
	}, nil
}

// Schema returns the schema the statements address.
func (q *Queries) Schema() string { return q.schema }

// Executor is what a statement runs on: a pgx.Tx, *pgx.Conn or *pgxpool.Pool.
type Executor interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Event is what one SendReliable call writes: the fields every row shares.
type Event struct {
	ID            [16]byte
	CorrelationID [16]byte
	CausationID   *[16]byte
	Depth         int
	Signal        string
	ProcessAt     *time.Time
	Payload       []byte
	Headers       map[string]string // carried to the receivers; none is stored as NULL
}

// Target is one receiver's row of an event.
type Target struct {
	TaskID      [16]byte
	Receiver    string
	Queue       string
	MaxRetry    int
	TimeoutMS   int64
	OrderingKey string // "" for none
}

const insertColumns = `INSERT INTO {{schema}}.outbox
    (id, event_id, correlation_id, causation_id, depth, signal, receiver, queue,
     max_retry, timeout_ms, process_at, payload, headers, ordering_key, ordering_seq)
VALUES `

// sharedParams are the event's values, bound once as $1..$8 and referenced
// by every row; each row adds rowParams of its own, and one more for its
// ordering key when the event has one.
const (
	sharedParams = 8
	rowParams    = 5
)

// insertShape names one INSERT text: how many rows, and whether they carry
// ordering keys.
type insertShape struct {
	rows  int
	keyed bool
}

// insertStatement returns the INSERT for a shape: a plain multi-row VALUES,
// which measured faster than INSERT ... SELECT FROM unnest(arrays) (no array
// encoding, no function scan). One text per shape, so pgx caches each
// prepared statement once. A keyed row takes its number from the ordering
// sequence; an event without keys writes NULLs and touches no sequence.
func (q *Queries) insertStatement(shape insertShape) string {
	if sql, ok := q.inserts.Load(shape); ok {
		return sql.(string)
	}
	per := rowParams
	if shape.keyed {
		per++
	}
	seq := pgx.Identifier{q.schema, "ordering_seq"}.Sanitize()
	var b strings.Builder
	b.WriteString(q.insertPrefix)
	for i := range shape.rows {
		p := sharedParams + per*i
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "($%d, $1, $2, $3, $4, $5, $%d, $%d, $%d, $%d, $6, $7, $8, ", p+1, p+2, p+3, p+4, p+5)
		if shape.keyed {
			fmt.Fprintf(&b, "NULLIF($%d::text, ''), CASE WHEN $%d::text = '' THEN NULL ELSE nextval('%s') END)", p+6, p+6, seq)
		} else {
			b.WriteString("NULL, NULL)")
		}
	}
	sql, _ := q.inserts.LoadOrStore(shape, b.String())
	return sql.(string)
}

// Insert writes one row per target with a single statement, whatever the
// number of targets.
func (q *Queries) Insert(ctx context.Context, db Executor, e Event, targets []Target) error {
	shape := insertShape{rows: len(targets)}
	for _, t := range targets {
		shape.keyed = shape.keyed || t.OrderingKey != ""
	}
	args := make([]any, 0, sharedParams+(rowParams+1)*len(targets))
	args = append(args, e.ID, e.CorrelationID, e.CausationID, e.Depth, e.Signal, e.ProcessAt, e.Payload, headersOrNil(e.Headers))
	for _, t := range targets {
		args = append(args, t.TaskID, t.Receiver, t.Queue, t.MaxRetry, t.TimeoutMS)
		if shape.keyed {
			args = append(args, t.OrderingKey)
		}
	}
	_, err := db.Exec(ctx, q.insertStatement(shape), args...)
	return err
}

// Row is an outbox row as the relay sees it.
type Row struct {
	ID            [16]byte
	EventID       [16]byte
	CorrelationID [16]byte
	CausationID   *[16]byte
	Depth         int
	Signal        string
	Receiver      string
	Queue         string
	MaxRetry      int
	TimeoutMS     int64
	ProcessAt     *time.Time
	Payload       []byte
	Attempts      int     // failed enqueue attempts
	LastError     *string // the last enqueue error
	Enqueues      int     // successful enqueues so far
	Generation    int     // requeues from dead so far
	Headers       map[string]string
	OrderingKey   *string // nil: delivered in no particular order
	OrderingSeq   *int64  // the row's place among its key's rows
}

const rowColumns = `id, event_id, correlation_id, causation_id, depth, signal, receiver, queue,
    max_retry, timeout_ms, process_at, payload, attempts, last_error, enqueues, generation, headers,
    ordering_key, ordering_seq`

// headersOrNil stores no headers as NULL rather than an empty object.
func headersOrNil(h map[string]string) map[string]string {
	if len(h) == 0 {
		return nil
	}
	return h
}

// SKIP LOCKED over every pending row without an ordering key, never an
// "id > last seen" cursor: a row with a lower ID can commit after one with a
// higher ID. Rows waiting out an enqueue failure's backoff are skipped until
// due; enqueued rows are in inflight, not here. Rows with a key are claimed
// key by key (claimOrdered).
const claimSQL = `SELECT id, octet_length(payload)
FROM {{schema}}.outbox
WHERE ordering_key IS NULL AND (next_attempt_at IS NULL OR next_attempt_at <= now())
ORDER BY id
LIMIT $1
FOR UPDATE SKIP LOCKED`

const claimedSQL = `SELECT ` + rowColumns + `
FROM {{schema}}.outbox
WHERE id = ANY($1::uuid[])
ORDER BY id`

// Claim locks up to limit pending rows that are due in tx and returns the
// first of them whose payloads add up to at most maxBytes (always at least
// one), so that a batch of large payloads stays small in memory. Up to half
// the batch goes to rows with an ordering key, each the first of its key
// with none of its key in flight, walked from cursor on (see claimOrdered),
// unless cursor is nil; the rest to rows without a key, oldest first. Rows
// another relay holds are skipped; rows past maxBytes stay locked,
// untouched, until tx ends.
func (q *Queries) Claim(ctx context.Context, tx pgx.Tx, limit, maxBytes int, cursor *KeyCursor) ([]Row, error) {
	var ids [][16]byte
	var total int
	if cursor != nil {
		var err error
		if ids, total, err = q.claimOrdered(ctx, tx, (limit+1)/2, maxBytes, cursor); err != nil {
			return nil, err
		}
	}
	if len(ids) < limit && (len(ids) == 0 || total < maxBytes) {
		rows, err := tx.Query(ctx, q.claim, limit-len(ids))
		if err != nil {
			return nil, err
		}
		if ids, total, err = takeWithin(rows, ids, total, maxBytes); err != nil {
			return nil, err
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	rows, err := tx.Query(ctx, q.claimed, ids)
	if err != nil {
		return nil, err
	}
	return collectRows(rows)
}

// takeWithin appends to ids, whose payloads add up to total bytes, the
// (id, payload bytes) rows that keep the sum at most maxBytes, and always
// one if ids is empty; the rows past it stay locked, untouched.
func takeWithin(rows pgx.Rows, ids [][16]byte, total, maxBytes int) ([][16]byte, int, error) {
	var id [16]byte
	var size int
	_, err := pgx.ForEachRow(rows, []any{&id, &size}, func() error {
		if len(ids) == 0 || total+size <= maxBytes {
			ids = append(ids, id)
			total += size
		}
		return nil
	})
	return ids, total, err
}

func collectRows(rows pgx.Rows) ([]Row, error) {
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Row, error) {
		var row Row
		err := r.Scan(row.fields()...)
		return row, err
	})
}

// fields are the scan destinations of rowColumns, in order.
func (row *Row) fields() []any {
	return []any{&row.ID, &row.EventID, &row.CorrelationID, &row.CausationID, &row.Depth,
		&row.Signal, &row.Receiver, &row.Queue, &row.MaxRetry, &row.TimeoutMS,
		&row.ProcessAt, &row.Payload, &row.Attempts, &row.LastError, &row.Enqueues, &row.Generation, &row.Headers,
		&row.OrderingKey, &row.OrderingSeq}
}

// An ack looks in outbox first: a row whose task a worker ran before the
// relay's batch committed is still there, locked, and the DELETE waits for
// the batch. The second statement's fresh snapshot then sees the row in
// inflight, where the batch moved it.
const deleteSQL = `DELETE FROM {{schema}}.outbox WHERE id = ANY($1::uuid[])`

// Delete removes the rows with the given IDs, pending or in flight: the
// worker's acks. Run it in a transaction, or on a pool: it sends two or
// three statements, which must not share a snapshot.
func (q *Queries) Delete(ctx context.Context, db Executor, ids [][16]byte) error {
	pending, err := db.Exec(ctx, q.delete, ids)
	if err != nil {
		return err
	}
	inflight, err := db.Exec(ctx, q.ledger.deleteInflight, ids)
	if err != nil || pending.RowsAffected()+inflight.RowsAffected() == int64(len(ids)) {
		return err
	}
	// A repair that moved a row from inflight back to outbox (Redis lost
	// its task) while the second statement waited on it commits the row
	// where the first statement no longer looks: look there once more, or
	// the row would be enqueued again as a task Redis already ran.
	_, err = db.Exec(ctx, q.delete, ids)
	return err
}

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

const sentSQL = `SELECT ` + rowColumns + ` FROM {{schema}}.outbox WHERE signal = $1
UNION ALL
SELECT ` + rowColumns + ` FROM {{schema}}.inflight WHERE signal = $1
ORDER BY id`

// Sent lists the rows of one signal whose receivers have not succeeded,
// pending or in flight, oldest first.
func (q *Queries) Sent(ctx context.Context, db Executor, signal string) ([]Row, error) {
	rows, err := db.Query(ctx, q.sent, signal)
	if err != nil {
		return nil, err
	}
	return collectRows(rows)
}

const pendingSQL = `SELECT ` + rowColumns + ` FROM {{schema}}.outbox
UNION ALL
SELECT ` + rowColumns + ` FROM {{schema}}.inflight
ORDER BY id`

// Pending lists every row whose receiver has not succeeded, pending or in
// flight, oldest first, without locking any: it is for tests and tools that
// look at the outbox, not for a relay, which claims.
func (q *Queries) Pending(ctx context.Context, db Executor) ([]Row, error) {
	rows, err := db.Query(ctx, q.pending)
	if err != nil {
		return nil, err
	}
	return collectRows(rows)
}

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migration is one versioned schema change.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations returns the migrations for schema in version order, with the
// schema name quoted into the SQL.
func Migrations(schema string) ([]Migration, error) {
	if err := ValidateSchema(schema); err != nil {
		return nil, err
	}
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	quoted := pgx.Identifier{schema}.Sanitize()
	out := make([]Migration, 0, len(names))
	for _, path := range names {
		body, err := migrationFiles.ReadFile(path)
		if err != nil {
			return nil, err
		}
		base := strings.TrimSuffix(strings.TrimPrefix(path, "migrations/"), ".sql")
		num, name, ok := strings.Cut(base, "_")
		version, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration file %q: want NNN_name.sql", path)
		}
		out = append(out, Migration{
			Version: version,
			Name:    name,
			SQL:     strings.ReplaceAll(string(body), "{{schema}}", quoted),
		})
	}
	return out, nil
}

// Applied returns the versions recorded in schema's schema_migrations
// table, in order.
func Applied(ctx context.Context, db Executor, schema string) ([]int, error) {
	if err := ValidateSchema(schema); err != nil {
		return nil, err
	}
	rows, err := db.Query(ctx, `SELECT version FROM `+pgx.Identifier{schema, "schema_migrations"}.Sanitize()+` ORDER BY version`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int])
}

// Tables returns the sorted names of the tables in schema.
func Tables(ctx context.Context, db Executor, schema string) ([]string, error) {
	rows, err := db.Query(ctx, `SELECT tablename::text FROM pg_catalog.pg_tables WHERE schemaname = $1 ORDER BY tablename`, schema)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// Beginner starts transactions: *pgxpool.Pool, *pgx.Conn and pgx.Tx all are.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Migrate applies the migrations of schema that are not yet recorded in its
// schema_migrations table, in one transaction. A transaction-scoped advisory
// lock keyed on the schema serializes concurrent callers, so several
// processes may migrate at start-up at once.
func Migrate(ctx context.Context, db Beginner, schema string) error {
	migrations, err := Migrations(schema)
	if err != nil {
		return err
	}
	quoted := pgx.Identifier{schema}.Sanitize()
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, "dj-signals/migrate/"+schema); err != nil {
			return fmt.Errorf("take migration lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+quoted); err != nil {
			return fmt.Errorf("create schema: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+quoted+`.schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		var current int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM `+quoted+`.schema_migrations`).Scan(&current); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		for _, m := range migrations {
			if m.Version <= current {
				continue
			}
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("apply migration %03d_%s: %w", m.Version, m.Name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO `+quoted+`.schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name); err != nil {
				return fmt.Errorf("record migration %03d_%s: %w", m.Version, m.Name, err)
			}
		}
		return nil
	})
}

// TablesMissing reports whether err says a table or the schema of the
// library does not exist: the migrations were not applied.
func TablesMissing(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000") // undefined_table, invalid_schema_name
}
