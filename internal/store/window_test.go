package store

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// window reads one window past p.
func (b *testBundle) window(t *testing.T, q *Queries, p Position, limit, maxBytes int) Window {
	t.Helper()
	w, err := q.Window(t.Context(), b.pool, p, limit, maxBytes)
	require.NoError(t, err)
	return w
}

// past returns the position a relay moves to from p once it enqueued every
// row of w: on to the window's snapshot when w was its last read, else to
// its last row inside it; a read with no window open that found no row
// leaves p as it is.
func past(p Position, w Window) Position {
	if w.Upto == "" {
		return p
	}
	if w.Done {
		return Position{Covered: w.Upto}
	}
	return Position{Covered: p.Covered, Upto: w.Upto, After: w.Rows[len(w.Rows)-1].Ref()}
}

// read reads the whole window past p in one go and returns its rows and
// the position past them.
func (b *testBundle) read(t *testing.T, q *Queries, p Position) ([]Row, Position) {
	t.Helper()
	w := b.window(t, q, p, 1000, 1<<30)
	require.True(t, w.Done, "one read takes a test's whole window")
	return w.Rows, past(p, w)
}

func TestWindow(t *testing.T) {
	t.Parallel()

	t.Run("ReadsCommittedRowsOnceThePositionPassesThem", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		first := b.insert(t, q, "order.placed", "email", "analytics")
		second := b.insert(t, q, "invoice.issued", "record")

		got, p := b.read(t, q, Start)
		requireRowsEqual(t, append(first, second...), got, "in (xid, id) order, every field read")
		got, p = b.read(t, q, p)
		require.Empty(t, got, "a passed row is not read again")

		third := b.insert(t, q, "order.placed", "email")
		got, p = b.read(t, q, p)
		requireRowsEqual(t, third, got)
		got, _ = b.read(t, q, p)
		require.Empty(t, got)
	})

	t.Run("ReadsATransactionThatCommitsAfterALaterOne", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		early := b.begin(t)
		a := b.insertIn(t, q, early, "order.placed", "email")
		late := b.begin(t)
		bRows := b.insertIn(t, q, late, "order.placed", "email")
		require.Less(t, a[0].XID, bRows[0].XID)
		require.NoError(t, late.Commit(t.Context()))

		got, p := b.read(t, q, Start)
		requireRowsEqual(t, bRows, got, "the later transaction committed first")
		require.NoError(t, early.Commit(t.Context()))
		got, p = b.read(t, q, p)
		requireRowsEqual(t, a, got, "the earlier transaction, committed after the position passed a later one, is read next")
		got, _ = b.read(t, q, p)
		require.Empty(t, got)
	})

	t.Run("ReadsTransactionsCommittedInTheirOwnOrder", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		early := b.begin(t)
		a := b.insertIn(t, q, early, "order.placed", "email")
		late := b.begin(t)
		bRows := b.insertIn(t, q, late, "order.placed", "email")
		require.NoError(t, early.Commit(t.Context()))

		got, p := b.read(t, q, Start)
		requireRowsEqual(t, a, got)
		require.NoError(t, late.Commit(t.Context()))
		got, p = b.read(t, q, p)
		requireRowsEqual(t, bRows, got)
		got, _ = b.read(t, q, p)
		require.Empty(t, got)
	})

	t.Run("ReadsALateCommitAfterTheWindowItMissed", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		early := b.begin(t)
		a := b.insertIn(t, q, early, "order.placed", "email")
		later := b.insert(t, q, "order.placed", "email", "analytics")

		w := b.window(t, q, Start, 1, 1<<20)
		requireRowsEqual(t, later[:1], w.Rows)
		require.False(t, w.Done)
		p := past(Start, w)
		// The early transaction commits while the window is half read: the
		// window's snapshot did not see it, the next one does.
		require.NoError(t, early.Commit(t.Context()))
		w = b.window(t, q, p, 1, 1<<20)
		requireRowsEqual(t, later[1:], w.Rows)
		require.False(t, w.Done)
		p = past(p, w)
		w = b.window(t, q, p, 1, 1<<20)
		require.Empty(t, w.Rows)
		require.True(t, w.Done)
		got, _ := b.read(t, q, past(p, w))
		requireRowsEqual(t, a, got)
	})

	t.Run("ReadsATransactionThatCommitsWhileAWindowIsOpenInTheNextWindowOnce", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		first, second := b.begin(t), b.begin(t)
		h1 := b.insertIn(t, q, first, "order.placed", "email", "analytics")
		h2 := b.insertIn(t, q, second, "order.placed", "email")
		before := b.insert(t, q, "order.placed", "email")
		got, p := b.read(t, q, Start)
		requireRowsEqual(t, before, got)
		// Both held transactions are in progress in the covered snapshot.

		require.NoError(t, first.Commit(t.Context()))
		w := b.window(t, q, p, 1, 1<<20) // opens a window whose snapshot sees the first only
		requireRowsEqual(t, h1[:1], w.Rows)
		require.False(t, w.Done)
		p = past(p, w)
		require.NoError(t, second.Commit(t.Context()))
		w = b.window(t, q, p, 1, 1<<20)
		requireRowsEqual(t, h1[1:], w.Rows, "on from the window's last row, among the transactions the covered snapshot saw in progress")
		p = past(p, w)
		w = b.window(t, q, p, 1, 1<<20)
		require.Empty(t, w.Rows, "the second committed after the window's snapshot")
		require.True(t, w.Done)
		got, p = b.read(t, q, past(p, w))
		requireRowsEqual(t, h2, got, "so it comes in the next window")
		got, _ = b.read(t, q, p)
		require.Empty(t, got)
	})

	t.Run("ATransactionHeldOpenHoldsBackNoOtherRow", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		held := b.begin(t)
		h := b.insertIn(t, q, held, "order.placed", "email")
		aborted := b.begin(t)
		b.insertIn(t, q, aborted, "order.placed", "email")

		p := Start
		for range 2 {
			rows := b.insert(t, q, "order.placed", "email")
			var got []Row
			got, p = b.read(t, q, p)
			requireRowsEqual(t, rows, got, "rows committed after the held one flow")
		}
		require.NoError(t, aborted.Rollback(t.Context()))
		require.NoError(t, held.Commit(t.Context()))
		got, p := b.read(t, q, p)
		requireRowsEqual(t, h, got, "the held row once it commits; the rolled-back one never")
		got, _ = b.read(t, q, p)
		require.Empty(t, got)
	})

	t.Run("PagesThroughAWindowByLimit", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		var rows []Row
		for range 5 {
			rows = append(rows, b.insert(t, q, "order.placed", "email")...)
		}

		w := b.window(t, q, Start, 2, 1<<20)
		requireRowsEqual(t, rows[0:2], w.Rows)
		require.False(t, w.Done)
		upto := w.Upto
		p := past(Start, w)
		require.Equal(t, rows[1].Ref(), p.After)

		// A row committed now is not in the open window: it comes after it.
		newer := b.insert(t, q, "order.placed", "email")
		w = b.window(t, q, p, 2, 1<<20)
		requireRowsEqual(t, rows[2:4], w.Rows)
		require.False(t, w.Done)
		require.Equal(t, upto, w.Upto, "the open window keeps its snapshot")
		p = past(p, w)
		w = b.window(t, q, p, 2, 1<<20)
		requireRowsEqual(t, rows[4:5], w.Rows)
		require.True(t, w.Done, "fewer rows than the limit: the window's last")
		p = past(p, w)
		require.Equal(t, Position{Covered: upto}, p)

		more := b.insert(t, q, "order.placed", "email")
		w = b.window(t, q, p, 2, 1<<20)
		requireRowsEqual(t, append(newer, more...), w.Rows)
		require.False(t, w.Done, "as many rows as the limit: maybe more")
		p = past(p, w)
		w = b.window(t, q, p, 2, 1<<20)
		require.Empty(t, w.Rows)
		require.True(t, w.Done)
	})

	t.Run("StopsAtTheByteCap", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		rows := b.insert(t, q, "order.placed", "a", "b", "c")
		size := len(rows[0].Payload)

		w := b.window(t, q, Start, 10, 2*size)
		requireRowsEqual(t, rows[:2], w.Rows)
		require.False(t, w.Done, "rows were left for the next read")
		w = b.window(t, q, Start, 10, 1)
		requireRowsEqual(t, rows[:1], w.Rows, "at least one row, however large")
		require.False(t, w.Done)
		p := past(Start, w)
		w = b.window(t, q, p, 10, 2*size)
		requireRowsEqual(t, rows[1:], w.Rows)
		require.True(t, w.Done)
		w = b.window(t, q, Start, 10, 3*size)
		requireRowsEqual(t, rows, w.Rows)
		require.True(t, w.Done)
	})

	t.Run("LeavesRowsThatWaitAndRowsWithAKey", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		rows := b.insert(t, q, "order.placed", "a", "b", "c")
		keyed := b.insertKeyed(t, q, "customer-1")
		require.NoError(t, q.RetryLater(t.Context(), b.pool, []Failure{
			{Ref: rows[0].Ref(), Error: "redis down", Delay: time.Hour},
			{Ref: rows[1].Ref(), Error: "redis down"}, // due at once, for ClaimDue
		}))

		got, _ := b.read(t, q, Start)
		requireRowsEqual(t, rows[2:], got)
		require.NotContains(t, ids(got...), keyed.ID)
	})

	t.Run("StartReadsEveryLiveRow", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		var rows []Row
		for range 3 {
			rows = append(rows, b.insert(t, q, "order.placed", "email", "analytics")...)
		}
		got, p := b.read(t, q, Start)
		requireRowsEqual(t, rows, got)
		got, _ = b.read(t, q, p)
		require.Empty(t, got)

		// A Redis that lost its data lost the position: every live row goes
		// out again, the acked ones excepted.
		require.NoError(t, q.Delete(t.Context(), b.pool, refs(rows[0])))
		got, _ = b.read(t, q, Start)
		requireRowsEqual(t, rows[1:], got)
	})

	t.Run("ReadsARequeuedDeadLetterAsANewRow", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		row := b.insert(t, q, "order.placed", "email")[0]
		_, p := b.read(t, q, Start)
		n, err := q.Bury(t.Context(), b.pool, []Burial{{Ref: row.Ref(), Reason: ReasonPermanent, Error: "card declined", Attempts: 1}})
		require.NoError(t, err)
		require.Equal(t, int64(1), n)

		n, err = q.RequeueDead(t.Context(), b.pool, ids(row))
		require.NoError(t, err)
		require.Equal(t, int64(1), n)
		got, p := b.read(t, q, p)
		require.Len(t, got, 1)
		require.Equal(t, row.ID, got[0].ID)
		require.Greater(t, got[0].XID, row.XID, "the requeueing transaction's ID")
		require.Equal(t, 1, got[0].Generation)
		got, _ = b.read(t, q, p)
		require.Empty(t, got)
	})

	t.Run("NextXIDIsTheDatabasesNextTransactionID", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		row := b.insert(t, q, "order.placed", "email")[0]
		next, err := q.NextXID(t.Context(), b.pool)
		require.NoError(t, err)
		require.Greater(t, next, row.XID, "past every committed transaction")
		var later uint64
		require.NoError(t, b.pool.QueryRow(t.Context(), `SELECT pg_current_xact_id()`).Scan(&later))
		require.GreaterOrEqual(t, later, next, "no later transaction took an ID below it")
	})
}

// TestWindowReadsEveryCommittedRowOnceUnderConcurrentSenders reads windows
// of random sizes while senders commit, and some roll back, transactions of
// one to three statements each, so that commits come out of transaction ID
// order: every committed row must be read exactly once, and no other.
func TestWindowReadsEveryCommittedRowOnceUnderConcurrentSenders(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	const senders, transactions = 8, 25
	var mu sync.Mutex
	committed := map[[16]byte]bool{}
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // a failed read leaves no sender behind: t.Context() is done by then
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(s), 0))
			for range transactions {
				tx, err := b.pool.Begin(t.Context())
				if err != nil {
					t.Error(err)
					return
				}
				var written [][16]byte
				for range 1 + rng.IntN(3) {
					tgt := target("email")
					if err := q.Insert(t.Context(), tx, event("order.placed"), []Target{tgt}); err != nil {
						_ = tx.Rollback(t.Context())
						t.Error(err)
						return
					}
					written = append(written, tgt.TaskID)
				}
				if rng.IntN(10) == 0 {
					_ = tx.Rollback(t.Context())
					continue
				}
				if err := tx.Commit(t.Context()); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for _, id := range written {
					committed[id] = true
				}
				mu.Unlock()
			}
		}()
	}
	sent := make(chan struct{})
	go func() { wg.Wait(); close(sent) }()

	read := map[[16]byte]int{}
	p := Start
	seed := uint64(time.Now().UnixNano())
	t.Logf("window sizes seeded with %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	for last := false; !last; {
		select {
		case <-sent:
			last = true // every sender is done: one more pass reads the rest
		default:
		}
		for {
			w := b.window(t, q, p, 1+rng.IntN(5), 1+rng.IntN(3*len(`{"order_id":"o-1"}`)))
			for _, r := range w.Rows {
				read[r.ID]++
			}
			p = past(p, w)
			if w.Done {
				break
			}
		}
	}
	require.False(t, t.Failed(), "a sender failed")
	require.NotEmpty(t, read)
	for id, n := range read {
		require.Equal(t, 1, n, "%x read once", id)
		require.True(t, committed[id], "%x was committed", id)
	}
	require.Len(t, read, len(committed), "every committed row read")
}

func TestParseSnapshot(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   string
		xmax uint64
		xip  []uint64
		ok   bool
	}{
		{"1:1:", 1, []uint64{}, true},
		{"745:750:", 750, []uint64{}, true},
		{"745:750:745,748", 750, []uint64{745, 748}, true},
		{"", 0, nil, false},
		{"745:750", 0, nil, false},
		{"745:x:", 0, nil, false},
		{"745:750:746,", 0, nil, false},
		{"745:750:a", 0, nil, false},
	} {
		xmax, xip, err := parseSnapshot(c.in)
		if !c.ok {
			require.Error(t, err, "%q", c.in)
			continue
		}
		require.NoError(t, err, "%q", c.in)
		require.Equal(t, c.xmax, xmax, "%q", c.in)
		require.Equal(t, c.xip, xip, "%q", c.in)
	}
}

func TestWindowRefusesAPositionItCannotRead(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	_, err := q.Window(t.Context(), b.pool, Position{Covered: "not a snapshot"}, 10, 1<<20)
	require.Error(t, err)
	_, err = q.Window(t.Context(), b.pool, Position{Covered: Start.Covered, Upto: "not a snapshot"}, 10, 1<<20)
	require.Error(t, err)
}

func TestRestampGivesRowsFromAheadTheFirstTransactionID(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	rows := b.insert(t, q, "order.placed", "email", "analytics")
	// As restored from another cluster's dump: IDs this database has not
	// reached.
	b.exec(t, `UPDATE {{schema}}.outbox SET xid = (pg_current_xact_id()::text::bigint + 1000000)::text::xid8 WHERE id = $1`, rows[1].ID)

	got, p := b.read(t, q, Start)
	requireRowsEqual(t, rows[:1], got, "no snapshot here sees a row from ahead")

	n, err := q.Restamp(t.Context(), b.pool)
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	restamped := rows[1]
	restamped.XID = 1
	requireRowsEqual(t, []Row{restamped, rows[0]}, func() []Row {
		got, _ := b.read(t, q, Start)
		return got
	}(), "from Start, the restamped row comes first")
	got, _ = b.read(t, q, p)
	require.Empty(t, got, "a position past Start has passed xid 1")

	n, err = q.Restamp(t.Context(), b.pool)
	require.NoError(t, err)
	require.Zero(t, n, "no row from ahead is left")
}

// TestRestampLeavesTheRowsOfRunningSendersAlone runs Restamp over and over
// while eight senders commit rows: none of theirs is ahead of the database,
// so none may be restamped.
func TestRestampLeavesTheRowsOfRunningSendersAlone(t *testing.T) {
	t.Parallel()
	q, b := setup(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				tx, err := b.pool.Begin(t.Context())
				if err != nil {
					t.Error(err)
					return
				}
				e, tg := event("order.placed"), target("r")
				if err := q.Insert(t.Context(), tx, e, []Target{tg}); err != nil {
					t.Error(err)
					return
				}
				if err := tx.Commit(t.Context()); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	var restamped int64
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		n, err := q.Restamp(t.Context(), b.pool)
		require.NoError(t, err)
		restamped += n
	}
	close(stop)
	wg.Wait()
	require.Zero(t, restamped, "rows of senders committing meanwhile were taken for rows from ahead of the database")
	require.NotEmpty(t, b.live(t))
}
