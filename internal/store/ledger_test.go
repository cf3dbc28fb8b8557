package store

import (
	"context"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"
)

// claimDue claims due rows in a transaction of its own, rolled back at once.
func (b *testBundle) claimDue(t *testing.T, q *Queries, limit, maxBytes int) []Row {
	t.Helper()
	tx, err := b.pool.Begin(t.Context())
	require.NoError(t, err)
	defer tx.Rollback(context.Background()) //nolint:errcheck // read only
	rows, err := q.ClaimDue(t.Context(), tx, limit, maxBytes)
	require.NoError(t, err)
	return rows
}

func TestDeleteRemovesExactlyTheRowsItNames(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	rows := b.insert(t, q, "order.placed", "a", "b", "c")
	other := b.insert(t, q, "order.placed", "d")

	require.NoError(t, q.Delete(t.Context(), b.pool, append(refs(rows[0], rows[2]), Ref{XID: rows[0].XID, ID: ulid.Make()})))
	requireRowsEqual(t, []Row{rows[1], other[0]}, b.live(t))

	// A task carries its row's transaction ID: the same row ID under
	// another one is not that row (a requeued dead letter has a new one).
	require.NoError(t, q.Delete(t.Context(), b.pool, []Ref{{XID: other[0].XID, ID: rows[1].ID}}))
	requireRowsEqual(t, []Row{rows[1], other[0]}, b.live(t))

	require.NoError(t, q.Delete(t.Context(), b.pool, nil))
	require.Equal(t, Counts{Live: 2}, b.count(t, q))
	require.NoError(t, q.Delete(t.Context(), b.pool, refs(other...)))
	requireRowsEqual(t, rows[1:2], b.live(t))
}

// TestDeleteMatchesEachRefsXIDAndIDTogether requires that Delete takes a
// ref's transaction ID and row ID as one pair: with a requeued a and c
// under a new one, a stale ref of a under its old ID and a ref of c must
// not, matched apart, also name a under the new one.
func TestDeleteMatchesEachRefsXIDAndIDTogether(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	rows := b.insert(t, q, "order.placed", "a", "b", "c")
	a, c := rows[0], rows[2]
	_, err := q.Bury(t.Context(), b.pool, []Burial{
		{Ref: a.Ref(), Reason: ReasonPermanent, Error: "x"},
		{Ref: c.Ref(), Reason: ReasonPermanent, Error: "x"},
	})
	require.NoError(t, err)
	n, err := q.RequeueDead(t.Context(), b.pool, ids(a, c))
	require.NoError(t, err)
	require.Equal(t, int64(2), n)
	live := b.live(t) // in ID order
	require.Equal(t, ids(a, rows[1], c), ids(live...))
	newXID := live[0].XID
	require.Greater(t, newXID, a.XID, "requeued under a new transaction ID")
	require.Equal(t, newXID, live[2].XID)

	require.NoError(t, q.Delete(t.Context(), b.pool, []Ref{{XID: a.XID, ID: a.ID}, {XID: newXID, ID: c.ID}}))
	require.Equal(t, ids(a, rows[1]), ids(b.live(t)...), "only c is deleted: a's ref is its old one")
}

func TestBuryMovesRowsToTheDeadLetters(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	rows := b.insert(t, q, "order.placed", "a", "b", "c")
	keyed := b.insertKeyed(t, q, "customer-1")
	require.NoError(t, q.MarkEnqueued(t.Context(), b.pool, refs(keyed)))
	keyedAt := b.state(t, keyed.Ref()).EnqueuedAt
	require.NotNil(t, keyedAt)
	require.NoError(t, q.RetryLater(t.Context(), b.pool, []Failure{{Ref: rows[1].Ref(), Error: "redis down", Delay: time.Hour}}))

	workerSaw := time.Now().Add(-time.Minute).Truncate(time.Microsecond)
	n, err := q.Bury(t.Context(), b.pool, []Burial{
		{Ref: rows[0].Ref(), Reason: ReasonRetriesExhausted, Error: "timeout", Attempts: 21, EnqueuedAt: &workerSaw},
		{Ref: rows[1].Ref(), Reason: ReasonUnenqueueable, Error: "queue name has spaces", Attempts: 2},
		{Ref: keyed.Ref(), Reason: ReasonPermanent, Error: "card declined", Attempts: 1},
		{Ref: Ref{XID: rows[2].XID, ID: ulid.Make()}, Reason: ReasonPermanent, Error: "no such row"},
		{Ref: Ref{XID: rows[2].XID + 1, ID: rows[2].ID}, Reason: ReasonPermanent, Error: "not this row's transaction"},
	})
	require.NoError(t, err)
	require.Equal(t, int64(3), n, "only rows in the outbox move")
	requireRowsEqual(t, rows[2:], b.live(t))
	require.Equal(t, Counts{Live: 1, Dead: 3}, b.count(t, q))

	dead := b.dead(t, q, DeadFilter{Limit: 10})
	require.Len(t, dead, 3)
	byID := map[[16]byte]Dead{}
	for _, d := range dead {
		byID[d.ID] = d
	}
	want := []struct {
		row        Row
		reason     string
		err        string
		attempts   int
		enqueuedAt *time.Time
	}{
		{rows[0], ReasonRetriesExhausted, "timeout", 21, &workerSaw},
		{rows[1], ReasonUnenqueueable, "queue name has spaces", 2, nil},
		{keyed, ReasonPermanent, "card declined", 1, keyedAt},
	}
	for _, w := range want {
		d, ok := byID[w.row.ID]
		require.True(t, ok)
		row := w.row
		row.XID, row.Attempts, row.LastError = 0, w.attempts, &w.err
		requireRowsEqual(t, []Row{row}, []Row{d.Row}, "the row as it was, with the receiver's attempts and error")
		require.Equal(t, w.reason, d.Reason)
		if w.enqueuedAt == nil {
			require.Nil(t, d.EnqueuedAt, "%s: never enqueued, as far as anyone knows", w.reason)
		} else {
			require.NotNil(t, d.EnqueuedAt, w.reason)
			require.True(t, w.enqueuedAt.Equal(*d.EnqueuedAt), "%s: enqueued at %v, want %v", w.reason, *d.EnqueuedAt, *w.enqueuedAt)
		}
	}

	n, err = q.Bury(t.Context(), b.pool, []Burial{{Ref: rows[0].Ref(), Reason: ReasonPermanent}})
	require.NoError(t, err)
	require.Zero(t, n, "a row buried before is not there to move")
}

func TestRetryLaterCountsAttemptsAndHoldsTheRowBack(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	rows := b.insert(t, q, "order.placed", "a", "b", "c")

	before := b.now(t)
	require.NoError(t, q.RetryLater(t.Context(), b.pool, []Failure{{Ref: rows[0].Ref(), Error: "first a", Delay: time.Hour}, {Ref: rows[1].Ref(), Error: "first b"}}))
	require.NoError(t, q.RetryLater(t.Context(), b.pool, []Failure{{Ref: rows[0].Ref(), Error: "second a", Delay: time.Hour}}))
	after := b.now(t)

	second, firstB := "second a", "first b"
	rows[0].Attempts, rows[0].LastError = 2, &second
	rows[1].Attempts, rows[1].LastError = 1, &firstB
	requireRowsEqual(t, rows, b.live(t))
	at := b.state(t, rows[0].Ref()).NextAttemptAt
	require.NotNil(t, at)
	require.WithinRange(t, *at, before.Add(time.Hour), after.Add(time.Hour), "the row waits out its delay")
	requireRowsEqual(t, rows[1:2], b.claimDue(t, q, 10, 1<<20), "a row waits out its own delay; a zero delay is due at once")
}

func TestClaimDue(t *testing.T) {
	t.Parallel()

	t.Run("TakesDueRowsWithoutAKey", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		rows := b.insert(t, q, "order.placed", "a", "b", "c", "d")
		keyed := b.insertKeyed(t, q, "customer-1")
		require.Empty(t, b.claimDue(t, q, 10, 1<<20), "a fresh row is the window's, not due")

		require.NoError(t, q.RetryLater(t.Context(), b.pool, []Failure{
			{Ref: rows[2].Ref(), Error: "x"},
			{Ref: rows[0].Ref(), Error: "x", Delay: time.Hour},
			{Ref: keyed.Ref(), Error: "x"},
		}))
		require.NoError(t, q.RetryLater(t.Context(), b.pool, []Failure{{Ref: rows[1].Ref(), Error: "x"}}))
		got := b.claimDue(t, q, 10, 1<<20)
		require.Equal(t, ids(rows[2], rows[1]), ids(got...), "due rows in the order they came due; a keyed row waits for its key's walk")
		require.Equal(t, 1, got[0].Attempts)
		require.Equal(t, ids(rows[2]), ids(b.claimDue(t, q, 1, 1<<20)...), "limit")
		require.Equal(t, ids(rows[2]), ids(b.claimDue(t, q, 10, 1)...), "at least one row, however large")
		size := len(rows[0].Payload)
		require.Len(t, b.claimDue(t, q, 10, 2*size), 2)
	})

	t.Run("SkipsRowsAnotherTransactionHolds", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		rows := b.insert(t, q, "order.placed", "a", "b", "c")
		require.NoError(t, q.RetryLater(t.Context(), b.pool, []Failure{{Ref: rows[0].Ref()}, {Ref: rows[1].Ref()}, {Ref: rows[2].Ref()}}))

		first := b.begin(t)
		got, err := q.ClaimDue(t.Context(), first, 2, 1<<20)
		require.NoError(t, err)
		held := ids(got...)
		require.Len(t, held, 2)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second) // fail, not hang, on a row lock
		defer cancel()
		second := b.begin(t)
		got, err = q.ClaimDue(ctx, second, 10, 1<<20)
		require.NoError(t, err)
		require.Len(t, got, 1)
		require.NotContains(t, held, got[0].ID, "a relay never takes a row another holds")
		third := b.begin(t)
		got, err = q.ClaimDue(ctx, third, 10, 1<<20)
		require.NoError(t, err)
		require.Empty(t, got, "every row is held")

		require.NoError(t, first.Rollback(t.Context()))
		require.ElementsMatch(t, held, ids(b.claimDue(t, q, 10, 1<<20)...), "a rolled-back claim frees its rows")
	})

	t.Run("SentDueRowsAreEnqueuedAgain", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		rows := b.insert(t, q, "order.placed", "a", "b")
		require.NoError(t, q.RetryLater(t.Context(), b.pool, []Failure{{Ref: rows[0].Ref(), Error: "redis down"}, {Ref: rows[1].Ref(), Error: "redis down"}}))
		b.exec(t, `UPDATE {{schema}}.outbox SET checked_at = now() - interval '1 hour'`)

		tx := b.begin(t)
		got, err := q.ClaimDue(t.Context(), tx, 10, 1<<20)
		require.NoError(t, err)
		require.Len(t, got, 2)
		require.NoError(t, q.SentDue(t.Context(), tx, refs(got[0])))
		require.NoError(t, tx.Commit(t.Context()))

		state := b.state(t, rows[0].Ref())
		require.NotNil(t, state.CheckedAt)
		require.WithinDuration(t, b.now(t), *state.CheckedAt, time.Minute, "repair counts its age from the resend")
		state.CheckedAt = nil
		require.Equal(t, rowState{}, state, "in Redis again, behind the position")
		require.Equal(t, 1, b.live(t)[0].Attempts, "the failed attempt stays counted")
		requireRowsEqual(t, []Row{b.live(t)[1]}, b.claimDue(t, q, 10, 1<<20), "the other row is still due")
	})
}

func TestSetMarkerSaysWhetherOneWasSetBefore(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	other, ob := setup(t)

	replaced, err := q.SetMarker(t.Context(), b.pool, "m1")
	require.NoError(t, err)
	require.False(t, replaced, "the ledger's first marker")
	replaced, err = q.SetMarker(t.Context(), b.pool, "m2")
	require.NoError(t, err)
	require.True(t, replaced)
	replaced, err = q.SetMarker(t.Context(), b.pool, "m2")
	require.NoError(t, err)
	require.True(t, replaced)

	replaced, err = other.SetMarker(t.Context(), ob.pool, "m1")
	require.NoError(t, err)
	require.False(t, replaced, "each schema's ledger has its own")
}

func TestLedgerIDNamesOneOutbox(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	other, ob := setup(t)
	id, err := q.LedgerID(t.Context(), b.pool)
	require.NoError(t, err)
	require.NotZero(t, id)
	again, err := q.LedgerID(t.Context(), b.pool)
	require.NoError(t, err)
	require.Equal(t, id, again)
	otherID, err := other.LedgerID(t.Context(), ob.pool)
	require.NoError(t, err)
	require.NotEqual(t, id, otherID)
}

func TestCountCountsLiveAndDeadRows(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	require.Equal(t, Counts{}, b.count(t, q))
	rows := b.insert(t, q, "order.placed", "a", "b", "c")
	keyed := b.insertKeyed(t, q, "customer-1")
	require.NoError(t, q.MarkEnqueued(t.Context(), b.pool, refs(keyed)))
	require.Equal(t, Counts{Live: 4}, b.count(t, q), "pending and in flight alike")
	_, err := q.Bury(t.Context(), b.pool, []Burial{{Ref: rows[0].Ref(), Reason: ReasonPermanent}})
	require.NoError(t, err)
	require.NoError(t, q.Delete(t.Context(), b.pool, refs(rows[1])))
	require.Equal(t, Counts{Live: 2, Dead: 1}, b.count(t, q))
}
