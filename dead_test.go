package signals_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/store"
	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"
)

func TestDeadLettersAreRecordedWithTheirReason(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := signals.Register[orderPlaced](f.reg, "order.placed")
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
	loop := signals.Register[int](f.reg, "loop.again")
	loop.Connect("loops", func(ctx context.Context, e signals.Event[int]) error {
		_, err := commit(ctx, f.pool, loop, e.Payload+1)
		return err
	}, signals.Queue(f.queue), fastRetry)

	// Tasks this worker cannot run: a signal it has not registered, a
	// receiver it has not connected, and a payload of the wrong shape. The
	// sending binary knows them; the worker's registry does not. The
	// unknown ones are retried first, for a newer worker to take.
	sender := newRegistry(t, signals.RegistryConfig{Schema: f.schema})
	unknownSig := signals.Register[string](sender, "never.registered")
	unknownSig.Connect("r", nop[string], signals.Queue(f.queue), signals.MaxRetries(1))
	otherBinary := signals.Register[string](sender, "order.placed")
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

	// The ledger holds them: asynq's archive keeps no copy that would read
	// as trouble in asynqmon or `signals status`, and asynq finished them.
	info, err := f.inspector(t).GetQueueInfo(f.queue)
	require.NoError(t, err)
	require.Zero(t, info.Archived, "no dead delivery left archived in asynq")
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

func TestRequeuedDeadLetterKeepsItsTaskID(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := signals.Register[orderPlaced](f.reg, "order.placed")
	var broken atomic.Bool
	broken.Store(true)
	var mu sync.Mutex
	var seen []ulid.ULID
	var applied atomic.Int64
	sig.Connect("r", func(ctx context.Context, e signals.Event[orderPlaced]) error {
		mu.Lock()
		seen = append(seen, e.TaskID)
		mu.Unlock()
		return pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error {
			first, err := signals.Once(ctx, tx, e)
			if err != nil || !first {
				return err
			}
			applied.Add(1)
			if broken.Load() {
				return signals.Permanent(errors.New("card declined"))
			}
			return nil
		})
	}, signals.Queue(f.queue))
	f.runDispatcher(t, signals.DispatcherConfig{})
	f.runWorker(t)
	send(t, f.pool, sig, orderPlaced{OrderID: "o-1"})

	d := f.ledger(t)
	var dead []signals.DeadLetter
	require.Eventually(t, func() bool {
		var err error
		dead, err = d.DeadLetters(t.Context(), signals.DeadFilter{Receiver: "r"})
		return err == nil && len(dead) == 1
	}, eventually, tick)
	require.Equal(t, signals.ReasonPermanent, dead[0].Reason)

	broken.Store(false)
	n, err := d.RequeueDead(t.Context(), dead[0].TaskID)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == 2
	}, eventually, tick, "a fresh asynq task runs the receiver again")
	require.Eventually(t, func() bool { return f.pending(t) == 0 }, eventually, tick)
	mu.Lock()
	require.Equal(t, seen[0], seen[1], "the receiver sees the same Event.TaskID")
	mu.Unlock()
	require.Equal(t, int64(2), applied.Load(), "Once rolled back with the failed run, so the retry applies")

	n, err = d.DiscardDead(t.Context(), dead[0].TaskID)
	require.NoError(t, err)
	require.Zero(t, n, "requeued, so no longer dead")
}

func TestDeadLettersPageWithACursor(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := nopSignal(t, f, "r")
	sendOrders(t, f, sig, "o", 5)
	rows := f.outbox(t)
	require.Len(t, rows, 5)
	bury := func(reason, msg string, rows ...store.Row) {
		t.Helper()
		burials := make([]store.Burial, len(rows))
		for i, r := range rows {
			burials[i] = store.Burial{Ref: r.Ref(), Reason: reason, Error: msg, Attempts: 1}
		}
		n, err := f.queries.Bury(t.Context(), f.pool, burials)
		require.NoError(t, err)
		require.Equal(t, int64(len(rows)), n)
	}
	// Two letters die in one statement, so at the same time: the cursor
	// tells them apart by task ID.
	bury(store.ReasonPermanent, "card declined", rows[0], rows[1])
	bury(store.ReasonPermanent, "card declined", rows[2])
	bury(store.ReasonRetriesExhausted, "timeout", rows[3], rows[4])
	d := f.ledger(t)

	all, err := d.DeadLetters(t.Context(), signals.DeadFilter{})
	require.NoError(t, err)
	require.Len(t, all, 5)
	var paged []signals.DeadLetter
	var after string
	for pages := 1; ; pages++ {
		require.LessOrEqual(t, pages, 3)
		page, err := d.DeadLetters(t.Context(), signals.DeadFilter{After: after, Limit: 2})
		require.NoError(t, err)
		paged = append(paged, page...)
		if len(page) < 2 {
			break
		}
		after = page[len(page)-1].Cursor()
	}
	require.Equal(t, all, paged, "the pages hold every letter once, in the list's order")

	t.Run("filters", func(t *testing.T) {
		for _, c := range []struct {
			f      signals.DeadFilter
			listed int
		}{
			{signals.DeadFilter{}, 5},
			{signals.DeadFilter{Limit: 1}, 1},
			{signals.DeadFilter{Reason: signals.ReasonPermanent}, 3},
			{signals.DeadFilter{Reason: signals.ReasonRetriesExhausted, ErrorContains: "TIME"}, 2},
			{signals.DeadFilter{Reason: signals.ReasonUndecodable}, 0},
			{signals.DeadFilter{After: all[2].Cursor()}, 2},
		} {
			letters, err := d.DeadLetters(t.Context(), c.f)
			require.NoError(t, err)
			require.Len(t, letters, c.listed, "%+v", c.f)
		}
	})

	t.Run("an opaque token", func(t *testing.T) {
		next, err := d.DeadLetters(t.Context(), signals.DeadFilter{After: all[1].Cursor(), Limit: 1})
		require.NoError(t, err)
		require.Equal(t, all[2].TaskID, next[0].TaskID)
		require.NotContains(t, all[1].Cursor(), "/", "fits in a URL as it is")
		for _, bad := range []string{"12", "x.01HZZZZZZZZZZZZZZZZZZZZZZZ", "12.notanid"} {
			_, err := d.DeadLetters(t.Context(), signals.DeadFilter{After: bad})
			require.ErrorIs(t, err, signals.ErrInvalidConfig, bad)
		}
	})

	t.Run("the cursor holds while the letters before it go", func(t *testing.T) {
		want, err := d.DeadLetters(t.Context(), signals.DeadFilter{After: all[1].Cursor(), Limit: 2})
		require.NoError(t, err)
		n, err := d.DiscardDead(t.Context(), all[0].TaskID, all[1].TaskID)
		require.NoError(t, err)
		require.Equal(t, 2, n)
		got, err := d.DeadLetters(t.Context(), signals.DeadFilter{After: all[1].Cursor(), Limit: 2})
		require.NoError(t, err)
		require.Equal(t, want, got)
	})
}
