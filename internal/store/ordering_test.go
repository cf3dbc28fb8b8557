package store

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// insertKeyed writes one event for receiver r with key and returns its row ID.
func (b *testBundle) insertKeyed(t *testing.T, q *Queries, key string) [16]byte {
	t.Helper()
	tgt := target("r")
	tgt.OrderingKey = key
	require.NoError(t, q.Insert(t.Context(), b.pool, event("order.placed"), []Target{tgt}))
	return tgt.TaskID
}

// TestClaimTakesTheFirstRowOfEachFreeKey requires that Claim takes, per
// key, only the row numbered first, none of a key with a row in flight or
// held by another relay, and that rows without a key are claimed beside.
func TestClaimTakesTheFirstRowOfEachFreeKey(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	a1, a2 := b.insertKeyed(t, q, "a"), b.insertKeyed(t, q, "a")
	b1 := b.insertKeyed(t, q, "b")
	c1 := b.insertKeyed(t, q, "c")
	plain := b.insert(t, q, "order.placed", "r")[0].ID

	tx, err := b.pool.Begin(t.Context())
	require.NoError(t, err)
	unkeyed, err := q.Claim(t.Context(), tx, 10, 1<<20, nil)
	require.NoError(t, err)
	require.Equal(t, [][16]byte{plain}, ids(unkeyed...), "without a cursor, no key is walked")
	require.NoError(t, tx.Rollback(t.Context()))

	got := b.claim(t, q, 10, 1<<20)
	require.ElementsMatch(t, [][16]byte{a1, b1, c1, plain}, ids(got...), "one row per key, and the row without one")
	for _, r := range got {
		if r.ID == plain {
			require.Nil(t, r.OrderingKey)
			require.Nil(t, r.OrderingSeq)
		} else {
			require.NotNil(t, r.OrderingKey)
			require.NotNil(t, r.OrderingSeq)
		}
	}

	// a1 in flight keeps a2 back; another relay holding b1 keeps key b back.
	require.NoError(t, q.MarkEnqueued(t.Context(), b.pool, [][16]byte{a1}))
	holder, err := b.pool.Begin(t.Context())
	require.NoError(t, err)
	defer holder.Rollback(context.Background()) //nolint:errcheck // read only
	_, err = holder.Exec(t.Context(), `SELECT 1 FROM `+b.schema+`.outbox WHERE id = $1 FOR UPDATE`, b1)
	require.NoError(t, err)
	require.ElementsMatch(t, [][16]byte{c1, plain}, ids(b.claim(t, q, 10, 1<<20)...))

	// Once a1 is done, a2 is its key's first row.
	require.NoError(t, q.Delete(t.Context(), b.pool, [][16]byte{a1}))
	require.ElementsMatch(t, [][16]byte{a2, c1, plain}, ids(b.claim(t, q, 10, 1<<20)...))
}

// TestClaimWalksKeysOnFromItsCursor requires that a batch with more free
// keys than room goes on from where the last one stopped, and starts over
// after the last key.
func TestClaimWalksKeysOnFromItsCursor(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	var rows [][16]byte
	for _, key := range []string{"k1", "k2", "k3", "k4", "k5"} {
		rows = append(rows, b.insertKeyed(t, q, key))
	}
	var cursor KeyCursor
	claim := func() [][16]byte {
		t.Helper()
		tx, err := b.pool.Begin(t.Context())
		require.NoError(t, err)
		defer tx.Rollback(context.Background())                 //nolint:errcheck // read only
		got, err := q.Claim(t.Context(), tx, 4, 1<<20, &cursor) // half the batch, 2 rows, for keys
		require.NoError(t, err)
		return ids(got...)
	}
	require.Equal(t, rows[0:2], claim())
	require.Equal(t, KeyCursor{Signal: "order.placed", Receiver: "r", Key: "k2", Met: 5}, cursor, "met all five keys, took two")
	require.Equal(t, rows[2:4], claim())
	require.Equal(t, rows[4:5], claim(), "the walk reached the last key")
	require.Equal(t, KeyCursor{Met: 1}, cursor, "and starts over")
	require.Equal(t, rows[0:2], claim())
}

// TestClaimNeverPutsTwoRowsOfAKeyInFlight interleaves two relays around a
// sender that commits late: relay B finds key k free with its second row
// first, then k's first row commits and relay A claims it; B must then take
// nothing of k, whether A has committed its batch or still holds it.
func TestClaimNeverPutsTwoRowsOfAKeyInFlight(t *testing.T) {
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
		claimed, err := q.Claim(t.Context(), relayA, 10, 1<<20, &KeyCursor{})
		require.NoError(t, err)
		require.Equal(t, [][16]byte{first.TaskID}, ids(claimed...), "A takes k's first row")
		require.NoError(t, q.MarkEnqueued(t.Context(), relayA, ids(claimed...)))
		if aCommits {
			require.NoError(t, relayA.Commit(t.Context()))
		}

		got, _, err := q.claimKeys(t.Context(), relayB, free, 1<<20)
		require.NoError(t, err)
		require.Empty(t, got, "B must not put %x in flight beside k's first row (A committed: %v)", second, aCommits)
	}
}
