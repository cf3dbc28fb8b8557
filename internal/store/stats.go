package store

import (
	"bytes"
	"context"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// ReceiverStats is one signal's receiver's share of the ledger.
type ReceiverStats struct {
	Signal, Receiver string
	Pending          int64
	InFlight         int64
	Dead             int64
	OldestPending    *[16]byte  // the ID of the first sent of the earliest transaction's pending rows: a ULID, so its send time
	OldestInFlight   *[16]byte  // the same among in-flight rows
	LatestProcessAt  *time.Time // the latest delivery time asked for, pending or in flight
	HeldKeys         int64      // ordering keys with a row waiting behind an earlier row of the key
}

type statsStatements struct {
	live, dead, held string
}

func newStatsStatements(r *strings.Replacer) statsStatements {
	return statsStatements{
		live: r.Replace(statsLiveSQL),
		dead: r.Replace(statsDeadSQL),
		held: r.Replace(statsHeldSQL),
	}
}

// isPendingOf says of a live row, with the table alias a, whether it waits
// for a Dispatcher: a row without a key is pending until the position ($1
// to $4) passed it, or while it waits out next_attempt_at; a keyed row
// until its enqueue is recorded.
func isPendingOf(a string) string {
	return strings.NewReplacer("@", a+".").Replace(`(CASE WHEN @ordering_key IS NULL
    THEN @next_attempt_at IS NOT NULL OR NOT (pg_visible_in_snapshot(@xid, $1::pg_snapshot)
        OR $2::pg_snapshot IS NOT NULL AND pg_visible_in_snapshot(@xid, $2::pg_snapshot) AND (@xid, @id) <= ($3::xid8, $4::uuid))
    ELSE @enqueued_at IS NULL END)`)
}

// One pass over outbox, which holds only what is not done yet, grouped by
// queue too (a receiver moved to another queue has rows in both). The
// oldest row of each state comes from its group's lowest transaction ID,
// then one probe of the primary key: PostgreSQL 15 has no min(uuid), and
// the ID as text costs more than the count itself.
var (
	statsLiveSQL = `SELECT g.signal, g.receiver, g.queue, g.pending, g.inflight, p.id, i.id, g.latest
FROM (
    SELECT signal, receiver, queue,
        count(*) FILTER (WHERE pending) AS pending, count(*) FILTER (WHERE NOT pending) AS inflight,
        min(xid) FILTER (WHERE pending) AS pending_xid, min(xid) FILTER (WHERE NOT pending) AS inflight_xid,
        max(process_at) AS latest
    FROM (SELECT signal, receiver, queue, xid, process_at, ` + isPendingOf("o") + ` AS pending FROM {{schema}}.outbox AS o) AS r
    GROUP BY signal, receiver, queue
) AS g
LEFT JOIN LATERAL (
    SELECT id FROM {{schema}}.outbox AS o
    WHERE o.xid = g.pending_xid AND o.signal = g.signal AND o.receiver = g.receiver AND o.queue = g.queue
      AND ` + isPendingOf("o") + `
    ORDER BY id LIMIT 1
) AS p ON true
LEFT JOIN LATERAL (
    SELECT id FROM {{schema}}.outbox AS o
    WHERE o.xid = g.inflight_xid AND o.signal = g.signal AND o.receiver = g.receiver AND o.queue = g.queue
      AND NOT ` + isPendingOf("o") + `
    ORDER BY id LIMIT 1
) AS i ON true`
	statsDeadSQL = `SELECT signal, receiver, count(*) FROM {{schema}}.dead GROUP BY signal, receiver`
	// A key holds rows back when it has more than one live row: one runs
	// at a time, the others wait their turn. The ordering index answers it
	// without reading rows that have no key.
	statsHeldSQL = `SELECT signal, receiver, count(*) FROM (
    SELECT signal, receiver FROM {{schema}}.outbox WHERE ordering_key IS NOT NULL
    GROUP BY signal, receiver, ordering_key HAVING count(*) > 1
) AS k GROUP BY signal, receiver`
)

// Stats returns, per signal and receiver, how many rows are pending, in
// flight and dead and how many ordering keys hold rows back, with the ages
// an operator watches, and the queues the
// live rows address, all from one snapshot: tx must be fresh, as Stats
// makes it a read-only REPEATABLE READ transaction. p is the Dispatchers'
// position; Start, when it cannot be read, counts every row without a key
// as pending.
func (q *Queries) Stats(ctx context.Context, tx pgx.Tx, p Position) ([]ReceiverStats, []string, error) {
	if _, err := tx.Exec(ctx, `SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY`); err != nil {
		return nil, nil, err
	}
	var order []*ReceiverStats
	byKey := map[[2]string]*ReceiverStats{}
	get := func(signal, receiver string) *ReceiverStats {
		k := [2]string{signal, receiver}
		if s, ok := byKey[k]; ok {
			return s
		}
		s := &ReceiverStats{Signal: signal, Receiver: receiver}
		byKey[k] = s
		order = append(order, s)
		return s
	}
	var queues []string
	seen := map[string]bool{}
	var upto *string
	if p.Upto != "" {
		upto = &p.Upto
	}
	rows, err := tx.Query(ctx, q.stats.live, p.Covered, upto, p.After.XID, p.After.ID)
	if err != nil {
		return nil, nil, err
	}
	var signal, receiver, queue string
	var pending, inflight int64
	var oldestPending, oldestInFlight *[16]byte
	var latest *time.Time
	_, err = pgx.ForEachRow(rows, []any{&signal, &receiver, &queue, &pending, &inflight, &oldestPending, &oldestInFlight, &latest}, func() error {
		if !seen[queue] {
			seen[queue] = true
			queues = append(queues, queue)
		}
		s := get(signal, receiver)
		s.Pending += pending
		s.InFlight += inflight
		s.OldestPending = lower(s.OldestPending, oldestPending)
		s.OldestInFlight = lower(s.OldestInFlight, oldestInFlight)
		s.LatestProcessAt = later(s.LatestProcessAt, latest)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	rows, err = tx.Query(ctx, q.stats.dead)
	if err != nil {
		return nil, nil, err
	}
	var n int64
	if _, err = pgx.ForEachRow(rows, []any{&signal, &receiver, &n}, func() error {
		get(signal, receiver).Dead = n
		return nil
	}); err != nil {
		return nil, nil, err
	}
	if rows, err = tx.Query(ctx, q.stats.held); err != nil {
		return nil, nil, err
	}
	if _, err = pgx.ForEachRow(rows, []any{&signal, &receiver, &n}, func() error {
		get(signal, receiver).HeldKeys = n
		return nil
	}); err != nil {
		return nil, nil, err
	}
	out := make([]ReceiverStats, len(order))
	for i, s := range order {
		out[i] = *s
	}
	return out, queues, nil
}

// lower returns the lower of two optional row IDs: ULIDs, so the earlier
// sent.
func lower(a, b *[16]byte) *[16]byte {
	if a == nil || (b != nil && bytes.Compare(b[:], a[:]) < 0) {
		return b
	}
	return a
}

// later returns the later of two optional times.
func later(a, b *time.Time) *time.Time {
	if a == nil || (b != nil && b.After(*a)) {
		return b
	}
	return a
}
