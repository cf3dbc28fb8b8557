package store

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Position is how far the Dispatchers have enqueued the rows without an
// ordering key, read through transaction snapshots as PgQ reads its ticks:
// a row is enqueued once its sending transaction is visible in Covered, or
// visible in Upto (the window being relayed) and no later than After in
// (xid, id) order; unless it waits in next_attempt_at. A transaction that
// commits after transactions with later IDs is visible in a later snapshot,
// so its rows come in a later window: none is skipped, and nothing is
// written per row to tell enqueued rows from pending ones.
type Position struct {
	Covered string // a pg_snapshot in text form
	Upto    string // "" when no window is open
	After   Ref    // the last row of the open window enqueued
}

// Start is the position before every row: the first Dispatcher of a ledger,
// or one whose Redis lost its data, enqueues every live row.
var Start = Position{Covered: "1:1:"}

// Window is one read of the rows past a position.
type Window struct {
	// Upto is the snapshot the window reads up to: the position's, or the
	// reading statement's own when no window was open; "" when no window
	// was open and no row was read (the position stays as it is).
	Upto string
	// Rows are the next rows of the window, in (xid, id) order.
	Rows []Row
	// Done says Rows are the window's last: the position may move on to
	// Covered: Upto.
	Done bool
}

// upto is the window's snapshot: the position's ($3), or the statement's
// own when no window is open, taken once (an InitPlan) rather than per row.
const upto = `coalesce($3::pg_snapshot, (SELECT pg_current_snapshot()))`

// windowSQL reads the rows whose transactions are visible in the window's
// snapshot and not in the covered one, in two index ranges: transactions
// from the covered snapshot's xmax on, past the last row taken ($1, $2:
// one row bound, so that the scan starts there rather than at the start of
// the index, whose dead entries a transaction held open keeps from
// vacuum), and those it saw in progress ($4, its xip list; PgQ's batch
// query). A transaction held open for long stays in the second, one index
// probe per read, and holds back no one else's rows. Flat, with plain
// parameters, so that its plan is cheap and cached.
var windowSQL = `(SELECT ` + upto + `::text, ` + liveColumns + `, octet_length(payload) FROM {{schema}}.outbox
 WHERE (xid, id) > ($1::xid8, $2::uuid) AND xid < pg_snapshot_xmax(` + upto + `)
   AND pg_visible_in_snapshot(xid, ` + upto + `) AND ordering_key IS NULL AND next_attempt_at IS NULL
 ORDER BY xid, id LIMIT $7)
UNION ALL
(SELECT ` + upto + `::text, ` + liveColumns + `, octet_length(payload) FROM {{schema}}.outbox
 WHERE xid = ANY($4::xid8[]) AND (xid, id) > ($5::xid8, $6::uuid)
   AND pg_visible_in_snapshot(xid, ` + upto + `) AND ordering_key IS NULL AND next_attempt_at IS NULL
 ORDER BY xid, id LIMIT $7)
ORDER BY 2, 3 LIMIT $7`

// Window reads up to limit rows past p whose payloads add up to at most
// maxBytes (always at least one), without locking or writing anything. The
// rows past maxBytes are read and dropped, not kept: a batch of large
// payloads stays small in memory.
func (q *Queries) Window(ctx context.Context, db Executor, p Position, limit, maxBytes int) (Window, error) {
	var uptoArg *string
	if p.Upto != "" {
		uptoArg = &p.Upto
	}
	xmax, xip, err := parseSnapshot(p.Covered)
	if err != nil {
		return Window{}, err
	}
	// The first range starts past the covered snapshot's last transaction
	// ID, or past the last row taken, whichever is later.
	from := Ref{XID: xmax - 1, ID: [16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	if p.After.XID > from.XID || p.After.XID == from.XID && bytes.Compare(p.After.ID[:], from.ID[:]) > 0 {
		from = p.After
	}
	rows, err := db.Query(ctx, q.window, from.XID, from.ID, uptoArg, xip, p.After.XID, p.After.ID, limit)
	if err != nil {
		return Window{}, err
	}
	defer rows.Close()
	w := Window{Upto: p.Upto}
	var row Row
	var size, total, read int
	capped := false
	dests := append(append([]any{&w.Upto}, row.liveFields()...), &size)
	for rows.Next() {
		read++
		row = Row{}
		if err := rows.Scan(dests...); err != nil {
			return Window{}, err
		}
		if capped = capped || len(w.Rows) > 0 && total+size > maxBytes; capped {
			continue // the rows stay in order: none after this one either
		}
		w.Rows = append(w.Rows, row)
		total += size
	}
	if err := rows.Err(); err != nil {
		return Window{}, err
	}
	w.Done = read < limit && len(w.Rows) == read
	return w, nil
}

const nextXIDSQL = `SELECT pg_snapshot_xmax(pg_current_snapshot())`

// NextXID returns the database's next transaction ID, the xmax of a
// snapshot taken now: a position past it was taken on another database,
// or before this one was restored from a backup.
func (q *Queries) NextXID(ctx context.Context, db Executor) (uint64, error) {
	rows, err := db.Query(ctx, nextXIDSQL)
	if err != nil {
		return 0, err
	}
	return pgx.CollectExactlyOneRow(rows, pgx.RowTo[uint64])
}

// parseSnapshot reads the xmax and the in-progress IDs of a pg_snapshot's
// text form, "xmin:xmax:xip,xip".
func parseSnapshot(s string) (uint64, []uint64, error) {
	parts := strings.SplitN(s, ":", 3)
	if len(parts) != 3 {
		return 0, nil, fmt.Errorf("snapshot %q: want xmin:xmax:xip", s)
	}
	xmax, err := strconv.ParseUint(parts[1], 10, 64)
	if err != nil {
		return 0, nil, fmt.Errorf("snapshot %q: %w", s, err)
	}
	xip := []uint64{}
	if parts[2] != "" {
		for _, f := range strings.Split(parts[2], ",") {
			x, err := strconv.ParseUint(f, 10, 64)
			if err != nil {
				return 0, nil, fmt.Errorf("snapshot %q: %w", s, err)
			}
			xip = append(xip, x)
		}
	}
	return xmax, xip, nil
}

// restampSQL gives rows whose transaction IDs are ahead of the database's
// xid 1, older than every transaction: rows restored from another
// cluster's dump carry that cluster's IDs, and no snapshot here would see
// them for a long while. A row the statement sees whose xid is not below
// its own snapshot's xmax can only be such a row. (Not "xid >
// pg_current_xact_id()": the planner evaluates that to estimate the scan,
// which hands the statement an ID before its snapshot is taken, and rows
// of transactions that commit in between look ahead of it.)
const restampSQL = `UPDATE {{schema}}.outbox SET xid = '1' WHERE xid >= pg_snapshot_xmax(pg_current_snapshot())`

// Restamp makes rows carrying transaction IDs from ahead of the database's
// own visible to every position past Start, and reports how many it
// changed: a restored database's Dispatchers then start over from Start.
func (q *Queries) Restamp(ctx context.Context, db Executor) (int64, error) {
	tag, err := db.Exec(ctx, q.restamp)
	return tag.RowsAffected(), err
}
