package signals_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/testenv"
)

// heldFor is how long TestEventsCommittedOutOfOrderAreAllDelivered holds a
// transaction open while others flow.
const heldFor = 30 * time.Second

// deliveries records when each order's receiver first ran.
type deliveries struct {
	mu  sync.Mutex
	ran map[string]time.Time
}

func (d *deliveries) add(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.ran[id]; !ok {
		d.ran[id] = time.Now()
	}
}

func (d *deliveries) at(id string) (time.Time, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	at, ok := d.ran[id]
	return at, ok
}

// TestEventsCommittedOutOfOrderAreAllDelivered commits transactions in
// another order than their events' IDs and their transaction IDs, and holds
// one open for 30 s while a stream of others flows through a Dispatcher and
// a Worker: the stream is delivered as it commits, and every late
// transaction's event as soon as it commits.
func TestEventsCommittedOutOfOrderAreAllDelivered(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := register[orderPlaced](t, f.reg, "order.placed")
	runs := &deliveries{ran: map[string]time.Time{}}
	sig.Connect("r", func(_ context.Context, e signals.Event[orderPlaced]) error {
		runs.add(e.Payload.OrderID)
		return nil
	}, signals.Queue(f.queue))
	f.runDispatcher(t, signals.DispatcherConfig{})
	f.runWorker(t)
	delivered := func(id string) bool { _, ok := runs.at(id); return ok }

	// held sends first, so its event has the lowest ID and its transaction
	// the lowest ID of the test's, and commits last.
	held := f.begin(t)
	_, err := sig.SendReliable(t.Context(), held, orderPlaced{OrderID: "held"})
	require.NoError(t, err)
	heldAt := time.Now()

	// early takes a transaction ID before late does but sends after it:
	// its event's ID is later, its transaction ID earlier, and it commits
	// after late.
	early := f.begin(t)
	require.NoError(t, early.QueryRow(t.Context(), `SELECT pg_current_xact_id()`).Scan(new(uint64)))
	late := f.begin(t)
	_, err = sig.SendReliable(t.Context(), late, orderPlaced{OrderID: "late"})
	require.NoError(t, err)
	_, err = sig.SendReliable(t.Context(), early, orderPlaced{OrderID: "early"})
	require.NoError(t, err)
	require.NoError(t, late.Commit(t.Context()))
	testenv.Eventually(t, eventually, func() bool { return delivered("late") }, "the transaction that committed first")
	require.NoError(t, early.Commit(t.Context()))
	testenv.Eventually(t, eventually, func() bool { return delivered("early") }, "the transaction that committed second, with the earlier transaction ID")

	// A stream flows while held stays open.
	var worst time.Duration
	pace := time.NewTicker(50 * time.Millisecond)
	defer pace.Stop()
	for i := 0; time.Since(heldAt) < heldFor; i++ {
		<-pace.C
		id := "stream-" + strconv.Itoa(i)
		sentAt := time.Now()
		send(t, f.pool, sig, orderPlaced{OrderID: id})
		if i%20 == 0 { // every second, wait for one: the stream is delivered as it commits
			testenv.Eventually(t, eventually, func() bool { return delivered(id) }, "%s while a transaction is held open", id)
			at, _ := runs.at(id)
			worst = max(worst, at.Sub(sentAt))
		}
	}
	require.False(t, delivered("held"), "an open transaction's event is not delivered")
	committed := time.Now()
	require.NoError(t, held.Commit(t.Context()))
	testenv.Eventually(t, eventually, func() bool { return delivered("held") }, "the held transaction's event, once it commits")
	at, _ := runs.at("held")
	require.Eventually(t, func() bool { return f.pending(t) == 0 }, eventually, tick, "every row done")
	t.Logf("while a transaction was held open %v, the slowest sampled delivery took %v; the held event ran %v after its commit",
		heldFor, worst.Round(time.Millisecond), at.Sub(committed).Round(time.Millisecond))
}

// TestDispatcherRunReturnsNilOnShutdown requires Run to return nil when its
// ctx ends, so it drops into an errgroup, and to be callable again.
func TestDispatcherRunReturnsNilOnShutdown(t *testing.T) {
	t.Parallel()
	f := setup(t)
	nopSignal(t, f, "r")
	d := f.dispatcher(t, signals.DispatcherConfig{})
	for range 2 {
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx) }()
		cancel()
		require.NoError(t, <-done)
	}
	_, err := signals.NewDispatcher(nil, f.pool, f.redis, signals.DispatcherConfig{})
	require.ErrorIs(t, err, signals.ErrInvalidConfig)
}
