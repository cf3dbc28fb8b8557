package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// horizonAt is a covered snapshot that sees every transaction before xid,
// and none after; "" (no position seen) for 0.
func horizonAt(xid uint64) string {
	if xid == 0 {
		return ""
	}
	return fmt.Sprintf("%d:%d:", xid, xid)
}

// stale claims stale rows in a transaction of its own, rolled back at once,
// with the horizon at before (see horizonAt).
func (b *testBundle) stale(t *testing.T, q *Queries, before uint64, age time.Duration, limit int) []Stale {
	t.Helper()
	tx, err := b.pool.Begin(t.Context())
	require.NoError(t, err)
	defer tx.Rollback(context.Background()) //nolint:errcheck // read only
	rows, err := q.ClaimStale(t.Context(), tx, horizonAt(before), age, limit)
	require.NoError(t, err)
	return rows
}

func staleRefs(stale []Stale) []Ref {
	out := make([]Ref, len(stale))
	for i, s := range stale {
		out[i] = s.Ref
	}
	return out
}

// enqueueKeyed records an enqueue of keyed rows, ago in the past.
func (b *testBundle) enqueueKeyed(t *testing.T, q *Queries, ago time.Duration, rows ...Row) {
	t.Helper()
	require.NoError(t, q.MarkEnqueued(t.Context(), b.pool, refs(rows...)))
	xids, rowIDs := refArrays(refs(rows...))
	b.exec(t, `UPDATE {{schema}}.outbox SET enqueued_at = enqueued_at - $3::bigint * interval '1 microsecond' WHERE `+byRef,
		xids, rowIDs, ago.Microseconds())
}

func TestClaimStale(t *testing.T) {
	t.Parallel()

	t.Run("TakesRowsWithoutAKeyBelowTheHorizon", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		first := b.insert(t, q, "order.placed", "a", "b")
		second := b.insert(t, q, "order.placed", "c")
		waiting := b.insert(t, q, "order.placed", "d")
		require.NoError(t, q.RetryLater(t.Context(), b.pool, []Failure{{Ref: waiting[0].Ref(), Error: "redis down", Delay: time.Hour}}))
		keyed := b.insertKeyed(t, q, "customer-1")
		b.exec(t, `UPDATE {{schema}}.outbox SET attempts = 3, generation = 2 WHERE id = $1`, first[1].ID)

		require.Empty(t, b.stale(t, q, 0, time.Hour, 10), "no horizon yet")
		require.Empty(t, b.stale(t, q, first[0].XID, time.Hour, 10), "the horizon's own transaction may not have been passed")
		require.Equal(t, refs(first...), staleRefs(b.stale(t, q, second[0].XID, time.Hour, 10)))
		got := b.stale(t, q, keyed.XID+1, time.Hour, 10)
		require.Equal(t, refs(append(first, second...)...), staleRefs(got), "in (xid, id) order; neither waiting nor keyed rows")
		require.Equal(t, Stale{Ref: first[1].Ref(), Queue: "signals", Generation: 2, Attempts: 3}, got[1])
		require.Equal(t, refs(first[0]), staleRefs(b.stale(t, q, keyed.XID+1, time.Hour, 1)), "limit")
	})

	t.Run("TouchedRowsRestForTheAge", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		rows := b.insert(t, q, "order.placed", "a", "b")
		horizon := rows[0].XID + 1

		require.NoError(t, q.Touch(t.Context(), b.pool, refs(rows[0])))
		require.NotNil(t, b.state(t, rows[0].Ref()).CheckedAt)
		require.Equal(t, refs(rows[1]), staleRefs(b.stale(t, q, horizon, time.Hour, 10)), "found alive a moment ago")
		require.Equal(t, refs(rows...), staleRefs(b.stale(t, q, horizon, 0, 10)), "found alive longer ago than the age")
		b.exec(t, `UPDATE {{schema}}.outbox SET checked_at = now() - interval '2 hours' WHERE id = $1`, rows[0].ID)
		require.Equal(t, refs(rows...), staleRefs(b.stale(t, q, horizon, time.Hour, 10)))
	})

	t.Run("TakesKeyedRowsEnqueuedLongerThanTheAge", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		recent, old, touched := b.insertKeyed(t, q, "k1"), b.insertKeyed(t, q, "k2"), b.insertKeyed(t, q, "k3")
		b.insertKeyed(t, q, "k4") // never enqueued
		b.enqueueKeyed(t, q, 3*time.Hour, touched)
		b.enqueueKeyed(t, q, 2*time.Hour, old)
		b.enqueueKeyed(t, q, 0, recent)
		require.NoError(t, q.Touch(t.Context(), b.pool, refs(touched)))

		require.Equal(t, refs(old), staleRefs(b.stale(t, q, 0, time.Hour, 10)), "whatever the horizon")
		require.Equal(t, refs(old, recent, touched), staleRefs(b.stale(t, q, 0, 0, 10)), "by when last known alive, not by ID")
		require.Equal(t, refs(old), staleRefs(b.stale(t, q, 0, 0, 1)))
	})

	t.Run("FillsTheLimitWithKeyedRowsAfterTheOthers", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		keyed := b.insertKeyed(t, q, "k1")
		b.enqueueKeyed(t, q, 2*time.Hour, keyed)
		rows := b.insert(t, q, "order.placed", "a", "b")
		horizon := rows[0].XID + 1

		require.Equal(t, refs(rows...), staleRefs(b.stale(t, q, horizon, time.Hour, 2)))
		require.Equal(t, refs(rows[0], rows[1], keyed), staleRefs(b.stale(t, q, horizon, time.Hour, 3)))
	})

	t.Run("SkipsRowsAnotherRepairHolds", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		rows := b.insert(t, q, "order.placed", "a", "b")
		keyed := b.insertKeyed(t, q, "k1")
		b.enqueueKeyed(t, q, 2*time.Hour, keyed)
		horizon := rows[0].XID + 1

		first := b.begin(t)
		got, err := q.ClaimStale(t.Context(), first, horizonAt(horizon), time.Hour, 2)
		require.NoError(t, err)
		require.Equal(t, refs(rows...), staleRefs(got))
		second := b.begin(t)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second) // fail, not hang, on a row lock
		defer cancel()
		got, err = q.ClaimStale(ctx, second, horizonAt(horizon), time.Hour, 10)
		require.NoError(t, err)
		require.Equal(t, refs(keyed), staleRefs(got))
	})
}

func TestResendMakesRowsPendingAgain(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	row := b.insert(t, q, "order.placed", "email")[0]
	keyed := b.insertKeyed(t, q, "customer-1")
	b.enqueueKeyed(t, q, 2*time.Hour, keyed)
	require.NoError(t, q.Touch(t.Context(), b.pool, refs(row, keyed)))

	before := b.now(t)
	require.NoError(t, q.Resend(t.Context(), b.pool, refs(row, keyed)))
	after := b.now(t)

	s := b.state(t, row.Ref())
	require.NotNil(t, s.NextAttemptAt)
	require.WithinRange(t, *s.NextAttemptAt, before, after, "a row without a key goes at once")
	require.Nil(t, s.CheckedAt)
	s = b.state(t, keyed.Ref())
	require.NotNil(t, s.NextAttemptAt)
	timeout := time.Duration(keyed.TimeoutMS) * time.Millisecond
	require.WithinRange(t, *s.NextAttemptAt, before.Add(timeout), after.Add(timeout), "a keyed row waits out a run that may still go on")
	require.Nil(t, s.EnqueuedAt, "its key is free once the row is due")
	require.Nil(t, s.CheckedAt)
	for _, r := range b.live(t) {
		require.Equal(t, 1, r.Enqueues, "an enqueue counted")
		require.Zero(t, r.Generation, "under the same task ID")
	}

	due := b.claimDue(t, q, 10, 1<<20)
	require.Equal(t, refs(row), refs(due...), "the row without a key is due")
	tx := b.begin(t)
	heads, err := q.ClaimKeyed(t.Context(), tx, 10, 1<<20, &KeyCursor{})
	require.NoError(t, err)
	require.Empty(t, heads, "the keyed row waits out its timeout")
	require.Empty(t, b.stale(t, q, row.XID+1, 0, 10), "rows waiting to go out are not stale")
}

func TestReissueGivesRowsAFreshTaskID(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	row := b.insert(t, q, "order.placed", "email")[0]
	keyed := b.insertKeyed(t, q, "customer-1")
	b.enqueueKeyed(t, q, 0, keyed)

	before := b.now(t)
	require.NoError(t, q.Reissue(t.Context(), b.pool, refs(row, keyed)))
	after := b.now(t)
	for _, r := range []Row{row, keyed} {
		s := b.state(t, r.Ref())
		require.NotNil(t, s.NextAttemptAt)
		require.WithinRange(t, *s.NextAttemptAt, before, after, "at once, keyed or not: the worker that ran it is gone")
		require.Nil(t, s.EnqueuedAt)
	}
	for _, r := range b.live(t) {
		require.Equal(t, 1, r.Generation)
		require.Equal(t, 1, r.Enqueues)
	}
	tx := b.begin(t)
	heads, err := q.ClaimKeyed(t.Context(), tx, 10, 1<<20, &KeyCursor{})
	require.NoError(t, err)
	require.Equal(t, ids(keyed), ids(heads...))
	require.Equal(t, 1, heads[0].Generation)
}

func TestResetKeyed(t *testing.T) {
	t.Parallel()

	t.Run("ResetsEveryEnqueuedKeyedRowByLimit", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		k1, k2, k3 := b.insertKeyed(t, q, "k1"), b.insertKeyed(t, q, "k2"), b.insertKeyed(t, q, "k3")
		pending := b.insertKeyed(t, q, "k4")
		b.insert(t, q, "order.placed", "email")
		b.enqueueKeyed(t, q, 0, k1, k2, k3)

		for _, want := range []int64{2, 1, 0} {
			n, err := q.ResetKeyed(t.Context(), b.pool, 2)
			require.NoError(t, err)
			require.Equal(t, want, n)
		}
		for _, r := range []Row{k1, k2, k3} {
			s := b.state(t, r.Ref())
			require.Nil(t, s.EnqueuedAt)
			require.NotNil(t, s.NextAttemptAt, "waits out a run that may still go on")
		}
		require.Equal(t, rowState{}, b.state(t, pending.Ref()), "never enqueued: untouched")
	})

	t.Run("SinceResetsOnlyRowsEnqueuedFromThen", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		old, k2, k3 := b.insertKeyed(t, q, "k1"), b.insertKeyed(t, q, "k2"), b.insertKeyed(t, q, "k3")
		checked := b.insertKeyed(t, q, "k4")
		b.enqueueKeyed(t, q, 2*time.Hour, old, checked)
		require.NoError(t, q.Touch(t.Context(), b.pool, refs(checked))) // found in Redis after since: Redis had it before
		b.enqueueKeyed(t, q, 0, k2, k3)
		since := b.now(t).Add(-time.Hour)

		for _, want := range []int64{1, 1, 0} {
			n, err := q.ResetKeyedSince(t.Context(), b.pool, since, 1)
			require.NoError(t, err)
			require.Equal(t, want, n)
		}
		require.NotNil(t, b.state(t, old.Ref()).EnqueuedAt, "enqueued before since: Redis still has it")
		require.NotNil(t, b.state(t, checked.Ref()).EnqueuedAt, "enqueued before since, however recently found alive")
		for _, r := range []Row{k2, k3} {
			s := b.state(t, r.Ref())
			require.Nil(t, s.EnqueuedAt)
			require.NotNil(t, s.NextAttemptAt)
		}
		for _, r := range b.live(t) {
			if r.ID == old.ID || r.ID == checked.ID {
				require.Zero(t, r.Enqueues)
			} else {
				require.Equal(t, 1, r.Enqueues)
			}
		}
	})
}
