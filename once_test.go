package signals_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
)

// onceTest is what the Once tests share: the fixture, "order.placed",
// and the effect under test, a receipts table with no unique key, so that a
// second insert would show as a second row.
type onceTest struct {
	f     *fixture
	sig   *signals.Signal[orderPlaced]
	table string
}

func setupOnce(t *testing.T) *onceTest {
	t.Helper()
	f := setup(t)
	o := &onceTest{f: f, sig: register[orderPlaced](t, f.reg, "order.placed"), table: pgx.Identifier{f.schema, "receipts"}.Sanitize()}
	_, err := f.pool.Exec(t.Context(), `CREATE TABLE `+o.table+` (order_id text NOT NULL)`)
	require.NoError(t, err)
	return o
}

// event returns the first delivery of order o-1 to the receiver
// "record-receipt".
func (o *onceTest) event() signals.Event[orderPlaced] {
	return o.sig.NewEvent("record-receipt", orderPlaced{OrderID: "o-1"})
}

// apply is a receiver's transaction body: Once first, the effect only when
// this delivery is the first.
func (o *onceTest) apply(ctx context.Context, tx pgx.Tx, e signals.Event[orderPlaced]) (bool, error) {
	first, err := signals.Once(ctx, tx, e)
	if err != nil || !first {
		return false, err
	}
	_, err = tx.Exec(ctx, `INSERT INTO `+o.table+` (order_id) VALUES ($1)`, e.Payload.OrderID)
	return true, err
}

// deliver runs apply in a transaction of its own and commits it.
func (o *onceTest) deliver(ctx context.Context, e signals.Event[orderPlaced]) (first bool, err error) {
	err = pgx.BeginFunc(ctx, o.f.pool, func(tx pgx.Tx) (err error) {
		first, err = o.apply(ctx, tx, e)
		return err
	})
	return first, err
}

// requireDeliver is deliver on the test's ctx, which must succeed.
func (o *onceTest) requireDeliver(t *testing.T, e signals.Event[orderPlaced]) bool {
	t.Helper()
	first, err := o.deliver(t.Context(), e)
	require.NoError(t, err)
	return first
}

// applyOpen applies e as the first delivery in a transaction it leaves open.
func (o *onceTest) applyOpen(t *testing.T, e signals.Event[orderPlaced]) pgx.Tx {
	t.Helper()
	tx := o.f.begin(t)
	first, err := o.apply(t.Context(), tx, e)
	require.NoError(t, err)
	require.True(t, first)
	return tx
}

// receipts counts the receipts of order o-1.
func (o *onceTest) receipts(t *testing.T) int {
	t.Helper()
	var n int
	require.NoError(t, o.f.pool.QueryRow(context.Background(), `SELECT count(*) FROM `+o.table+` WHERE order_id = 'o-1'`).Scan(&n))
	return n
}

func TestOnceAppliesARedeliveryOnce(t *testing.T) {
	t.Parallel()
	o := setupOnce(t)

	e := o.event()
	require.True(t, o.requireDeliver(t, e), "first delivery")
	e.Attempt = 2
	require.False(t, o.requireDeliver(t, e), "redelivery of the same task")
	require.Equal(t, 1, o.receipts(t))

	// Once is per event and receiver: another receiver of the same event
	// (its own TaskID) applies its effect too.
	other := e
	other.Receiver, other.TaskID, other.Attempt = "audit", ulid.Make(), 1
	require.True(t, o.requireDeliver(t, other))
	require.Equal(t, 2, o.receipts(t))
}

func TestOnceConcurrentDeliveriesApplyOnce(t *testing.T) {
	t.Parallel()
	o := setupOnce(t)
	e := o.event()

	// Every delivery holds its own connection at once (testenv.Pool has
	// only 4 on 2 cores).
	const deliveries = 8
	pool := newPool(t, func(c *pgxpool.Config) { c.MaxConns = deliveries + 1 })

	var began, wg sync.WaitGroup
	began.Add(deliveries)
	firsts := make(chan bool, deliveries)
	errs := make(chan error, deliveries)
	for range deliveries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tx, err := pool.Begin(t.Context())
			began.Done()
			if err != nil {
				errs <- err
				return
			}
			defer tx.Rollback(context.Background()) //nolint:errcheck // no-op after commit

			began.Wait() // all transactions open before any calls Once
			first, err := o.apply(t.Context(), tx, e)
			if err == nil {
				err = tx.Commit(t.Context())
			}
			if err != nil {
				errs <- err
				return
			}
			firsts <- first
		}()
	}
	wg.Wait()
	close(errs)
	close(firsts)
	for err := range errs {
		require.NoError(t, err)
	}
	var got []bool
	for first := range firsts {
		got = append(got, first)
	}
	require.Len(t, got, deliveries)
	require.ElementsMatch(t, append([]bool{true}, make([]bool, deliveries-1)...), got, "exactly one delivery is first")
	require.Equal(t, 1, o.receipts(t))
}

func TestOnceAfterARolledBackDeliveryAppliesAgain(t *testing.T) {
	t.Parallel()
	o := setupOnce(t)
	e := o.event()

	require.NoError(t, o.applyOpen(t, e).Rollback(t.Context()))
	require.Zero(t, o.receipts(t))

	require.True(t, o.requireDeliver(t, e), "the rolled-back delivery left no record")
	require.False(t, o.requireDeliver(t, e))
	require.Equal(t, 1, o.receipts(t))
}

func TestOnceWaitsForAConcurrentDeliveryThatRollsBack(t *testing.T) {
	t.Parallel()
	o := setupOnce(t)
	e := o.event()

	holder := o.applyOpen(t, e)
	waiter := o.f.begin(t)
	var pid int
	require.NoError(t, waiter.QueryRow(t.Context(), `SELECT pg_backend_pid()`).Scan(&pid))
	type result struct {
		first bool
		err   error
	}
	done := make(chan result, 1)
	go func() {
		first, err := o.apply(t.Context(), waiter, e)
		done <- result{first, err}
	}()
	require.Eventually(t, func() bool {
		var waiting bool
		err := o.f.pool.QueryRow(t.Context(), `SELECT coalesce(wait_event_type = 'Lock', false) FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&waiting)
		return err == nil && waiting
	}, eventually, tick, "the second delivery waits on the first one's transaction")

	require.NoError(t, holder.Rollback(t.Context()))
	r := <-done
	require.NoError(t, r.err)
	require.True(t, r.first, "the first delivery rolled back, so the waiting one is first")
	require.NoError(t, waiter.Commit(t.Context()))
	require.Equal(t, 1, o.receipts(t))
}

func TestOnceRejectsAnEventWithoutTaskIDAndANilTx(t *testing.T) {
	t.Parallel()
	o := setupOnce(t)
	tx := o.f.begin(t)

	_, err := signals.Once(t.Context(), tx, signals.Event[orderPlaced]{})
	require.ErrorIs(t, err, signals.ErrInvalidEvent)
	noTask := o.event()
	noTask.TaskID = ulid.ULID{}
	_, err = signals.Once(t.Context(), tx, noTask)
	require.ErrorIs(t, err, signals.ErrInvalidEvent)

	_, err = signals.Once(t.Context(), nil, o.event())
	require.ErrorIs(t, err, signals.ErrNilTx)

	// Refusals send nothing: the transaction is still usable.
	first, err := signals.Once(t.Context(), tx, o.event())
	require.NoError(t, err)
	require.True(t, first)
}

func TestOnceKeepsTheEffectSingleWhenTheReceiverFailsAfterCommit(t *testing.T) {
	t.Parallel()
	o := setupOnce(t)
	f := o.f

	var mu sync.Mutex
	var firsts []bool // per attempt: did Once say first?
	o.sig.Connect("record-receipt", func(ctx context.Context, e signals.Event[orderPlaced]) error {
		first, err := o.deliver(ctx, e)
		mu.Lock()
		firsts = append(firsts, first)
		mu.Unlock()
		if err != nil {
			return err
		}
		if e.Attempt == 1 {
			// The effect is committed; the process dies before asynq
			// hears of it, so the task runs again.
			return errors.New("crashed after commit")
		}
		return nil
	}, signals.Queue(f.queue), fastRetry)
	f.runDispatcher(t, signals.DispatcherConfig{})
	f.runWorker(t)

	send(t, f.pool, o.sig, orderPlaced{OrderID: "o-1"})

	insp := f.inspector(t)
	require.Eventually(t, func() bool {
		info, err := insp.GetQueueInfo(f.queue)
		return err == nil && info.Completed == 1
	}, eventually, tick)
	mu.Lock()
	require.Equal(t, []bool{true, false}, firsts, "applied on attempt 1, skipped on the retry")
	mu.Unlock()
	require.Equal(t, 1, o.receipts(t))
}
