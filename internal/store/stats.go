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
	OldestPending    *[16]byte  // the lowest pending row ID: a ULID, so its send time
	OldestEnqueued   *time.Time // the earliest enqueue among in-flight rows
	LatestProcessAt  *time.Time // the latest delivery time asked for, pending or in flight
}

type statsStatements struct {
	pending, inflight, dead string
}

func newStatsStatements(r *strings.Replacer) statsStatements {
	return statsStatements{
		pending:  r.Replace(statsPendingSQL),
		inflight: r.Replace(statsInflightSQL),
		dead:     r.Replace(statsDeadSQL),
	}
}

// One GROUP BY per table: outbox and inflight hold only what is not done
// yet, so the passes are as long as the backlog, not the history. The
// live rows' queues come from the same passes, grouped by queue too (a
// receiver moved to another queue has rows in both): a separate UNION of
// the queues cost two to three times the counts on a million rows.
const (
	// The oldest pending row of each receiver comes from the primary key,
	// in ID (so send) order: PostgreSQL 15 has no min(uuid), and min over
	// the ID as text costs more than the count itself.
	statsPendingSQL = `SELECT g.signal, g.receiver, g.queue, g.n, o.id, g.latest
FROM (
    SELECT signal, receiver, queue, count(*) AS n, max(process_at) AS latest
    FROM {{schema}}.outbox GROUP BY signal, receiver, queue
) AS g
CROSS JOIN LATERAL (
    SELECT id FROM {{schema}}.outbox AS r
    WHERE r.signal = g.signal AND r.receiver = g.receiver AND r.queue = g.queue
    ORDER BY id LIMIT 1
) AS o`
	statsInflightSQL = `SELECT signal, receiver, queue, count(*), min(enqueued_at), max(process_at)
FROM {{schema}}.inflight GROUP BY signal, receiver, queue`
	statsDeadSQL = `SELECT signal, receiver, count(*) FROM {{schema}}.dead GROUP BY signal, receiver`
)

// Stats returns, per signal and receiver, how many rows are pending, in
// flight and dead, with the ages an operator watches, and the queues the
// live rows address, all from one snapshot: tx must be fresh, as Stats
// makes it a read-only REPEATABLE READ transaction.
func (q *Queries) Stats(ctx context.Context, tx pgx.Tx) ([]ReceiverStats, []string, error) {
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
	each := func(sql string, scan func(pgx.CollectableRow) error) error {
		rows, err := tx.Query(ctx, sql)
		if err != nil {
			return err
		}
		_, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (struct{}, error) { return struct{}{}, scan(r) })
		return err
	}
	var signal, receiver, queue string
	var n int64
	var queues []string
	seen := map[string]bool{}
	live := func(queue string) {
		if !seen[queue] {
			seen[queue] = true
			queues = append(queues, queue)
		}
	}
	err := each(q.stats.pending, func(r pgx.CollectableRow) error {
		var oldest [16]byte
		var latest *time.Time
		if err := r.Scan(&signal, &receiver, &queue, &n, &oldest, &latest); err != nil {
			return err
		}
		live(queue)
		s := get(signal, receiver)
		s.Pending += n
		if s.OldestPending == nil || bytes.Compare(oldest[:], s.OldestPending[:]) < 0 {
			s.OldestPending = &oldest
		}
		s.LatestProcessAt = later(s.LatestProcessAt, latest)
		return nil
	})
	if err == nil {
		err = each(q.stats.inflight, func(r pgx.CollectableRow) error {
			var enqueued, latest *time.Time
			if err := r.Scan(&signal, &receiver, &queue, &n, &enqueued, &latest); err != nil {
				return err
			}
			live(queue)
			s := get(signal, receiver)
			s.InFlight += n
			s.OldestEnqueued = earlier(s.OldestEnqueued, enqueued)
			s.LatestProcessAt = later(s.LatestProcessAt, latest)
			return nil
		})
	}
	if err == nil {
		err = each(q.stats.dead, func(r pgx.CollectableRow) error {
			if err := r.Scan(&signal, &receiver, &n); err != nil {
				return err
			}
			get(signal, receiver).Dead = n
			return nil
		})
	}
	if err != nil {
		return nil, nil, err
	}
	out := make([]ReceiverStats, len(order))
	for i, s := range order {
		out[i] = *s
	}
	return out, queues, nil
}

// earlier returns the earlier of two optional times.
func earlier(a, b *time.Time) *time.Time {
	if a == nil || (b != nil && b.Before(*a)) {
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
