package signals_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
)

func TestStatsShowsTheLedgerAndTheQueues(t *testing.T) {
	t.Parallel()
	f := setup(t)
	d := f.ledger(t)

	st, err := d.Stats(t.Context())
	require.NoError(t, err)
	require.Empty(t, st.Receivers, "an empty ledger")

	sig := signals.Register[orderPlaced](f.reg, "order.placed")
	sig.Connect("email", nop[orderPlaced], signals.Queue(f.queue))
	sig.Connect("refuse", func(context.Context, signals.Event[orderPlaced]) error {
		return signals.Permanent(errors.New("no"))
	}, signals.Queue(f.queue))
	st, err = d.Stats(t.Context())
	require.NoError(t, err)
	require.Equal(t, []signals.ReceiverStats{
		{Signal: "order.placed", Receiver: "email"}, {Signal: "order.placed", Receiver: "refuse"},
	}, st.Receivers, "a connected receiver with nothing to do reads zero rather than missing")
	sendOrders(t, f, sig, "o", 3)
	far := time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	send(t, f.pool, sig, orderPlaced{OrderID: "later"}, signals.At(far))

	// Nothing relayed yet: everything is pending, no worker serves the queue.
	st, err = d.Stats(t.Context())
	require.NoError(t, err)
	require.Len(t, st.Receivers, 2)
	email := st.Receivers[0]
	require.Equal(t, "email", email.Receiver)
	require.Equal(t, 4, email.Pending)
	require.Positive(t, email.OldestPending)
	require.True(t, email.LatestDue.Equal(far), "a row due in the year 9999 shows: %v", email.LatestDue)
	require.Len(t, st.Queues, 1)
	require.Equal(t, signals.QueueStats{Queue: f.queue}, st.Queues[0], "no task yet, and no worker serves it")

	// Relayed, then run: the failing receiver's rows are dead, the other's
	// done except the one due in 9999, in flight for ever.
	f.runDispatcher(t, signals.DispatcherConfig{})
	f.runWorker(t)
	require.Eventually(t, func() bool {
		st, err = d.Stats(t.Context())
		require.NoError(t, err)
		return len(st.Receivers) == 2 && st.Receivers[0].InFlight == 1 && st.Receivers[0].Pending == 0 &&
			st.Receivers[1].Dead == 3 && st.Receivers[1].InFlight == 1
	}, eventually, tick, "stats: %+v", st.Receivers)
	require.Positive(t, st.Receivers[0].OldestInFlight)
	require.Equal(t, 2, st.Queues[0].Scheduled)
	require.True(t, st.Queues[0].Served, "a worker serves the queue")
}

func TestStatsCountsTasksNoWorkerKnows(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := signals.Register[orderPlaced](f.reg, "order.placed")
	sig.Connect("new", nop[orderPlaced], signals.Queue(f.queue), signals.MaxRetries(20))
	old := newRegistry(t, signals.RegistryConfig{Schema: f.schema})
	signals.Register[orderPlaced](old, "order.placed").Connect("other", nop[orderPlaced], signals.Queue(f.queue))
	f.runDispatcher(t, signals.DispatcherConfig{})
	w, err := signals.NewWorker(old, f.pool, f.redis, signals.WorkerConfig{Queues: map[string]int{f.queue: 1}, Logger: quietLogger()})
	require.NoError(t, err)
	run(t, w.Run)
	send(t, f.pool, sig, orderPlaced{OrderID: "o-1"})

	d := f.ledger(t)
	require.Eventually(t, func() bool {
		st, err := d.Stats(t.Context())
		require.NoError(t, err)
		return len(st.Queues) == 1 && st.Queues[0].UnknownReceiver == 1
	}, eventually, tick)
}

// TestStatsCountsHeldKeys sends events over three ordering keys, two of
// them with more than one event: with no Dispatcher running, each of those
// two keys holds its later events behind its first.
func TestStatsCountsHeldKeys(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := signals.Register[orderPlaced](f.reg, "order.placed")
	sig.Connect("sync", nop[orderPlaced], signals.Queue(f.queue),
		signals.OrderBy(func(o orderPlaced) string { return o.OrderID }))
	sig.Connect("email", nop[orderPlaced], signals.Queue(f.queue))
	for _, key := range []string{"a", "a", "a", "b", "c", "c"} {
		send(t, f.pool, sig, orderPlaced{OrderID: key})
	}

	st, err := f.ledger(t).Stats(t.Context())
	require.NoError(t, err)
	require.Len(t, st.Receivers, 2)
	require.Equal(t, "email", st.Receivers[0].Receiver)
	require.Zero(t, st.Receivers[0].HeldKeys, "a receiver without OrderBy holds no key")
	require.Equal(t, "sync", st.Receivers[1].Receiver)
	require.Equal(t, 6, st.Receivers[1].Pending)
	require.Equal(t, 2, st.Receivers[1].HeldKeys, "keys a and c hold events back; b has one")
}
