package signals_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/store"
)

func TestCommittedEventRunsEveryReceiverRolledBackNone(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := register[orderPlaced](t, f.reg, "order.placed")

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
	sig := register[orderPlaced](t, f.reg, "order.placed")

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

func TestTwoDispatchersEnqueueEachRowOnce(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := register[orderPlaced](t, f.reg, "order.placed")
	runs := newCounter()
	sig.Connect("r", func(ctx context.Context, e signals.Event[orderPlaced]) error {
		runs.add(e.TaskID.String())
		return nil
	}, signals.Queue(f.queue))

	const events = 400
	sendOrders(t, f, sig, "o", events)
	// Small batches and two relays racing over the same backlog.
	f.runDispatcher(t, signals.DispatcherConfig{BatchSize: 7})
	f.runDispatcher(t, signals.DispatcherConfig{BatchSize: 11})

	require.Eventually(t, func() bool { return f.notEnqueued(t) == 0 }, eventually, tick)
	info, err := f.inspector(t).GetQueueInfo(f.queue)
	require.NoError(t, err)
	require.Equal(t, events, info.Size, "each row became exactly one task")

	f.runWorker(t)
	require.Eventually(t, func() bool { return len(runs.snapshot()) == events }, eventually, tick)
	for id, n := range runs.snapshot() {
		require.Equal(t, 1, n, "task %s", id)
	}
}

func TestDeadLettersAreRecordedWithTheirReason(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := register[orderPlaced](t, f.reg, "order.placed")
	sig.Connect("exhausted", func(context.Context, signals.Event[orderPlaced]) error {
		return errors.New("webhook answered 503")
	}, signals.Queue(f.queue), signals.MaxRetries(1), fastRetry)
	sig.Connect("permanent", func(context.Context, signals.Event[orderPlaced]) error {
		return signals.Permanent(errors.New("customer has no email address"))
	}, signals.Queue(f.queue))
	sig.Connect("panics", func(context.Context, signals.Event[orderPlaced]) error {
		panic("nil map write")
	}, signals.Queue(f.queue), signals.MaxRetries(0))
	sig.Connect("slow", func(ctx context.Context, _ signals.Event[orderPlaced]) error {
		<-ctx.Done()
		return ctx.Err()
	}, signals.Queue(f.queue), signals.MaxRetries(0), signals.Timeout(50*time.Millisecond))

	// A receiver re-sending its own signal with its ctx: past MaxDepth the
	// send is refused, and since the depth travels with the task no retry
	// can help.
	loop := register[int](t, f.reg, "loop.again")
	loop.Connect("loops", func(ctx context.Context, e signals.Event[int]) error {
		_, err := commit(ctx, f.pool, loop, e.Payload+1)
		return err
	}, signals.Queue(f.queue), fastRetry)

	// Tasks this worker cannot run: a signal it has not registered, a
	// receiver it has not connected, and a payload of the wrong shape. The
	// sending binary knows them; the worker's registry does not. The
	// unknown ones are retried first, for a newer worker to take.
	sender := signals.MustNewRegistry(signals.RegistryConfig{Schema: f.schema})
	unknownSig := register[string](t, sender, "never.registered")
	unknownSig.Connect("r", nop[string], signals.Queue(f.queue), signals.MaxRetries(1))
	otherBinary := register[string](t, sender, "order.placed")
	otherBinary.Connect("only-in-sender", nop[string], signals.Queue(f.queue), signals.MaxRetries(1))
	otherBinary.Connect("exhausted", nop[string], signals.Queue(f.queue), signals.MaxRetries(0))

	f.runDispatcher(t, signals.DispatcherConfig{})
	f.runWorker(t)
	send(t, f.pool, sig, orderPlaced{OrderID: "o-1"})
	send(t, f.pool, unknownSig, "x")
	send(t, f.pool, loop, 0)
	send(t, f.pool, otherBinary, "a string where an object belongs")

	type want struct {
		reason   signals.DeadReason
		error    string
		attempts int
	}
	wants := map[string]want{
		"order.placed:exhausted":      {signals.ReasonRetriesExhausted, "webhook answered 503", 2},
		"order.placed:permanent":      {signals.ReasonPermanent, "customer has no email address", 1},
		"order.placed:panics":         {signals.ReasonRetriesExhausted, "receiver panicked: nil map write", 1},
		"order.placed:slow":           {signals.ReasonRetriesExhausted, "context deadline exceeded", 1},
		"loop.again:loops":            {signals.ReasonCascadeTooDeep, "cascade too deep", 1},
		"never.registered:r":          {signals.ReasonUnknownReceiver, `no signal "never.registered" is registered in this worker`, 2},
		"order.placed:only-in-sender": {signals.ReasonUnknownReceiver, `has no receiver "only-in-sender"`, 2},
	}
	d := f.ledger(t)
	var dead []signals.DeadLetter
	require.Eventually(t, func() bool {
		var err error
		dead, err = d.DeadLetters(t.Context(), signals.DeadFilter{})
		return err == nil && len(dead) == len(wants)+1
	}, eventually, tick)
	undecodable := 0
	for _, l := range dead {
		if l.Reason == signals.ReasonUndecodable {
			require.Equal(t, "order.placed:exhausted", l.Signal+":"+l.Receiver)
			require.Contains(t, l.Error, "cannot be decoded")
			require.JSONEq(t, `"a string where an object belongs"`, string(l.Payload))
			undecodable++
			continue
		}
		w, ok := wants[l.Signal+":"+l.Receiver]
		require.True(t, ok, "unexpected dead letter %s:%s", l.Signal, l.Receiver)
		require.Equal(t, w.reason, l.Reason, l.Receiver)
		require.Contains(t, l.Error, w.error, l.Receiver)
		require.Equal(t, w.attempts, l.Attempts, l.Receiver)
		require.False(t, l.DeadAt.Before(l.SentAt), l.Receiver)
		require.False(t, l.EnqueuedAt.IsZero(), l.Receiver)
	}
	require.Equal(t, 1, undecodable)

	// asynq archives them too, whatever its archive later trims.
	insp := f.inspector(t)
	var archived []*asynq.TaskInfo
	require.Eventually(t, func() bool {
		var err error
		archived, err = insp.ListArchivedTasks(f.queue)
		return err == nil && len(archived) == len(wants)+1
	}, eventually, tick)
	require.Eventually(t, func() bool { return f.pending(t) == 0 }, eventually, tick)
}

func TestRowsThatCannotBeEnqueuedAreDeadAndRequeued(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig, runs := countedSignal(t, f)

	// A row no relay can enqueue, as another binary or a hand-written
	// INSERT could leave it.
	broken := store.Event{ID: ulid.Make(), Signal: sig.Name(), Payload: []byte(`{"order_id":"broken","cents":0}`)}
	broken.CorrelationID = broken.ID
	require.NoError(t, f.queries.Insert(t.Context(), f.pool, broken, []store.Target{{
		TaskID: ulid.Make(), Receiver: "r", Queue: "has spaces",
		MaxRetry: signals.DefaultReceiverMaxRetries, TimeoutMS: signals.DefaultReceiverTimeout.Milliseconds(),
	}}))
	send(t, f.pool, sig, orderPlaced{OrderID: "fine"})

	run(t, f.dispatcher(t, signals.DispatcherConfig{}).Run)
	d := f.ledger(t)
	f.runWorker(t)

	require.Eventually(t, func() bool { return runs.get("fine") == 1 }, eventually, tick, "a bad row blocks no other row")
	var dead []signals.DeadLetter
	require.Eventually(t, func() bool {
		var err error
		dead, err = d.DeadLetters(t.Context(), signals.DeadFilter{})
		return err == nil && len(dead) == 1
	}, eventually, tick)
	require.Eventually(t, func() bool { return f.pending(t) == 0 }, eventually, tick, "the good row is acked")
	require.Equal(t, "has spaces", dead[0].Queue)
	require.Equal(t, "r", dead[0].Receiver)
	require.Equal(t, signals.ReasonUnenqueueable, dead[0].Reason)
	require.Contains(t, dead[0].Error, `queue "has spaces"`)
	require.JSONEq(t, `{"order_id":"broken","cents":0}`, string(dead[0].Payload))

	// The operator fixes the cause, then requeues.
	fixed, err := f.queries.RetargetDead(t.Context(), f.pool, [][16]byte{dead[0].TaskID}, f.queue)
	require.NoError(t, err)
	require.Equal(t, int64(1), fixed)
	n, err := d.RequeueDead(t.Context(), dead[0].TaskID)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Eventually(t, func() bool { return runs.get("broken") == 1 }, eventually, tick)
	dead, err = d.DeadLetters(t.Context(), signals.DeadFilter{})
	require.NoError(t, err)
	require.Empty(t, dead)
}

func TestDispatcherAndWorkerStopCleanlyOnCancel(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := nopSignal(t, f, "r")
	sendOrders(t, f, sig, "o", 50)
	stopDispatcher := start(t, f.dispatcher(t, signals.DispatcherConfig{BatchSize: 5}).Run)
	require.Eventually(t, func() bool { return f.notEnqueued(t) < 50 }, eventually, tick)
	stopDispatcher(10 * time.Second)
	// Whatever was claimed was either committed (recorded and queued) or
	// rolled back (still pending): rows plus tasks account for every event.
	info, err := f.inspector(t).GetQueueInfo(f.queue)
	require.NoError(t, err)
	require.Equal(t, 50, f.notEnqueued(t)+info.Size)

	w, err := signals.NewWorker(f.reg, f.pool, f.redis, signals.WorkerConfig{Queues: map[string]int{f.queue: 1}, Logger: quietLogger()})
	require.NoError(t, err)
	start(t, w.Run)(15 * time.Second)
}

func TestWorkerWithoutReceiversSaysWhy(t *testing.T) {
	t.Parallel()
	f := setup(t)
	w, err := signals.NewWorker(f.reg, f.pool, f.redis, signals.WorkerConfig{})
	require.NoError(t, err)
	require.ErrorIs(t, w.Run(t.Context()), signals.ErrNoReceivers)
}

func TestConstructorsRejectBadConfig(t *testing.T) {
	t.Parallel()
	f := setup(t)
	for _, cfg := range []signals.DispatcherConfig{
		{BatchSize: -1},
		{Retention: 500 * time.Millisecond},
		{BackoffMin: time.Second, BackoffMax: time.Millisecond},
	} {
		_, err := signals.NewDispatcher(f.reg, f.pool, f.redis, cfg)
		require.Error(t, err, "%+v", cfg)
	}
	_, err := signals.NewDispatcher(f.reg, nil, f.redis, signals.DispatcherConfig{})
	require.ErrorIs(t, err, signals.ErrInvalidConfig)
	_, err = signals.NewWorker(f.reg, f.pool, f.redis, signals.WorkerConfig{Queues: map[string]int{"q": 0}})
	require.ErrorIs(t, err, signals.ErrInvalidConfig)
	_, err = signals.NewWorker(f.reg, f.pool, nil, signals.WorkerConfig{})
	require.ErrorIs(t, err, signals.ErrInvalidConfig)
	_, err = signals.NewDispatcher(nil, f.pool, f.redis, signals.DispatcherConfig{})
	require.ErrorIs(t, err, signals.ErrInvalidConfig)
	_, err = signals.NewWorker(nil, f.pool, f.redis, signals.WorkerConfig{})
	require.ErrorIs(t, err, signals.ErrInvalidConfig)
	_, err = signals.NewRegistry(signals.RegistryConfig{Schema: "No"})
	require.ErrorIs(t, err, signals.ErrInvalidSchema)
}

func TestLocalSendWakesTheRelayBeforeItsPoll(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig, runs := countedSignal(t, f)
	// An hour between polls: only the sender's in-process hint can explain
	// a prompt delivery.
	f.runDispatcher(t, signals.DispatcherConfig{PollInterval: time.Hour})
	f.runWorker(t)
	// The relay's first look happens at start; wait until it is idle.
	require.Eventually(t, func() bool { return f.pending(t) == 0 }, eventually, tick)

	for i := range 3 {
		send(t, f.pool, sig, orderPlaced{OrderID: fmt.Sprint(i)})
		require.Eventually(t, func() bool { return runs.get(fmt.Sprint(i)) == 1 }, 10*time.Second, tick)
	}
}

func TestDelayedSignalRunsNoEarlierThanAsked(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := register[orderPlaced](t, f.reg, "order.placed")
	var mu sync.Mutex
	ranAt := map[string]time.Time{}
	sig.Connect("r", func(_ context.Context, e signals.Event[orderPlaced]) error {
		mu.Lock()
		ranAt[e.Payload.OrderID] = time.Now()
		mu.Unlock()
		return nil
	}, signals.Queue(f.queue))
	f.runDispatcher(t, signals.DispatcherConfig{})
	f.runWorker(t)

	sentAt := time.Now()
	send(t, f.pool, sig, orderPlaced{OrderID: "delayed"}, signals.Delay(1500*time.Millisecond))
	send(t, f.pool, sig, orderPlaced{OrderID: "at"}, signals.At(sentAt.Add(time.Second)))
	send(t, f.pool, sig, orderPlaced{OrderID: "now"})

	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(ranAt) == 3
	}, eventually, tick)
	mu.Lock()
	defer mu.Unlock()
	require.GreaterOrEqual(t, ranAt["delayed"].Sub(sentAt), 1500*time.Millisecond)
	require.GreaterOrEqual(t, ranAt["at"].Sub(sentAt), time.Second)
	require.Less(t, ranAt["now"].Sub(sentAt), time.Second, "an undelayed sibling is not held back")
}
