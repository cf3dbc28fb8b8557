package ledgerview_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/ledgerview"
	"github.com/dj-signals/signals/internal/store"
	"github.com/dj-signals/signals/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testBundle is one test's ledger: a registry on a migrated schema of the
// test's own, an asynq queue of the test's own, and the view under test.
type testBundle struct {
	pool    *pgxpool.Pool
	reg     *signals.Registry
	queries *store.Queries
	kit     *store.KitQueries
	queue   string
	redis   asynq.RedisClientOpt
	view    *ledgerview.View
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	schema := testenv.Schema(t)
	b := &testBundle{pool: testenv.Pool(t), queue: testenv.Queue(t), redis: asynq.RedisClientOpt{Addr: testenv.RedisAddr()}}
	var err error
	b.reg, err = signals.NewRegistry(signals.RegistryConfig{Schema: schema})
	require.NoError(t, err)
	require.NoError(t, b.reg.Migrate(t.Context(), b.pool))
	b.queries, err = store.New(schema)
	require.NoError(t, err)
	b.kit, err = store.NewKitQueries(schema)
	require.NoError(t, err)
	ledger, err := signals.NewLedger(b.reg, b.pool, b.redis)
	require.NoError(t, err)
	b.view = ledgerview.New(ledger)
	return b
}

// order is the payload the tests send.
type order struct {
	ID string `json:"id"`
}

// orderPlaced registers "order.placed" with receivers that do nothing, on
// the bundle's queue.
func (b *testBundle) orderPlaced(receivers ...string) *signals.Signal[order] {
	sig := signals.Register[order](b.reg, "order.placed")
	for _, name := range receivers {
		sig.Connect(name, func(context.Context, signals.Event[order]) error { return nil }, signals.Queue(b.queue))
	}
	return sig
}

// send commits one event of sig and returns its ID.
func (b *testBundle) send(t *testing.T, sig *signals.Signal[order], o order) ulid.ULID {
	t.Helper()
	var id ulid.ULID
	require.NoError(t, pgx.BeginFunc(t.Context(), b.pool, func(tx pgx.Tx) (err error) {
		id, err = sig.SendReliable(t.Context(), tx, o)
		return err
	}))
	return id
}

func TestEvent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sig := b.orderPlaced("b", "a")
	id := b.send(t, sig, order{ID: "o-1"})

	e, err := b.view.Event(t.Context(), id)
	require.NoError(t, err)
	require.NotNil(t, e)
	require.Equal(t, id, e.ID)
	require.Equal(t, "order.placed", e.Signal)
	require.Equal(t, id, e.CorrelationID, "a first event is its cascade's")
	require.Zero(t, e.CausationID)
	require.JSONEq(t, `{"id":"o-1"}`, string(e.Payload))
	require.Len(t, e.Deliveries, 2)
	require.Equal(t, []string{"a", "b"}, []string{e.Deliveries[0].Receiver, e.Deliveries[1].Receiver})
	for _, dl := range e.Deliveries {
		require.Equal(t, ledgerview.Pending, dl.State, "no Dispatcher ran")
		require.Equal(t, b.queue, dl.Queue)
	}

	byTask, err := b.view.Event(t.Context(), e.Deliveries[1].TaskID)
	require.NoError(t, err)
	require.Equal(t, e, byTask, "a task ID finds its event")

	missing, err := b.view.Event(t.Context(), ulid.Make())
	require.NoError(t, err)
	require.Nil(t, missing)

	rows, err := b.kit.Live(t.Context(), b.pool)
	require.NoError(t, err)
	for _, r := range rows {
		if r.Receiver == "b" {
			_, err := b.queries.Bury(t.Context(), b.pool, []store.Burial{{Ref: r.Ref(), Reason: store.ReasonPermanent, Error: "card declined", Attempts: 1}})
			require.NoError(t, err)
		}
	}
	d, err := signals.NewDispatcher(b.reg, b.pool, b.redis, signals.DispatcherConfig{PollInterval: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	testenv.Run(t, d.Run)
	testenv.Eventually(t, 10*time.Second, func() bool {
		e, err = b.view.Event(t.Context(), id)
		require.NoError(t, err)
		return e.Deliveries[0].State == ledgerview.InFlight
	}, "a enqueued, no worker runs it")
	require.Equal(t, ledgerview.Dead, e.Deliveries[1].State)
	require.Equal(t, signals.ReasonPermanent, e.Deliveries[1].Reason)
	require.Equal(t, "card declined", e.Deliveries[1].Error)
	require.False(t, e.Deliveries[1].DeadAt.IsZero())
}

func TestCascade(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sig := b.orderPlaced("r")
	root := b.send(t, sig, order{ID: "o-1"})
	// An event its receiver sent, as a receiver's ctx makes it, and one of
	// another cascade.
	child := store.Event{ID: ulid.Make(), CorrelationID: root, CausationID: (*[16]byte)(&root), Depth: 1, Signal: "invoice.due", Payload: []byte(`{}`)}
	target := []store.Target{{TaskID: ulid.Make(), Receiver: "r", Queue: b.queue, MaxRetry: 1, TimeoutMS: 1000}}
	require.NoError(t, b.queries.Insert(t.Context(), b.pool, child, target))
	other := b.send(t, sig, order{ID: "o-2"})

	events, err := b.view.Cascade(t.Context(), root)
	require.NoError(t, err)
	require.Len(t, events, 2)
	require.Equal(t, root, events[0].ID)
	require.Equal(t, ulid.ULID(child.ID), events[1].ID)
	require.Equal(t, root, events[1].CausationID)
	require.Equal(t, 1, events[1].Depth)

	e, err := b.view.Event(t.Context(), child.ID)
	require.NoError(t, err)
	require.Equal(t, root, e.CausationID)
	require.Equal(t, root, e.CorrelationID)

	events, err = b.view.Cascade(t.Context(), other)
	require.NoError(t, err)
	require.Len(t, events, 1)
}

func TestCountDead(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sig := b.orderPlaced("r")
	for _, id := range []string{"o-0", "o-1", "o-2", "o-3", "o-4"} {
		b.send(t, sig, order{ID: id})
	}
	rows, err := b.kit.Live(t.Context(), b.pool)
	require.NoError(t, err)
	burials := make([]store.Burial, len(rows))
	for i, r := range rows {
		burials[i] = store.Burial{Ref: r.Ref(), Reason: store.ReasonPermanent, Error: "card declined", Attempts: 1}
		if i >= 3 {
			burials[i].Reason = store.ReasonRetriesExhausted
		}
	}
	_, err = b.queries.Bury(t.Context(), b.pool, burials)
	require.NoError(t, err)

	// The filter reaches the store as DeadLetters' does (dead_test.go in
	// package signals tests its fields); the count ignores its Limit.
	n, err := b.view.CountDead(t.Context(), signals.DeadFilter{Limit: 1})
	require.NoError(t, err)
	require.Equal(t, 5, n, "whatever the Limit")
	n, err = b.view.CountDead(t.Context(), signals.DeadFilter{Reason: signals.ReasonRetriesExhausted})
	require.NoError(t, err)
	require.Equal(t, 2, n)
	_, err = b.view.CountDead(t.Context(), signals.DeadFilter{After: "12.notanid"})
	require.ErrorIs(t, err, signals.ErrInvalidConfig, "an After no Cursor returned")
}
