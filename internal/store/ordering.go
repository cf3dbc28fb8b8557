package store

import (
	"context"
	"strings"

	"github.com/jackc/pgx/v5"
)

// The statements of the rows with an ordering key: one at a time per key
// and receiver, each recording its own enqueue, since the position over
// the transactions (window.go) cannot tell which of a key's rows is in
// flight.
type keyedStatements struct {
	heads, lockKeys, claimHeads, markEnqueued string
}

func newKeyedStatements(r *strings.Replacer) keyedStatements {
	return keyedStatements{
		heads:        r.Replace(headsSQL),
		lockKeys:     r.Replace(lockKeysSQL),
		claimHeads:   r.Replace(claimHeadsSQL),
		markEnqueued: r.Replace(markEnqueuedSQL),
	}
}

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
// whose first row is in flight or waiting out a retry are walked past, and
// a batch must not walk thousands of them.
const walkPerHead = 4

// headsSQL walks the distinct (signal, receiver, key) of the keyed rows
// after the cursor, one index probe per key however many rows a key holds
// (a skip scan: PostgreSQL has none of its own), for at most $1 keys,
// numbered in walk order, and says of each whether its first row is free:
// not in flight and due. A key's first row is its lowest ordering_seq among
// the committed rows; a row stays until its receiver succeeds or it dies,
// so a key whose first row is in flight is busy.
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
    h.enqueued_at IS NULL AND (h.next_attempt_at IS NULL OR h.next_attempt_at <= now())
FROM walk AS w
CROSS JOIN LATERAL (
    SELECT enqueued_at, next_attempt_at FROM {{schema}}.outbox AS o
    WHERE o.ordering_key IS NOT NULL
      AND o.signal = w.signal AND o.receiver = w.receiver AND o.ordering_key = w.ordering_key
    ORDER BY o.ordering_seq LIMIT 1
) AS h`

// lockKeysSQL takes, for the claiming transaction, a lock on each key that
// no other relay holds, and returns the keys it got. A relay holds a key's
// lock from before it looks at the key's rows until its batch commits, so
// the next relay to look sees the enqueue it recorded: no two relays ever
// put two rows of one key in flight. The schema is in the lock's name:
// advisory locks are per database, and outboxes in other schemas of it
// have keys of their own. A hash collision only makes a key sit out one
// batch.
const lockKeysSQL = `SELECT k.signal, k.receiver, k.key
FROM unnest($1::text[], $2::text[], $3::text[]) AS k(signal, receiver, key)
WHERE pg_try_advisory_xact_lock(hashtextextended('dj-signals/ordering/{{schema}}.' || k.signal || chr(31) || k.receiver || chr(31) || k.key, 0))`

// claimHeadsSQL looks again, in a snapshot taken after the keys' locks, at
// each locked key's first row, and returns it if it is still free. A row
// whose sender committed after the walk, with a lower number, is the first
// row now. The keys' locks, not row locks, keep other relays off these rows
// until the batch records their enqueue.
var claimHeadsSQL = `SELECT h.` + strings.ReplaceAll(liveColumns, ", ", ", h.") + `, octet_length(h.payload)
FROM unnest($1::text[], $2::text[], $3::text[]) AS k(signal, receiver, key)
CROSS JOIN LATERAL (
    SELECT * FROM {{schema}}.outbox AS o
    WHERE o.ordering_key IS NOT NULL
      AND o.signal = k.signal AND o.receiver = k.receiver AND o.ordering_key = k.key
    ORDER BY o.ordering_seq LIMIT 1
) AS h
WHERE h.enqueued_at IS NULL AND (h.next_attempt_at IS NULL OR h.next_attempt_at <= now())
ORDER BY h.xid, h.id`

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
	rows, err := tx.Query(ctx, q.keyed.heads, budget, cursor.Signal, cursor.Receiver, cursor.Key)
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
	case walked == 0 && (cursor.Signal != "" || cursor.Receiver != "" || cursor.Key != ""):
		// Past the last key: the keys before the cursor are the walk's.
		*cursor = KeyCursor{}
		return q.freeKeys(ctx, tx, limit, cursor)
	case walked < budget && len(free.keys) < limit:
		*cursor = KeyCursor{} // the walk reached the last key: start over
	default:
		*cursor = last
	}
	cursor.Met = walked
	return free, nil
}

// ClaimKeyed returns the first rows of up to limit free keys, walking from
// cursor, whose payloads add up to at most maxBytes (always at least one),
// each key locked for tx: no other relay takes a row of those keys until tx
// ends. Record their enqueue with MarkEnqueued in tx.
func (q *Queries) ClaimKeyed(ctx context.Context, tx pgx.Tx, limit, maxBytes int, cursor *KeyCursor) ([]Row, error) {
	free, err := q.freeKeys(ctx, tx, limit, cursor)
	if err != nil || len(free.keys) == 0 {
		return nil, err
	}
	rows, err := tx.Query(ctx, q.keyed.lockKeys, free.signals, free.receivers, free.keys)
	if err != nil {
		return nil, err
	}
	var locked keys
	var k KeyCursor
	if _, err := pgx.ForEachRow(rows, []any{&k.Signal, &k.Receiver, &k.Key}, func() error {
		locked.add(k)
		return nil
	}); err != nil || len(locked.keys) == 0 {
		return nil, err
	}
	if rows, err = tx.Query(ctx, q.keyed.claimHeads, locked.signals, locked.receivers, locked.keys); err != nil {
		return nil, err
	}
	var out []Row
	var total int
	var row Row
	var size int
	_, err = pgx.ForEachRow(rows, append(row.liveFields(), &size), func() error {
		if len(out) == 0 || total+size <= maxBytes {
			out = append(out, row)
			total += size
		}
		return nil
	})
	return out, err
}

const markEnqueuedSQL = `UPDATE {{schema}}.outbox
SET enqueued_at = now(), checked_at = NULL, next_attempt_at = NULL
WHERE ` + byRef

// MarkEnqueued records that the keyed rows' tasks are in Redis now: their
// keys are busy until the rows are acked or dead.
func (q *Queries) MarkEnqueued(ctx context.Context, db Executor, refs []Ref) error {
	return q.exec(ctx, db, q.keyed.markEnqueued, refs)
}
