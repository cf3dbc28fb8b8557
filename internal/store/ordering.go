package store

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// KeyCursor is where a relay's walk over the ordering keys stopped: the
// next batch goes on from there, so that every key gets its turn however
// many keys have rows. The zero value starts at the first key.
type KeyCursor struct {
	Signal, Receiver, Key string
}

func (c KeyCursor) less(o KeyCursor) bool {
	if c.Signal != o.Signal {
		return c.Signal < o.Signal
	}
	if c.Receiver != o.Receiver {
		return c.Receiver < o.Receiver
	}
	return c.Key < o.Key
}

// headsSQL walks the distinct (signal, receiver, key) of the pending
// keyed rows after the cursor, one index probe per key however many rows a
// key holds (a skip scan: PostgreSQL has none of its own), and keeps each
// key's first row when it is due and nothing of its key is in flight. A
// key's first row is its lowest ordering_seq among the committed rows: a
// row whose sender commits later joins behind whatever is pending then.
// The recursion stops as soon as the LIMIT is met.
const headsSQL = `WITH RECURSIVE walk AS (
    (SELECT signal, receiver, ordering_key FROM {{schema}}.outbox
     WHERE ordering_key IS NOT NULL AND (signal, receiver, ordering_key) > ($2, $3, $4)
     ORDER BY signal, receiver, ordering_key LIMIT 1)
    UNION ALL
    SELECT n.signal, n.receiver, n.ordering_key
    FROM walk AS w, LATERAL (
        SELECT signal, receiver, ordering_key FROM {{schema}}.outbox AS o
        WHERE o.ordering_key IS NOT NULL AND (o.signal, o.receiver, o.ordering_key) > (w.signal, w.receiver, w.ordering_key)
        ORDER BY signal, receiver, ordering_key LIMIT 1
    ) AS n
)
SELECT h.id, octet_length(h.payload), w.signal, w.receiver, w.ordering_key
FROM walk AS w
CROSS JOIN LATERAL (
    SELECT id, payload, next_attempt_at FROM {{schema}}.outbox AS o
    WHERE o.ordering_key IS NOT NULL
      AND o.signal = w.signal AND o.receiver = w.receiver AND o.ordering_key = w.ordering_key
    ORDER BY o.ordering_seq LIMIT 1
) AS h
WHERE (h.next_attempt_at IS NULL OR h.next_attempt_at <= now())
  AND NOT EXISTS (
    SELECT 1 FROM {{schema}}.inflight AS i
    WHERE i.ordering_key IS NOT NULL
      AND i.signal = w.signal AND i.receiver = w.receiver AND i.ordering_key = w.ordering_key)
LIMIT $1`

// A first row another relay has locked is skipped, and with it its key: a
// relay holding it moves it to inflight, so the next row of that key is
// not free before that one is done.
const lockHeadsSQL = `SELECT id FROM {{schema}}.outbox WHERE id = ANY($1::uuid[]) FOR UPDATE SKIP LOCKED`

// claimOrdered locks in tx the first rows of up to limit keys that are
// free, walking from cursor, and returns their IDs and payload bytes,
// stopping before maxBytes (always at least one row). It moves cursor to
// the last key walked, or back to the start once the walk reached the end.
func (q *Queries) claimOrdered(ctx context.Context, tx pgx.Tx, limit, maxBytes int, cursor *KeyCursor) ([][16]byte, int, error) {
	rows, err := tx.Query(ctx, q.heads, limit, cursor.Signal, cursor.Receiver, cursor.Key)
	if err != nil {
		return nil, 0, err
	}
	sizes := map[[16]byte]int{}
	var heads [][16]byte
	var total, walked int
	var last, at KeyCursor
	var id [16]byte
	var size int
	_, err = pgx.ForEachRow(rows, []any{&id, &size, &at.Signal, &at.Receiver, &at.Key}, func() error {
		walked++
		if last.less(at) {
			last = at
		}
		if len(heads) == 0 || total+size <= maxBytes {
			heads = append(heads, id)
			sizes[id] = size
			total += size
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	*cursor = last
	if walked < limit {
		*cursor = KeyCursor{} // the walk reached the last key: start over
	}
	if len(heads) == 0 {
		return nil, 0, nil
	}
	locked, err := tx.Query(ctx, q.lockHeads, heads)
	if err != nil {
		return nil, 0, err
	}
	ids, err := pgx.CollectRows(locked, pgx.RowTo[[16]byte])
	total = 0
	for _, id := range ids {
		total += sizes[id]
	}
	return ids, total, err
}
