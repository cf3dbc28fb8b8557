package signals_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/store"
	"github.com/dj-signals/signals/internal/testenv"
	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"
)

func TestSendReliableCommitWritesOneRowPerReceiver(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := signals.Register[orderPlaced](f.reg, "order.placed")
	sig.Connect("email-receipt", nop[orderPlaced])
	sig.Connect("analytics", nop[orderPlaced], signals.Queue(f.queue+"-low"), signals.MaxRetries(3), signals.Timeout(1500*time.Millisecond))
	sig.Connect("warehouse", nop[orderPlaced])

	before := f.statements.Count()
	eventID := send(t, f.pool, sig, orderPlaced{OrderID: "o-1", Cents: 1250})
	require.Equal(t, int64(1), f.statements.Count()-before-2, "one statement for three receivers, besides BEGIN and COMMIT")

	rows := f.outbox(t)
	require.Len(t, rows, 3)
	seen := map[string]store.Row{}
	taskIDs := map[[16]byte]bool{}
	for _, r := range rows {
		require.Equal(t, [16]byte(eventID), r.EventID)
		require.Equal(t, [16]byte(eventID), r.CorrelationID, "a root event correlates with itself")
		require.Equal(t, "order.placed", r.Signal)
		require.JSONEq(t, `{"order_id":"o-1","cents":1250}`, string(r.Payload))
		require.NotEqual(t, r.EventID, r.ID)
		taskIDs[r.ID] = true
		seen[r.Receiver] = r
	}
	require.Len(t, taskIDs, 3, "every row has its own task ID")
	require.Equal(t, f.regQueue, seen["email-receipt"].Queue)
	require.Equal(t, signals.DefaultReceiverMaxRetries, seen["email-receipt"].MaxRetry)
	require.Equal(t, signals.DefaultReceiverTimeout.Milliseconds(), seen["email-receipt"].TimeoutMS)
	require.Equal(t, f.queue+"-low", seen["analytics"].Queue)
	require.Equal(t, 3, seen["analytics"].MaxRetry)
	require.Equal(t, int64(1500), seen["analytics"].TimeoutMS)
	require.Contains(t, seen, "warehouse")
}

func TestSendReliableRollbackLeavesNoRow(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := nopSignal(t, f, "email-receipt")

	tx := f.begin(t)
	_, err := sig.SendReliable(t.Context(), tx, orderPlaced{OrderID: "o-1"})
	require.NoError(t, err)
	require.NoError(t, tx.Rollback(t.Context()))

	require.Empty(t, f.outbox(t))
}

func TestSendReliableSavepointRollbackDiscardsOnlyItsRows(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := nopSignal(t, f, "email-receipt", "analytics")

	var kept ulid.ULID
	err := pgx.BeginFunc(t.Context(), f.pool, func(tx pgx.Tx) (err error) {
		if kept, err = sig.SendReliable(t.Context(), tx, orderPlaced{OrderID: "kept"}); err != nil {
			return err
		}
		nested, err := tx.Begin(t.Context()) // a savepoint
		if err != nil {
			return err
		}
		if _, err := sig.SendReliable(t.Context(), nested, orderPlaced{OrderID: "discarded"}); err != nil {
			return err
		}
		return nested.Rollback(t.Context())
	})
	require.NoError(t, err)

	rows := f.outbox(t)
	require.Len(t, rows, 2)
	for _, r := range rows {
		require.Equal(t, [16]byte(kept), r.EventID)
		require.JSONEq(t, `{"order_id":"kept","cents":0}`, string(r.Payload))
	}
}

func TestSendReliableConcurrentSenders(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := nopSignal(t, f, "a", "b")

	const senders, perSender = 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perSender {
				if _, err := commit(t.Context(), f.pool, sig, orderPlaced{OrderID: fmt.Sprintf("%d-%d", s, i)}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	rows := f.outbox(t)
	require.Len(t, rows, senders*perSender*2)
	perOrder := map[string]map[string]bool{}
	for _, r := range rows {
		var p orderPlaced
		require.NoError(t, json.Unmarshal(r.Payload, &p))
		if perOrder[p.OrderID] == nil {
			perOrder[p.OrderID] = map[string]bool{}
		}
		perOrder[p.OrderID][r.Receiver] = true
	}
	require.Len(t, perOrder, senders*perSender)
	for id, receivers := range perOrder {
		require.Len(t, receivers, 2, "order %s", id)
	}
}

func TestSendReliableRefusesBadInputAndSendsNothing(t *testing.T) {
	t.Parallel()
	f := setupRegistry(t, signals.RegistryConfig{MaxPayloadBytes: 1024})
	anySig := signals.Register[any](f.reg, "any.thing")
	anySig.Connect("r", nop[any])
	lonely := signals.Register[any](f.reg, "nobody.listens")

	loop := &cyclic{}
	loop.Next = loop
	cases := []struct {
		name    string
		sig     *signals.Signal[any]
		payload any
		want    error
		says    string // what the message tells the caller
	}{
		{"channel", anySig, make(chan int), signals.ErrInvalidEvent, "cannot be encoded as JSON"},
		{"func", anySig, func() {}, signals.ErrInvalidEvent, "cannot be encoded as JSON"},
		{"NaN", anySig, math.NaN(), signals.ErrInvalidEvent, "cannot be encoded as JSON"},
		{"infinity", anySig, map[string]float64{"x": math.Inf(1)}, signals.ErrInvalidEvent, "cannot be encoded as JSON"},
		{"cycle", anySig, loop, signals.ErrInvalidEvent, "cannot be encoded as JSON"},
		{"too large", anySig, strings.Repeat("x", 1024), signals.ErrInvalidEvent, "1026 bytes of JSON exceed the limit of 1024: send IDs, not documents"},
		{"no receivers", lonely, "hello", signals.ErrNoReceivers, "import the package that connects its receivers"},
	}
	tx := f.begin(t)
	for _, c := range cases {
		before := f.statements.Count()
		_, err := c.sig.SendReliable(t.Context(), tx, c.payload)
		require.ErrorIs(t, err, c.want, c.name)
		require.ErrorContains(t, err, c.says, c.name)
		require.Equal(t, before, f.statements.Count(), "%s: no statement may be sent", c.name)
	}

	_, err := anySig.SendReliable(t.Context(), nil, "x")
	require.ErrorIs(t, err, signals.ErrTxUnusable)

	// The transaction is still usable: a valid send goes through and commits.
	_, err = anySig.SendReliable(t.Context(), tx, strings.Repeat("x", 100))
	require.NoError(t, err)
	require.NoError(t, tx.Commit(t.Context()))
	require.Len(t, f.outbox(t), 1)
}

func TestSendReliableWrapsJSONError(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := signals.Register[float64](f.reg, "num.sent")
	sig.Connect("r", nop[float64])

	_, err := sig.SendReliable(t.Context(), f.begin(t), math.NaN())
	var jsonErr *json.UnsupportedValueError
	require.ErrorAs(t, err, &jsonErr)
	require.ErrorContains(t, err, `"num.sent"`)
}

func TestSendReliableOnFinishedTransaction(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := nopSignal(t, f, "r")

	committed := f.begin(t)
	require.NoError(t, committed.Commit(t.Context()))
	_, err := sig.SendReliable(t.Context(), committed, orderPlaced{})
	require.ErrorIs(t, err, signals.ErrTxUnusable)
	require.ErrorIs(t, err, pgx.ErrTxClosed)
	require.ErrorContains(t, err, "already committed or rolled back")

	aborted := f.begin(t)
	_, err = aborted.Exec(t.Context(), `SELECT 1/0`)
	require.Error(t, err)
	_, err = sig.SendReliable(t.Context(), aborted, orderPlaced{})
	require.ErrorIs(t, err, signals.ErrTxUnusable)
	require.ErrorContains(t, err, "roll it back")

	require.Empty(t, f.outbox(t))
}

func TestSendReliableWithoutMigrationSaysWhatToDo(t *testing.T) {
	t.Parallel()
	pool := testenv.Pool(t)
	reg := newRegistry(t, signals.RegistryConfig{Schema: testenv.Schema(t)})
	sig := signals.Register[orderPlaced](reg, "order.placed")
	sig.Connect("r", nop[orderPlaced])
	_, err := commit(t.Context(), pool, sig, orderPlaced{})
	require.ErrorContains(t, err, "Registry.Migrate")
}

func TestDelayedSignalRunsNoEarlierThanAsked(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig := signals.Register[orderPlaced](f.reg, "order.placed")
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
	send(t, f.pool, sig, orderPlaced{OrderID: "at"}, signals.At(sentAt.Add(time.Second)))
	send(t, f.pool, sig, orderPlaced{OrderID: "past"}, signals.At(sentAt.Add(-time.Hour)))
	send(t, f.pool, sig, orderPlaced{OrderID: "now"})

	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(ranAt) == 3
	}, eventually, tick)
	mu.Lock()
	defer mu.Unlock()
	require.GreaterOrEqual(t, ranAt["at"].Sub(sentAt), time.Second)
	// At once, give or take a loaded machine: well within the hour a past
	// time would be, and the idle poll it would wait for if held.
	require.Less(t, ranAt["past"].Sub(sentAt), 5*time.Second, "a time in the past means at once")
	require.Less(t, ranAt["now"].Sub(sentAt), 5*time.Second, "an undelayed sibling is not held back")
}
