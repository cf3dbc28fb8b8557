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
	// Met is how many keys the last walk met, free or not: 0 says the
	// outbox had no pending row with a key.
	Met int
}

// walkPerHead bounds the keys one batch walks, per head it may take: keys
// whose first row is in flight, waiting out a retry or not yet due are
// walked past, and a batch must not walk thousands of them.
const walkPerHead = 4

// headsSQL walks the distinct (signal, receiver, key) of the pending keyed
// rows after the cursor, one index probe per key however many rows a key
// holds (a skip scan: PostgreSQL has none of its own), for at most $1 keys,
// numbered in walk order, and says of each whether its first row is free:
// due, and nothing of its key in flight. A key's first row is its lowest
// ordering_seq among the committed rows.
const headsSQL = `WITH RECURSIVE walk AS (
    (SELECT 1 AS n, signal, receiver, ordering_key FROM {{schema}}.outbox
     WHERE ordering_key IS NOT NULL AND (signal, receiver, ordering_key) > ($2, $3, $4)
     ORDER BY signal, receiver, ordering_key LIMIT 1)
    UNION ALL
    SELECT w.n + 1, nx.signal, nx.receiver, nx.ordering_key
    FROM walk AS w, LATERAL (
        SELECT signal, receiver, ordering_key FROM {{schema}}.outbox AS o
        WHERE o.ordering_key IS NOT NULL AND (o.signal, o.receiver, o.ordering_key) > (w.signal, w.receiver, w.ordering_key)
        ORDER BY signal, receiver, ordering_key LIMIT 1
    ) AS nx
    WHERE w.n < $1
)
SELECT w.n, w.signal, w.receiver, w.ordering_key,
    (h.next_attempt_at IS NULL OR h.next_attempt_at <= now())
    AND NOT EXISTS (
        SELECT 1 FROM {{schema}}.inflight AS i
        WHERE i.ordering_key IS NOT NULL
          AND i.signal = w.signal AND i.receiver = w.receiver AND i.ordering_key = w.ordering_key)
FROM walk AS w
CROSS JOIN LATERAL (
    SELECT next_attempt_at FROM {{schema}}.outbox AS o
    WHERE o.ordering_key IS NOT NULL
      AND o.signal = w.signal AND o.receiver = w.receiver AND o.ordering_key = w.ordering_key
    ORDER BY o.ordering_seq LIMIT 1
) AS h`

// lockKeysSQL takes, for the claiming transaction, a lock on each key that
// no other relay holds, and returns the keys it got. A relay holds a key's
// lock from before it looks at the key's rows until its batch commits, so
// the next relay to look sees what it moved to inflight: no two relays
// ever put two rows of one key in flight. The schema is in the lock's name:
// advisory locks are per database, and outboxes in other schemas of it
// have keys of their own. A hash collision only makes a key sit out one
// batch.
const lockKeysSQL = `SELECT k.signal, k.receiver, k.key
FROM unnest($1::text[], $2::text[], $3::text[]) AS k(signal, receiver, key)
WHERE pg_try_advisory_xact_lock(hashtextextended('dj-signals/ordering/{{schema}}.' || k.signal || chr(31) || k.receiver || chr(31) || k.key, 0))`

// claimHeadsSQL looks again, in a snapshot taken after the keys' locks, at
// each locked key's first row, and locks it if it is still free. A row whose
// sender committed after the walk, with a lower number, is the first row now.
const claimHeadsSQL = `SELECT id, octet_length(payload)
FROM {{schema}}.outbox
WHERE id IN (
    SELECT h.id
    FROM unnest($1::text[], $2::text[], $3::text[]) AS k(signal, receiver, key)
    CROSS JOIN LATERAL (
        SELECT id, next_attempt_at FROM {{schema}}.outbox AS o
        WHERE o.ordering_key IS NOT NULL
          AND o.signal = k.signal AND o.receiver = k.receiver AND o.ordering_key = k.key
        ORDER BY o.ordering_seq LIMIT 1
    ) AS h
    WHERE (h.next_attempt_at IS NULL OR h.next_attempt_at <= now())
      AND NOT EXISTS (
        SELECT 1 FROM {{schema}}.inflight AS i
        WHERE i.ordering_key IS NOT NULL
          AND i.signal = k.signal AND i.receiver = k.receiver AND i.ordering_key = k.key)
)
ORDER BY id
FOR UPDATE SKIP LOCKED`

// keys are ordering keys, as the three arrays the statements take.
type keys struct{ signals, receivers, keys []string }

func (k *keys) add(c KeyCursor) {
	k.signals, k.receivers, k.keys = append(k.signals, c.Signal), append(k.receivers, c.Receiver), append(k.keys, c.Key)
}

// freeKeys walks up to walkPerHead×limit keys from cursor and returns up to
// limit whose first row is free, moving cursor to the last key it
// considered, or back to the start once the walk reached the last key.
func (q *Queries) freeKeys(ctx context.Context, tx pgx.Tx, limit int, cursor *KeyCursor) (keys, error) {
	budget := walkPerHead * limit
	rows, err := tx.Query(ctx, q.heads, budget, cursor.Signal, cursor.Receiver, cursor.Key)
	if err != nil {
		return keys{}, err
	}
	var free keys
	var walked, considered int
	var last KeyCursor
	var n int
	var at KeyCursor
	var ok bool
	_, err = pgx.ForEachRow(rows, []any{&n, &at.Signal, &at.Receiver, &at.Key, &ok}, func() error {
		walked = max(walked, n)
		if len(free.keys) < limit && n > considered {
			// Rows come in walk order in practice, but SQL does not
			// promise it: n says where each key was.
			considered, last = n, at
			if ok {
				free.add(at)
			}
		}
		return nil
	})
	switch {
	case err != nil:
		return keys{}, err
	case walked < budget && len(free.keys) < limit:
		*cursor = KeyCursor{} // the walk reached the last key: start over
	default:
		*cursor = last
	}
	cursor.Met = walked
	return free, nil
}

// claimOrdered locks in tx the first rows of up to limit free keys,
// walking from cursor, and returns their IDs and payload bytes, stopping
// before maxBytes (always at least one row).
func (q *Queries) claimOrdered(ctx context.Context, tx pgx.Tx, limit, maxBytes int, cursor *KeyCursor) ([][16]byte, int, error) {
	free, err := q.freeKeys(ctx, tx, limit, cursor)
	if err != nil || len(free.keys) == 0 {
		return nil, 0, err
	}
	return q.claimKeys(ctx, tx, free, maxBytes)
}

// claimKeys locks the keys no other relay holds and, looking again under
// those locks, the first row of each that is still free.
func (q *Queries) claimKeys(ctx context.Context, tx pgx.Tx, free keys, maxBytes int) ([][16]byte, int, error) {
	rows, err := tx.Query(ctx, q.lockKeys, free.signals, free.receivers, free.keys)
	if err != nil {
		return nil, 0, err
	}
	var locked keys
	var k KeyCursor
	if _, err := pgx.ForEachRow(rows, []any{&k.Signal, &k.Receiver, &k.Key}, func() error {
		locked.add(k)
		return nil
	}); err != nil || len(locked.keys) == 0 {
		return nil, 0, err
	}
	if rows, err = tx.Query(ctx, q.claimHeads, locked.signals, locked.receivers, locked.keys); err != nil {
		return nil, 0, err
	}
	return takeWithin(rows, nil, 0, maxBytes)
}
