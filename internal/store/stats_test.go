package store

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// stats reads Stats at position p in a transaction of its own.
func (b *testBundle) stats(t *testing.T, q *Queries, p Position) ([]ReceiverStats, []string) {
	t.Helper()
	tx, err := b.pool.Begin(t.Context())
	require.NoError(t, err)
	defer tx.Rollback(context.Background()) //nolint:errcheck // read only
	rows, queues, err := q.Stats(t.Context(), tx, p)
	require.NoError(t, err)
	return rows, queues
}

// receiverStats returns the stats of one receiver, which must have some.
func (b *testBundle) receiverStats(t *testing.T, q *Queries, p Position, receiver string) ReceiverStats {
	t.Helper()
	all, _ := b.stats(t, q, p)
	for _, s := range all {
		if s.Receiver == receiver {
			return s
		}
	}
	require.Failf(t, "no stats", "receiver %q in %+v", receiver, all)
	return ReceiverStats{}
}

func idOf(row Row) *[16]byte { return &row.ID }

func TestStats(t *testing.T) {
	t.Parallel()

	t.Run("RowsWithoutAKeyAreInFlightOnceThePositionPassesThem", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		var rows []Row
		for range 4 {
			rows = append(rows, b.insert(t, q, "order.placed", "email")...)
		}
		count := func(p Position) (pending, inFlight int64, oldestPending, oldestInFlight *[16]byte) {
			t.Helper()
			s := b.receiverStats(t, q, p, "email")
			return s.Pending, s.InFlight, s.OldestPending, s.OldestInFlight
		}

		pending, inFlight, oldestPending, oldestInFlight := count(Start)
		require.Equal(t, [2]int64{4, 0}, [2]int64{pending, inFlight}, "at Start, every row is pending")
		require.Equal(t, idOf(rows[0]), oldestPending)
		require.Nil(t, oldestInFlight)

		w := b.window(t, q, Start, 2, 1<<20)
		p := past(Start, w)
		pending, inFlight, oldestPending, oldestInFlight = count(p)
		require.Equal(t, [2]int64{2, 2}, [2]int64{pending, inFlight}, "half the window is enqueued: up to its last row")
		require.Equal(t, idOf(rows[2]), oldestPending)
		require.Equal(t, idOf(rows[0]), oldestInFlight)

		w = b.window(t, q, p, 10, 1<<20)
		require.True(t, w.Done)
		p = past(p, w)
		pending, inFlight, oldestPending, oldestInFlight = count(p)
		require.Equal(t, [2]int64{0, 4}, [2]int64{pending, inFlight}, "the window's snapshot covers them all")
		require.Nil(t, oldestPending)
		require.Equal(t, idOf(rows[0]), oldestInFlight)

		newer := b.insert(t, q, "order.placed", "email")[0]
		require.NoError(t, q.RetryLater(t.Context(), b.pool, []Failure{{Ref: rows[1].Ref(), Error: "redis down"}}))
		pending, inFlight, oldestPending, oldestInFlight = count(p)
		require.Equal(t, [2]int64{2, 3}, [2]int64{pending, inFlight}, "a row sent since, and one waiting to go out again")
		require.Equal(t, idOf(rows[1]), oldestPending)
		require.Equal(t, idOf(rows[0]), oldestInFlight)

		require.NoError(t, q.Delete(t.Context(), b.pool, refs(rows...)))
		pending, inFlight, oldestPending, oldestInFlight = count(p)
		require.Equal(t, [2]int64{1, 0}, [2]int64{pending, inFlight}, "acked rows are gone")
		require.Equal(t, idOf(newer), oldestPending)
		require.Nil(t, oldestInFlight)
	})

	t.Run("TellsAPendingRowFromAnInFlightOneOfTheSameTransaction", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		// One transaction sends two events to one receiver; a window of one
		// row enqueues the first. The oldest row of each state is in the
		// same transaction: each must be its own state's.
		tx := b.begin(t)
		first := b.insertIn(t, q, tx, "order.placed", "email")[0]
		second := b.insertIn(t, q, tx, "order.placed", "email")[0]
		require.NoError(t, tx.Commit(t.Context()))
		w := b.window(t, q, Start, 1, 1<<20)
		requireRowsEqual(t, []Row{first}, w.Rows)

		s := b.receiverStats(t, q, past(Start, w), "email")
		require.Equal(t, [2]int64{1, 1}, [2]int64{s.Pending, s.InFlight})
		require.Equal(t, idOf(second), s.OldestPending, "the first row is in flight, not pending")
		require.Equal(t, idOf(first), s.OldestInFlight)
	})

	t.Run("KeyedRowsAreInFlightOnceEnqueued", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		k1, k2 := b.insertKeyed(t, q, "customer-1"), b.insertKeyed(t, q, "customer-1")
		require.NoError(t, q.MarkEnqueued(t.Context(), b.pool, refs(k1)))
		got, p := b.read(t, q, Start)
		require.Empty(t, got, "the window reads no keyed row")

		for _, at := range []Position{Start, p} {
			s := b.receiverStats(t, q, at, "r")
			require.Equal(t, int64(1), s.Pending, "the position says nothing of keyed rows")
			require.Equal(t, int64(1), s.InFlight)
			require.Equal(t, idOf(k2), s.OldestPending)
			require.Equal(t, idOf(k1), s.OldestInFlight)
		}

		require.NoError(t, q.Resend(t.Context(), b.pool, refs(k1)))
		s := b.receiverStats(t, q, p, "r")
		require.Equal(t, [2]int64{2, 0}, [2]int64{s.Pending, s.InFlight}, "a keyed row sent back is pending")
	})

	t.Run("CountsDeadLettersAndTheLatestDeliveryTime", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		later := time.Now().Add(time.Hour).Truncate(time.Microsecond)
		e := event("order.placed")
		e.ProcessAt = &later
		tx := b.begin(t)
		scheduled := b.write(t, q, tx, e, []Target{target("email")})
		require.NoError(t, tx.Commit(t.Context()))
		sooner := later.Add(-time.Minute)
		e = event("order.placed")
		e.ProcessAt = &sooner
		require.NoError(t, q.Insert(t.Context(), b.pool, e, []Target{target("email")}))
		rows := b.insert(t, q, "order.placed", "email", "audit")
		_, err := q.Bury(t.Context(), b.pool, []Burial{
			{Ref: rows[0].Ref(), Reason: ReasonPermanent, Error: "x"},
			{Ref: rows[1].Ref(), Reason: ReasonPermanent, Error: "x"},
		})
		require.NoError(t, err)

		stats, queues := b.stats(t, q, Start)
		require.Equal(t, []string{"signals"}, queues)
		require.Len(t, stats, 2)
		byReceiver := map[string]ReceiverStats{}
		for _, s := range stats {
			byReceiver[s.Receiver] = s
		}
		email := byReceiver["email"]
		require.Equal(t, [3]int64{2, 0, 1}, [3]int64{email.Pending, email.InFlight, email.Dead})
		require.Equal(t, idOf(scheduled[0]), email.OldestPending)
		require.NotNil(t, email.LatestProcessAt)
		require.True(t, later.Equal(*email.LatestProcessAt), "the latest of the delivery times asked for")
		audit := byReceiver["audit"]
		require.Equal(t, ReceiverStats{Signal: "order.placed", Receiver: "audit", Dead: 1}, audit, "a receiver with dead letters only")
	})

	t.Run("AddsUpAReceiverWhoseRowsAddressTwoQueues", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		// The receiver moved from queue "old" to "new" between sends: its
		// rows address both, pending and in flight.
		var rows []Row
		for _, queue := range []string{"old", "new", "old", "new"} {
			tgt := target("email")
			tgt.Queue = queue
			tx := b.begin(t)
			rows = append(rows, b.write(t, q, tx, event("order.placed"), []Target{tgt})...)
			require.NoError(t, tx.Commit(t.Context()))
		}
		w := b.window(t, q, Start, 2, 1<<20)
		requireRowsEqual(t, rows[:2], w.Rows)

		stats, queues := b.stats(t, q, past(Start, w))
		require.ElementsMatch(t, []string{"old", "new"}, queues, "each live row's queue, once")
		require.Len(t, stats, 1, "one entry per signal and receiver, whatever the queues")
		s := stats[0]
		require.Equal(t, "email", s.Receiver)
		require.EqualValues(t, 2, s.Pending)
		require.EqualValues(t, 2, s.InFlight)
		require.Equal(t, idOf(rows[2]), s.OldestPending, "the oldest pending row over both queues")
		require.Equal(t, idOf(rows[0]), s.OldestInFlight)
	})
}
