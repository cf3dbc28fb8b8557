package relay

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals/internal/store"
	"github.com/dj-signals/signals/internal/testenv"
)

// TestATransactionCommittingLateIsStillRelayed opens transactions in one
// order and commits them in the other, around batches, and holds one open
// while others flow: every row is enqueued once, the late ones as soon as
// they commit.
func TestATransactionCommittingLateIsStillRelayed(t *testing.T) {
	t.Parallel()
	r, b := setup(t, testenv.RedisAddr(), 3)
	batch := func(want int) {
		t.Helper()
		n, err := r.Batch(t.Context())
		require.NoError(t, err)
		require.Equal(t, want, n)
	}

	// early takes its transaction ID first, then waits while later
	// transactions commit and are relayed.
	early, err := b.db.Begin(t.Context())
	require.NoError(t, err)
	defer func() { _ = early.Rollback(context.Background()) }()
	earlyIDs := b.insertWith(t, early, b.queue, "early")
	late := b.insert(t, b.queue, "late")
	batch(1)
	require.ElementsMatch(t, late, b.queued(t), "the committed row goes; the open transaction's does not")

	// held stays open across many batches.
	held, err := b.db.Begin(t.Context())
	require.NoError(t, err)
	defer func() { _ = held.Rollback(context.Background()) }()
	heldIDs := b.insertWith(t, held, b.queue, "held")
	var flowing []string
	for range 5 {
		flowing = append(flowing, b.insert(t, b.queue, "flowing")...)
		batch(1)
	}
	require.NoError(t, early.Commit(t.Context()))
	batch(1)
	require.ElementsMatch(t, append(append(late, flowing...), earlyIDs...), b.queued(t), "the early transaction's row, once it commits")

	require.NoError(t, held.Commit(t.Context()))
	batch(1)
	batch(0)
	require.ElementsMatch(t, append(append(append(late, flowing...), earlyIDs...), heldIDs...), b.queued(t), "every row once")
}

// TestRelaysSideBySideEnqueueEachRowOnce runs batches of several relays of
// one ledger at once, with no leader: every row is enqueued exactly once,
// whichever relay took its batch.
func TestRelaysSideBySideEnqueueEachRowOnce(t *testing.T) {
	t.Parallel()
	r, b := setup(t, testenv.RedisAddr(), 3)
	relays := []*Relay{r}
	for range 3 {
		relays = append(relays, New(b.queries, b.db, b.redis, r.cfg, nil))
	}
	var sent []string
	for range 20 {
		sent = append(sent, b.insert(t, b.queue, "a", "b", "c", "d", "e")...)
	}
	var wg sync.WaitGroup
	for _, rl := range relays {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				_, err := rl.Batch(context.Background())
				if err != nil && !isBusy(err) {
					t.Errorf("batch: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	for {
		n, err := r.Batch(t.Context())
		require.NoError(t, err)
		if n == 0 {
			break
		}
	}
	require.ElementsMatch(t, sent, b.queued(t), "each row once")
}

// TestAPositionAheadOfTheDatabaseStartsOver sets the position to a snapshot
// the database has not reached, as a restore from a backup leaves it: the
// relay starts over and sends every live row again.
func TestAPositionAheadOfTheDatabaseStartsOver(t *testing.T) {
	t.Parallel()
	r, b := setup(t, testenv.RedisAddr(), 3)
	ids := b.insert(t, b.queue, "a", "b")
	require.NoError(t, r.prepare(t.Context()))
	ahead := store.Position{Covered: "9000000000:9000000000:"}
	require.NoError(t, b.redis.Set(t.Context(), r.keys.position, encodePosition(ahead), 0).Err())

	n, err := r.Batch(t.Context())
	require.NoError(t, err)
	require.Zero(t, n, "no window past such a position finds a row")
	require.NoError(t, r.checkBehind(t.Context()), "the check every second notices and starts over")
	n, err = r.Batch(t.Context())
	require.NoError(t, err)
	require.Equal(t, 2, n)
	require.ElementsMatch(t, ids, b.queued(t))
}

func TestPositionRoundTrips(t *testing.T) {
	t.Parallel()
	for _, p := range []store.Position{
		store.Start,
		{Covered: "100:105:101,103", Upto: "104:110:104", After: store.Ref{XID: 102, ID: [16]byte{1, 2, 3}}},
	} {
		got, err := decodePosition(encodePosition(p))
		require.NoError(t, err)
		require.Equal(t, p, got)
	}
	got, err := decodePosition("")
	require.NoError(t, err)
	require.Equal(t, store.Start, got, "no position: start over")
	for _, bad := range []string{"x", "1:1:|", "1:1:||z|00", "1:1:||1|0g"} {
		_, err := decodePosition(bad)
		require.Error(t, err, bad)
	}
	require.Equal(t, uint64(100), snapshotXmin("100:105:101,103"))
	require.Equal(t, uint64(105), snapshotXmax("100:105:101,103"))
}
