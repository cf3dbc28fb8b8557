package store

import (
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"
)

func TestBuryListRetargetRequeueAndDiscardDead(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	rows := b.insert(t, q, "order.placed", "a", "b", "c")

	before := b.now(t)
	n, err := q.Bury(t.Context(), b.pool, []Burial{
		{Ref: rows[0].Ref(), Reason: ReasonUnenqueueable, Error: "bad queue a", Attempts: 2},
		{Ref: rows[1].Ref(), Reason: ReasonPermanent, Error: "Card Declined", Attempts: 1},
	})
	require.NoError(t, err)
	require.Equal(t, int64(2), n)
	requireRowsEqual(t, rows[2:], b.live(t))
	require.Equal(t, Counts{Live: 1, Dead: 2}, b.count(t, q))

	list := b.dead(t, q, DeadFilter{Limit: 10})
	require.Len(t, list, 2)
	errA, errB := "bad queue a", "Card Declined"
	deadRows := []Row{rows[0], rows[1]}
	deadRows[0].XID, deadRows[0].Attempts, deadRows[0].LastError = 0, 2, &errA
	deadRows[1].XID, deadRows[1].Attempts, deadRows[1].LastError = 0, 1, &errB
	requireRowsEqual(t, deadRows, []Row{list[0].Row, list[1].Row}, "a dead letter has no transaction")
	require.Equal(t, []string{ReasonUnenqueueable, ReasonPermanent}, []string{list[0].Reason, list[1].Reason})
	for _, d := range list {
		require.WithinDuration(t, before, d.DeadAt, time.Minute)
	}
	require.Len(t, b.dead(t, q, DeadFilter{Limit: 1}), 1, "limit")
	require.Len(t, b.dead(t, q, DeadFilter{ErrorLike: "card declined", Limit: 10}), 1, "error text, any case")
	require.Len(t, b.dead(t, q, DeadFilter{Receiver: "a", Limit: 10}), 1)
	require.Len(t, b.dead(t, q, DeadFilter{Signal: "order.placed", Limit: 10}), 2)
	require.Empty(t, b.dead(t, q, DeadFilter{Signal: "other", Limit: 10}))
	byID := b.dead(t, q, DeadFilter{IDs: ids(rows[1]), Limit: 10})
	require.Len(t, byID, 1)
	require.Equal(t, rows[1].ID, byID[0].ID)
	byEvent := b.dead(t, q, DeadFilter{EventIDs: [][16]byte{rows[0].EventID}, Limit: 10})
	require.Len(t, byEvent, 2, "the event's two receivers' letters")
	require.Empty(t, b.dead(t, q, DeadFilter{EventIDs: [][16]byte{ulid.Make()}, Limit: 10}))
	require.Empty(t, b.dead(t, q, DeadFilter{DeadUntil: before.Add(-time.Minute), Limit: 10}))
	require.Len(t, b.dead(t, q, DeadFilter{DeadSince: before.Add(-time.Minute), Limit: 10}), 2)

	n, err = q.RetargetDead(t.Context(), b.pool, append(ids(rows[0]), ulid.Make()), "fixed")
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	n, err = q.RequeueDead(t.Context(), b.pool, append(ids(rows[0]), ulid.Make()))
	require.NoError(t, err)
	require.Equal(t, int64(1), n, "unknown IDs are ignored")
	live := b.live(t)
	require.Len(t, live, 2)
	require.Greater(t, live[0].XID, rows[0].XID, "a requeued row is written anew")
	requeued := rows[0]
	// Attempts reset, a fresh asynq task ID; the last error stays, for the
	// record.
	requeued.XID, requeued.Attempts, requeued.LastError, requeued.Queue, requeued.Generation = live[0].XID, 0, &errA, "fixed", 1
	requireRowsEqual(t, []Row{requeued, rows[2]}, live)
	require.Equal(t, rowState{}, b.state(t, requeued.Ref()), "pending, for the position to find")

	n, err = q.DiscardDead(t.Context(), b.pool, ids(rows[1]))
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	require.Equal(t, Counts{Live: 2}, b.count(t, q))
}

func TestRequeueDeadKeepsAKeyedRowInItsPlace(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	first, second := b.insertKeyed(t, q, "customer-1"), b.insertKeyed(t, q, "customer-1")
	_, err := q.Bury(t.Context(), b.pool, []Burial{{Ref: first.Ref(), Reason: ReasonPermanent, Error: "card declined"}})
	require.NoError(t, err)
	_, err = q.RequeueDead(t.Context(), b.pool, ids(first))
	require.NoError(t, err)

	tx := b.begin(t)
	heads, err := q.ClaimKeyed(t.Context(), tx, 10, 1<<20, &KeyCursor{})
	require.NoError(t, err)
	require.Equal(t, ids(first), ids(heads...), "its number still comes before the key's next row's")
	require.Equal(t, *first.OrderingSeq, *heads[0].OrderingSeq)
	require.NotEqual(t, second.ID, heads[0].ID)
}

func TestCountDeadAndTheCursor(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	rows := b.insert(t, q, "order.placed", "a", "b", "c", "d")
	burials := make([]Burial, len(rows))
	for i, r := range rows {
		burials[i] = Burial{Ref: r.Ref(), Reason: ReasonPermanent, Error: "declined", Attempts: 1}
	}
	burials[3].Reason = ReasonRetriesExhausted
	_, err := q.Bury(t.Context(), b.pool, burials)
	require.NoError(t, err)

	all := b.dead(t, q, DeadFilter{Limit: 10})
	require.Len(t, all, 4)
	for _, c := range []struct {
		f    DeadFilter
		want int64
	}{
		{DeadFilter{}, 4},
		{DeadFilter{Limit: 1}, 4},
		{DeadFilter{Reason: ReasonPermanent}, 3},
		{DeadFilter{Reason: ReasonPermanent, Receiver: "d"}, 0},
		{DeadFilter{AfterDeadAt: all[1].DeadAt, AfterID: all[1].ID}, 2},
	} {
		n, err := q.CountDead(t.Context(), b.pool, c.f)
		require.NoError(t, err)
		require.Equal(t, c.want, n, "%+v", c.f)
	}
	next := b.dead(t, q, DeadFilter{AfterDeadAt: all[1].DeadAt, AfterID: all[1].ID, Limit: 10})
	require.Equal(t, []Dead{all[2], all[3]}, next, "the letters past the cursor, one statement's letters told apart by ID")
}
