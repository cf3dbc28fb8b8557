package store

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// claimKeyed claims keyed rows in a transaction of its own, rolled back at
// once.
func (b *testBundle) claimKeyed(t *testing.T, q *Queries, limit, maxBytes int, cursor *KeyCursor) []Row {
	t.Helper()
	tx, err := b.pool.Begin(t.Context())
	require.NoError(t, err)
	defer tx.Rollback(context.Background()) //nolint:errcheck // read only
	rows, err := q.ClaimKeyed(t.Context(), tx, limit, maxBytes, cursor)
	require.NoError(t, err)
	return rows
}

// TestClaimKeyedTakesTheFirstRowOfEachFreeKey requires that ClaimKeyed
// takes, per key, only the row numbered first, none of a key whose first
// row is in flight or held by another relay, and no row without a key.
func TestClaimKeyedTakesTheFirstRowOfEachFreeKey(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	a1, a2 := b.insertKeyed(t, q, "a"), b.insertKeyed(t, q, "a")
	b1 := b.insertKeyed(t, q, "b")
	c1 := b.insertKeyed(t, q, "c")
	b.insert(t, q, "order.placed", "r")

	got := b.claimKeyed(t, q, 10, 1<<20, &KeyCursor{})
	requireRowsEqual(t, []Row{a1, b1, c1}, got, "one row per key, every field read")

	// a1 in flight keeps a2 back; another relay holding key b keeps it back.
	require.NoError(t, q.MarkEnqueued(t.Context(), b.pool, refs(a1)))
	require.NotNil(t, b.state(t, a1.Ref()).EnqueuedAt)
	holder := b.begin(t)
	held, err := q.ClaimKeyed(t.Context(), holder, 1, 1<<20, &KeyCursor{Signal: "order.placed", Receiver: "r", Key: "a"})
	require.NoError(t, err)
	require.Equal(t, ids(b1), ids(held...))
	require.Equal(t, ids(c1), ids(b.claimKeyed(t, q, 10, 1<<20, &KeyCursor{})...))
	require.NoError(t, holder.Rollback(t.Context()))

	// Once a1 is done, a2 is its key's first row.
	require.NoError(t, q.Delete(t.Context(), b.pool, refs(a1)))
	require.Equal(t, ids(a2, b1, c1), ids(b.claimKeyed(t, q, 10, 1<<20, &KeyCursor{})...))

	// A key whose first row waits out a failed enqueue is not free; due, it is.
	require.NoError(t, q.RetryLater(t.Context(), b.pool, []Failure{{Ref: a2.Ref(), Error: "redis down", Delay: time.Hour}, {Ref: b1.Ref(), Error: "redis down"}}))
	require.Equal(t, ids(b1, c1), ids(b.claimKeyed(t, q, 10, 1<<20, &KeyCursor{})...))
	require.NoError(t, q.MarkEnqueued(t.Context(), b.pool, refs(b1)))
	s := b.state(t, b1.Ref())
	require.NotNil(t, s.EnqueuedAt)
	require.Nil(t, s.NextAttemptAt, "the enqueue clears the wait")
}

func TestClaimKeyedStopsAtTheByteCap(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	k1, k2 := b.insertKeyed(t, q, "k1"), b.insertKeyed(t, q, "k2")
	b.insertKeyed(t, q, "k3")
	size := len(k1.Payload)
	require.Equal(t, ids(k1, k2), ids(b.claimKeyed(t, q, 10, 2*size, &KeyCursor{})...))
	require.Equal(t, ids(k1), ids(b.claimKeyed(t, q, 10, 1, &KeyCursor{})...), "at least one row, however large")
}

// TestClaimKeyedWalksKeysOnFromItsCursor requires that a batch with more
// free keys than room goes on from where the last one stopped, and starts
// over after the last key.
func TestClaimKeyedWalksKeysOnFromItsCursor(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	var rows []Row
	for _, key := range []string{"k1", "k2", "k3", "k4", "k5"} {
		rows = append(rows, b.insertKeyed(t, q, key))
	}
	var cursor KeyCursor
	claim := func() [][16]byte {
		t.Helper()
		return ids(b.claimKeyed(t, q, 2, 1<<20, &cursor)...)
	}
	require.Equal(t, ids(rows[0:2]...), claim())
	require.Equal(t, KeyCursor{Signal: "order.placed", Receiver: "r", Key: "k2", Met: 5}, cursor, "met all five keys, took two")
	require.Equal(t, ids(rows[2:4]...), claim())
	require.Equal(t, ids(rows[4:5]...), claim(), "the walk reached the last key")
	require.Equal(t, KeyCursor{Met: 1}, cursor, "and starts over")
	require.Equal(t, ids(rows[0:2]...), claim())

	require.NoError(t, q.Delete(t.Context(), b.pool, refs(rows...)))
	cursor = KeyCursor{}
	require.Empty(t, claim())
	require.Equal(t, KeyCursor{}, cursor, "no keyed row: the walk met no key")
}

// TestClaimKeyedStartsOverFromACursorAtTheLastKey requires that a walk
// starting at the last key, with nothing after it, goes on from the first
// key in the same call: a batch that took the last key left the cursor
// there, and the next one must neither come back empty nor say it met no
// key while keys wait.
func TestClaimKeyedStartsOverFromACursorAtTheLastKey(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	k1, k2 := b.insertKeyed(t, q, "k1"), b.insertKeyed(t, q, "k2")
	var cursor KeyCursor
	require.Equal(t, ids(k1, k2), ids(b.claimKeyed(t, q, 2, 1<<20, &cursor)...))
	require.Equal(t, KeyCursor{Signal: "order.placed", Receiver: "r", Key: "k2", Met: 2}, cursor, "took as many as asked: the cursor stays at the last key")

	require.Equal(t, ids(k1, k2), ids(b.claimKeyed(t, q, 2, 1<<20, &cursor)...), "the walk starts over")
	require.Equal(t, 2, cursor.Met, "and met the keys")
}

// claimLocked runs the rest of ClaimKeyed after its walk: for a test that
// lets another relay act between a relay's walk and its claim.
func claimLocked(t *testing.T, q *Queries, tx pgx.Tx, free keys) []Row {
	t.Helper()
	rows, err := tx.Query(t.Context(), q.keyed.lockKeys, free.signals, free.receivers, free.keys)
	require.NoError(t, err)
	var locked keys
	var k KeyCursor
	_, err = pgx.ForEachRow(rows, []any{&k.Signal, &k.Receiver, &k.Key}, func() error {
		locked.add(k)
		return nil
	})
	require.NoError(t, err)
	rows, err = tx.Query(t.Context(), q.keyed.claimHeads, locked.signals, locked.receivers, locked.keys)
	require.NoError(t, err)
	var out []Row
	var row Row
	var size int
	_, err = pgx.ForEachRow(rows, append(row.liveFields(), &size), func() error {
		out = append(out, row)
		return nil
	})
	require.NoError(t, err)
	return out
}

// TestClaimKeyedNeverPutsTwoRowsOfAKeyInFlight interleaves two relays
// around a sender that commits late: relay B finds key k free with its
// second row first, then k's first row commits and relay A claims it; B
// must then take nothing of k, whether A has committed its batch or still
// holds it.
func TestClaimKeyedNeverPutsTwoRowsOfAKeyInFlight(t *testing.T) {
	t.Parallel()
	for _, aCommits := range []bool{true, false} {
		q, b := setup(t)
		late := b.begin(t) // draws k's first number, commits after the second row's
		first := target("r")
		first.OrderingKey = "k"
		require.NoError(t, q.Insert(t.Context(), late, event("order.placed"), []Target{first}))
		second := b.insertKeyed(t, q, "k")

		relayB := b.begin(t)
		free, err := q.freeKeys(t.Context(), relayB, 10, &KeyCursor{})
		require.NoError(t, err)
		require.Equal(t, []string{"k"}, free.keys, "B walked k while only its second row was committed")

		require.NoError(t, late.Commit(t.Context()))
		relayA := b.begin(t)
		claimed, err := q.ClaimKeyed(t.Context(), relayA, 10, 1<<20, &KeyCursor{})
		require.NoError(t, err)
		require.Equal(t, [][16]byte{first.TaskID}, ids(claimed...), "A takes k's first row")
		require.NoError(t, q.MarkEnqueued(t.Context(), relayA, refs(claimed...)))
		if aCommits {
			require.NoError(t, relayA.Commit(t.Context()))
		}

		require.Empty(t, claimLocked(t, q, relayB, free), "B must not put %x in flight beside k's first row (A committed: %v)", second.ID, aCommits)
		require.NoError(t, relayB.Rollback(t.Context()))
		if !aCommits {
			require.NoError(t, relayA.Rollback(t.Context()))
			free, err = q.freeKeys(t.Context(), b.begin(t), 10, &KeyCursor{})
			require.NoError(t, err)
			require.Len(t, claimLocked(t, q, b.begin(t), free), 1, "the claim works once A is gone: the test can fail")
		}
	}
}

// TestOrderingLocksArePerSchema requires that relays of two outboxes in
// one database, whose keys have the same names, do not hold each other's
// keys back.
func TestOrderingLocksArePerSchema(t *testing.T) {
	t.Parallel()
	q1, b1 := setup(t)
	q2, b2 := setup(t)
	r1, r2 := b1.insertKeyed(t, q1, "k"), b2.insertKeyed(t, q2, "k")
	tx := b1.begin(t)
	got, err := q1.ClaimKeyed(t.Context(), tx, 10, 1<<20, &KeyCursor{})
	require.NoError(t, err)
	require.Equal(t, ids(r1), ids(got...))
	require.Equal(t, ids(r2), ids(b2.claimKeyed(t, q2, 10, 1<<20, &KeyCursor{})...))
	require.Empty(t, b1.claimKeyed(t, q1, 10, 1<<20, &KeyCursor{}), "the same schema's key is held")
}
