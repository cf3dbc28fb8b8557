package signals_test

import (
	"testing"

	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/store"
)

func TestLedgerEvent(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := nopSignal(t, f, "b", "a")
	id := send(t, f.pool, sig, orderPlaced{OrderID: "o-1"})
	d := f.ledger(t)

	e, err := d.Event(t.Context(), id)
	require.NoError(t, err)
	require.NotNil(t, e)
	require.Equal(t, id, e.ID)
	require.Equal(t, "order.placed", e.Signal)
	require.Equal(t, id, e.CorrelationID, "a first event is its cascade's")
	require.Zero(t, e.CausationID)
	require.JSONEq(t, `{"order_id":"o-1","cents":0}`, string(e.Payload))
	require.Len(t, e.Deliveries, 2)
	require.Equal(t, []string{"a", "b"}, []string{e.Deliveries[0].Receiver, e.Deliveries[1].Receiver})
	for _, dl := range e.Deliveries {
		require.Equal(t, signals.DeliveryPending, dl.State, "no Dispatcher ran")
		require.Equal(t, f.queue, dl.Queue)
	}

	byTask, err := d.Event(t.Context(), e.Deliveries[1].TaskID)
	require.NoError(t, err)
	require.Equal(t, e, byTask, "a task ID finds its event")

	missing, err := d.Event(t.Context(), ulid.Make())
	require.NoError(t, err)
	require.Nil(t, missing)

	rows := f.outbox(t)
	var b store.Row
	for _, r := range rows {
		if r.Receiver == "b" {
			b = r
		}
	}
	_, err = f.queries.Bury(t.Context(), f.pool, []store.Burial{{Ref: b.Ref(), Reason: store.ReasonPermanent, Error: "card declined", Attempts: 1}})
	require.NoError(t, err)
	f.runDispatcher(t, signals.DispatcherConfig{})
	require.Eventually(t, func() bool {
		e, err = d.Event(t.Context(), id)
		require.NoError(t, err)
		return e.Deliveries[0].State == signals.DeliveryInFlight
	}, eventually, tick, "a enqueued, no worker runs it")
	require.Equal(t, signals.DeliveryDead, e.Deliveries[1].State)
	require.Equal(t, signals.ReasonPermanent, e.Deliveries[1].Reason)
	require.Equal(t, "card declined", e.Deliveries[1].Error)
	require.False(t, e.Deliveries[1].DeadAt.IsZero())
}

func TestLedgerCascade(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := nopSignal(t, f, "r")
	root := send(t, f.pool, sig, orderPlaced{OrderID: "o-1"})
	// An event its receiver sent, as a receiver's ctx makes it, and one of
	// another cascade.
	child := store.Event{ID: ulid.Make(), CorrelationID: root, CausationID: (*[16]byte)(&root), Depth: 1, Signal: "invoice.due", Payload: []byte(`{}`)}
	target := []store.Target{{TaskID: ulid.Make(), Receiver: "r", Queue: f.queue, MaxRetry: 1, TimeoutMS: 1000}}
	require.NoError(t, f.queries.Insert(t.Context(), f.pool, child, target))
	other := send(t, f.pool, sig, orderPlaced{OrderID: "o-2"})

	d := f.ledger(t)
	events, err := d.Cascade(t.Context(), root)
	require.NoError(t, err)
	require.Len(t, events, 2)
	require.Equal(t, root, events[0].ID)
	require.Equal(t, ulid.ULID(child.ID), events[1].ID)
	require.Equal(t, root, events[1].CausationID)
	require.Equal(t, 1, events[1].Depth)

	e, err := d.Event(t.Context(), child.ID)
	require.NoError(t, err)
	require.Equal(t, root, e.CausationID)
	require.Equal(t, root, e.CorrelationID)

	events, err = d.Cascade(t.Context(), other)
	require.NoError(t, err)
	require.Len(t, events, 1)
}
