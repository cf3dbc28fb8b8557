package store

import (
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
	pending, inflight, dead, queues string
}

func newStatsStatements(r *strings.Replacer) statsStatements {
	return statsStatements{
		pending:  r.Replace(statsPendingSQL),
		inflight: r.Replace(statsInflightSQL),
		dead:     r.Replace(statsDeadSQL),
		queues:   r.Replace(statsQueuesSQL),
	}
}

// One GROUP BY per table: outbox and inflight hold only what is not done
// yet, so the passes are as long as the backlog, not the history.
const (
	// The oldest pending row of each receiver comes from the primary key,
	// in ID (so send) order: PostgreSQL 15 has no min(uuid), and min over
	// the ID as text costs more than the count itself.
	statsPendingSQL = `SELECT g.signal, g.receiver, g.n, o.id, g.latest
FROM (
    SELECT signal, receiver, count(*) AS n, max(process_at) AS latest
    FROM {{schema}}.outbox GROUP BY signal, receiver
) AS g
CROSS JOIN LATERAL (
    SELECT id FROM {{schema}}.outbox AS r
    WHERE r.signal = g.signal AND r.receiver = g.receiver
    ORDER BY id LIMIT 1
) AS o`
	statsInflightSQL = `SELECT signal, receiver, count(*), min(enqueued_at), max(process_at)
FROM {{schema}}.inflight GROUP BY signal, receiver`
	statsDeadSQL   = `SELECT signal, receiver, count(*) FROM {{schema}}.dead GROUP BY signal, receiver`
	statsQueuesSQL = `SELECT queue FROM {{schema}}.outbox UNION SELECT queue FROM {{schema}}.inflight`
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
	var signal, receiver string
	var n int64
	err := each(q.stats.pending, func(r pgx.CollectableRow) error {
		var oldest [16]byte
		var latest *time.Time
		if err := r.Scan(&signal, &receiver, &n, &oldest, &latest); err != nil {
			return err
		}
		s := get(signal, receiver)
		s.Pending, s.OldestPending, s.LatestProcessAt = n, &oldest, latest
		return nil
	})
	if err == nil {
		err = each(q.stats.inflight, func(r pgx.CollectableRow) error {
			var enqueued, latest *time.Time
			if err := r.Scan(&signal, &receiver, &n, &enqueued, &latest); err != nil {
				return err
			}
			s := get(signal, receiver)
			s.InFlight, s.OldestEnqueued = n, enqueued
			if latest != nil && (s.LatestProcessAt == nil || latest.After(*s.LatestProcessAt)) {
				s.LatestProcessAt = latest
			}
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
	rows, err := tx.Query(ctx, q.stats.queues)
	if err != nil {
		return nil, nil, err
	}
	queues, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, nil, err
	}
	out := make([]ReceiverStats, len(order))
	for i, s := range order {
		out[i] = *s
	}
	return out, queues, nil
}
