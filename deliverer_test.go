package signals_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/kithook"
	"github.com/dj-signals/signals/internal/relay"
	"github.com/dj-signals/signals/internal/store"
)

func TestCommittedEventRunsEveryReceiverRolledBackNone(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := signals.Register[orderPlaced](f.reg, "order.placed")

	runs := newCounter()
	var mu sync.Mutex
	var got []signals.Event[orderPlaced]
	record := func(ctx context.Context, e signals.Event[orderPlaced]) error {
		mu.Lock()
		got = append(got, e)
		mu.Unlock()
		runs.add(e.Receiver + "/" + e.Payload.OrderID)
		return nil
	}
	sig.Connect("email-receipt", record, signals.Queue(f.queue))
	sig.Connect("analytics", record, signals.Queue(f.queue))
	f.runDispatcher(t, signals.DispatcherConfig{})
	f.runWorker(t)

	// Rolled back first: had it leaked, it would run before the committed one.
	tx := f.begin(t)
	_, err := sig.SendReliable(t.Context(), tx, orderPlaced{OrderID: "rolled-back"})
	require.NoError(t, err)
	require.NoError(t, tx.Rollback(t.Context()))

	before := time.Now()
	eventID := send(t, f.pool, sig, orderPlaced{OrderID: "committed", Cents: 42})

	require.Eventually(t, func() bool {
		return runs.get("email-receipt/committed") == 1 && runs.get("analytics/committed") == 1
	}, eventually, tick)
	require.Eventually(t, func() bool { return f.pending(t) == 0 }, eventually, tick, "acked, in a batch, within milliseconds")
	// The committed event went through relay and queue after the rolled-back
	// one would have; an empty outbox and empty queue mean nothing is left.
	ins := f.inspector(t)
	require.Eventually(t, func() bool { return f.queueDrained(ins) }, eventually, tick)
	require.Equal(t, map[string]int{"email-receipt/committed": 1, "analytics/committed": 1}, runs.snapshot())

	mu.Lock()
	defer mu.Unlock()
	taskIDs := map[ulid.ULID]bool{}
	for _, e := range got {
		require.Equal(t, eventID, e.ID)
		require.Equal(t, "order.placed", e.Signal)
		require.Equal(t, 42, e.Payload.Cents)
		require.Equal(t, 1, e.Attempt)
		require.Equal(t, eventID, e.CorrelationID)
		require.Zero(t, e.CausationID)
		require.Zero(t, e.Depth)
		require.WithinDuration(t, before, e.SentAt, 5*time.Second)
		taskIDs[e.TaskID] = true
	}
	require.Len(t, taskIDs, 2, "each receiver has its own task ID")
}

func TestFailingReceiverIsRetriedAloneItsSiblingRunsOnce(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := signals.Register[orderPlaced](f.reg, "order.placed")

	runs := newCounter()
	var attempts []int
	var mu sync.Mutex
	sig.Connect("flaky", func(ctx context.Context, e signals.Event[orderPlaced]) error {
		mu.Lock()
		attempts = append(attempts, e.Attempt)
		mu.Unlock()
		if runs.add("flaky") <= 2 {
			return errors.New("smtp: try again later")
		}
		return nil
	}, signals.Queue(f.queue), fastRetry)
	sig.Connect("steady", func(ctx context.Context, e signals.Event[orderPlaced]) error {
		runs.add("steady")
		return nil
	}, signals.Queue(f.queue), fastRetry)
	f.runDispatcher(t, signals.DispatcherConfig{})
	f.runWorker(t)

	send(t, f.pool, sig, orderPlaced{OrderID: "o-1"})

	require.Eventually(t, func() bool { return runs.get("flaky") == 3 }, eventually, tick)
	ins := f.inspector(t)
	require.Eventually(t, func() bool {
		info, err := ins.GetQueueInfo(f.queue)
		return err == nil && info.Completed == 2
	}, eventually, tick, "both tasks complete")
	require.Equal(t, 1, runs.get("steady"), "the sibling ran exactly once")
	require.Equal(t, 3, runs.get("flaky"))
	mu.Lock()
	require.Equal(t, []int{1, 2, 3}, attempts, "Attempt counts up per retry")
	mu.Unlock()
}

// A task that another schema's Dispatcher enqueued (two processes set the
// same queue by hand) is not run by this registry's receiver, and nothing
// is recorded in this registry's outbox.
func TestAWorkerNeverRunsAnotherSchemasTask(t *testing.T) {
	t.Parallel()
	f := setup(t)
	var runs atomic.Int64
	signals.Register[orderPlaced](f.reg, "tenant.event").Connect("recv", func(context.Context, signals.Event[orderPlaced]) error {
		runs.Add(1)
		return nil
	}, signals.Queue(f.queue))

	id := ulid.Make()
	row := store.Row{ID: id, EventID: id, CorrelationID: id, Signal: "tenant.event", Receiver: "recv", Queue: f.queue,
		MaxRetry: 3, TimeoutMS: time.Second.Milliseconds(), Payload: []byte(`{"order_id":"other-tenant"}`)}
	task, _, err := relay.Task(row, "tenant_other", time.Minute)
	require.NoError(t, err)
	deliver := func(task *asynq.Task) error {
		_, err := kithook.Deliver(t.Context(), f.reg, task, id.String(), f.queue, 1, 3)
		return err
	}
	err = deliver(task)
	require.ErrorContains(t, err, `schema "tenant_other"`)
	require.ErrorContains(t, err, "queues of its own")
	require.Zero(t, runs.Load(), "the receiver never saw the other schema's payload")

	task, _, err = relay.Task(row, f.schema, time.Minute)
	require.NoError(t, err)
	require.NoError(t, deliver(task))
	require.EqualValues(t, 1, runs.Load(), "its own schema's task runs")
}
