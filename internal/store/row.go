package store

import (
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Row is one receiver's row of an event, live (in outbox) or dead.
type Row struct {
	XID           uint64 // the sending transaction's ID; 0 for a dead letter
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
	Attempts      int     // failed enqueue attempts; a dead letter's failed attempts
	LastError     *string // the last enqueue error; a dead letter's error
	Enqueues      int     // times its task was found lost and sent again (repair, a Redis that lost data)
	Generation    int     // requeues from dead and reissues so far
	Headers       map[string]string
	OrderingKey   *string // nil: delivered in no particular order
	OrderingSeq   *int64  // the row's place among its key's rows
}

// Ref names a live row: its primary key, which its task carries.
type Ref struct {
	XID uint64
	ID  [16]byte
}

// Ref returns the row's primary key.
func (row *Row) Ref() Ref { return Ref{XID: row.XID, ID: row.ID} }

// rowColumns are the columns of an event's row that every table holding
// it carries, live or dead, in the order of Row.fields. Each statement that
// reads, copies or moves rows is built from this list.
var rowColumns = []string{"id", "event_id", "correlation_id", "causation_id", "depth", "signal", "receiver", "queue",
	"max_retry", "timeout_ms", "process_at", "payload", "attempts", "last_error", "enqueues", "generation", "headers",
	"ordering_key", "ordering_seq"}

// fields are the scan destinations of rowColumns, in order.
func (row *Row) fields() []any {
	return []any{&row.ID, &row.EventID, &row.CorrelationID, &row.CausationID, &row.Depth,
		&row.Signal, &row.Receiver, &row.Queue, &row.MaxRetry, &row.TimeoutMS,
		&row.ProcessAt, &row.Payload, &row.Attempts, &row.LastError, &row.Enqueues, &row.Generation, &row.Headers,
		&row.OrderingKey, &row.OrderingSeq}
}

// liveFields are the scan destinations of liveColumns.
func (row *Row) liveFields() []any { return append([]any{&row.XID}, row.fields()...) }

// columns lists rowColumns for a SELECT, each prefixed with prefix (a table
// alias and a dot, or ""), and each named in with replaced by its
// expression there.
func columns(prefix string, with map[string]string) string {
	var b strings.Builder
	for i, c := range rowColumns {
		if i > 0 {
			b.WriteString(", ")
		}
		if expr, ok := with[c]; ok {
			b.WriteString(expr)
		} else {
			b.WriteString(prefix + c)
		}
	}
	return b.String()
}

// liveColumns are a live row's columns: its transaction's ID, then
// rowColumns.
var liveColumns = "xid, " + columns("", nil)

func collectLive(rows pgx.Rows) ([]Row, error) {
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Row, error) {
		var row Row
		err := r.Scan(row.liveFields()...)
		return row, err
	})
}

// refArrays are refs as the two arrays the statements take.
func refArrays(refs []Ref) ([]uint64, [][16]byte) {
	xids := make([]uint64, len(refs))
	ids := make([][16]byte, len(refs))
	for i, r := range refs {
		xids[i], ids[i] = r.XID, r.ID
	}
	return xids, ids
}

// byRef selects the rows refs name through the primary key, scanned for
// the two arrays' values, then pair by pair: a row requeued from dead keeps
// its ID under a new xid, so the two arrays matched apart could take a row
// for a stale ref of its old one. (A join on unnest of the pairs was
// planned as a hash join over the whole table.)
const byRef = `xid = ANY($1::xid8[]) AND id = ANY($2::uuid[]) AND ($1::xid8[])[array_position($2::uuid[], id)] = xid`

// headersOrNil stores no headers as NULL rather than an empty object.
func headersOrNil(h map[string]string) map[string]string {
	if len(h) == 0 {
		return nil
	}
	return h
}
