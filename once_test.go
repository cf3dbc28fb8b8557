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
	"github.com/dj-signals/signals/internal/testenv"
)

// onceReceipts is the effect under test: a table with no unique key, so a
// second insert would show as a second row.
type onceReceipts struct {
	pool  *pgxpool.Pool
	table string
}

func newOnceReceipts(t *testing.T, f *deliveryFixture) onceReceipts {
	t.Helper()
	r := onceReceipts{pool: f.pool, table: pgx.Identifier{f.schema, "receipts"}.Sanitize()}
	_, err := f.pool.Exec(t.Context(), `CREATE TABLE `+r.table+` (order_id text NOT NULL)`)
	require.NoError(t, err)
	return r
}

// apply is a receiver's transaction body: Once first, the effect only when
// this delivery is the first.
func (r onceReceipts) apply(ctx context.Context, tx pgx.Tx, e signals.Event[orderPlaced]) (bool, error) {
	first, err := signals.Once(ctx, tx, e)
	if err != nil || !first {
		return false, err
	}
	_, err = tx.Exec(ctx, `INSERT INTO `+r.table+` (order_id) VALUES ($1)`, e.Payload.OrderID)
	return true, err
}

// deliver runs apply in a transaction of its own and commits it.
func (r onceReceipts) deliver(t *testing.T, e signals.Event[orderPlaced]) bool {
	t.Helper()
	var first bool
	err := pgx.BeginFunc(t.Context(), r.pool, func(tx pgx.Tx) (err error) {
		first, err = r.apply(t.Context(), tx, e)
		return err
	})
	require.NoError(t, err)
	return first
}

func (r onceReceipts) count(t *testing.T, orderID string) int {
	t.Helper()
	var n int
	require.NoError(t, r.pool.QueryRow(context.Background(), `SELECT count(*) FROM `+r.table+` WHERE order_id = $1`, orderID).Scan(&n))
	return n
}

func TestOnceAppliesARedeliveryOnce(t *testing.T) {
	t.Parallel()
	f := setupDelivery(t)
	receipts := newOnceReceipts(t, f)
	sig, err := signals.Register[orderPlaced](f.reg, "order.placed")
	require.NoError(t, err)

	e := sig.NewEvent("record-receipt", orderPlaced{OrderID: "o-1"})
	require.True(t, receipts.deliver(t, e), "first delivery")
	e.Attempt = 2
	require.False(t, receipts.deliver(t, e), "redelivery of the same task")
	require.Equal(t, 1, receipts.count(t, "o-1"))

	// Once is per event and receiver: another receiver of the same event
	// (its own TaskID) applies its effect too.
	other := e
	other.Receiver, other.TaskID, other.Attempt = "audit", ulid.Make(), 1
	require.True(t, receipts.deliver(t, other))
	require.Equal(t, 2, receipts.count(t, "o-1"))
}

func TestOnceConcurrentDeliveriesApplyOnce(t *testing.T) {
	t.Parallel()
	f := setupDelivery(t)
	receipts := newOnceReceipts(t, f)
	sig, err := signals.Register[orderPlaced](f.reg, "order.placed")
	require.NoError(t, err)
	e := sig.NewEvent("record-receipt", orderPlaced{OrderID: "o-1"})

	// Every delivery holds its own connection at once (testenv.Pool has
	// only 4 on 2 cores).
	const deliveries = 8
	cfg, err := pgxpool.ParseConfig(testenv.DatabaseURL())
	require.NoError(t, err)
	cfg.MaxConns = deliveries + 1
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)

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
			first, err := receipts.apply(t.Context(), tx, e)
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
	require.Equal(t, 1, receipts.count(t, "o-1"))
}

func TestOnceAfterARolledBackDeliveryAppliesAgain(t *testing.T) {
	t.Parallel()
	f := setupDelivery(t)
	receipts := newOnceReceipts(t, f)
	sig, err := signals.Register[orderPlaced](f.reg, "order.placed")
	require.NoError(t, err)
	e := sig.NewEvent("record-receipt", orderPlaced{OrderID: "o-1"})

	tx, err := f.pool.Begin(t.Context())
	require.NoError(t, err)
	first, err := receipts.apply(t.Context(), tx, e)
	require.NoError(t, err)
	require.True(t, first)
	require.NoError(t, tx.Rollback(t.Context()))
	require.Zero(t, receipts.count(t, "o-1"))

	require.True(t, receipts.deliver(t, e), "the rolled-back delivery left no record")
	require.False(t, receipts.deliver(t, e))
	require.Equal(t, 1, receipts.count(t, "o-1"))
}

func TestOnceWaitsForAConcurrentDeliveryThatRollsBack(t *testing.T) {
	t.Parallel()
	f := setupDelivery(t)
	receipts := newOnceReceipts(t, f)
	sig, err := signals.Register[orderPlaced](f.reg, "order.placed")
	require.NoError(t, err)
	e := sig.NewEvent("record-receipt", orderPlaced{OrderID: "o-1"})

	holder, err := f.pool.Begin(t.Context())
	require.NoError(t, err)
	defer holder.Rollback(context.Background()) //nolint:errcheck
	first, err := receipts.apply(t.Context(), holder, e)
	require.NoError(t, err)
	require.True(t, first)

	waiter, err := f.pool.Begin(t.Context())
	require.NoError(t, err)
	defer waiter.Rollback(context.Background()) //nolint:errcheck
	var pid int
	require.NoError(t, waiter.QueryRow(t.Context(), `SELECT pg_backend_pid()`).Scan(&pid))
	type result struct {
		first bool
		err   error
	}
	done := make(chan result, 1)
	go func() {
		first, err := receipts.apply(t.Context(), waiter, e)
		done <- result{first, err}
	}()
	require.Eventually(t, func() bool {
		var waiting bool
		err := f.pool.QueryRow(t.Context(), `SELECT coalesce(wait_event_type = 'Lock', false) FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&waiting)
		return err == nil && waiting
	}, eventually, tick, "the second delivery waits on the first one's transaction")

	require.NoError(t, holder.Rollback(t.Context()))
	r := <-done
	require.NoError(t, r.err)
	require.True(t, r.first, "the first delivery rolled back, so the waiting one is first")
	require.NoError(t, waiter.Commit(t.Context()))
	require.Equal(t, 1, receipts.count(t, "o-1"))
}

func TestOnceRejectsAnEventWithoutTaskIDAndANilTx(t *testing.T) {
	t.Parallel()
	f := setupDelivery(t)
	sig, err := signals.Register[orderPlaced](f.reg, "order.placed")
	require.NoError(t, err)

	tx, err := f.pool.Begin(t.Context())
	require.NoError(t, err)
	defer tx.Rollback(context.Background()) //nolint:errcheck

	_, err = signals.Once(t.Context(), tx, signals.Event[orderPlaced]{})
	require.ErrorIs(t, err, signals.ErrInvalidEvent)
	noTask := sig.NewEvent("r", orderPlaced{})
	noTask.TaskID = ulid.ULID{}
	_, err = signals.Once(t.Context(), tx, noTask)
	require.ErrorIs(t, err, signals.ErrInvalidEvent)

	_, err = signals.Once(t.Context(), nil, sig.NewEvent("r", orderPlaced{}))
	require.ErrorIs(t, err, signals.ErrNilTx)

	// Refusals send nothing: the transaction is still usable.
	first, err := signals.Once(t.Context(), tx, sig.NewEvent("r", orderPlaced{}))
	require.NoError(t, err)
	require.True(t, first)
}

func TestOnceKeepsTheEffectSingleWhenTheReceiverFailsAfterCommit(t *testing.T) {
	t.Parallel()
	f := setupDelivery(t)
	receipts := newOnceReceipts(t, f)
	sig, err := signals.Register[orderPlaced](f.reg, "order.placed")
	require.NoError(t, err)

	var mu sync.Mutex
	var firsts []bool // per attempt: did Once say first?
	sig.Connect("record-receipt", func(ctx context.Context, e signals.Event[orderPlaced]) error {
		var first bool
		err := pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) (err error) {
			first, err = receipts.apply(ctx, tx, e)
			return err
		})
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

	send(t, f, sig, orderPlaced{OrderID: "o-1"})

	insp := f.inspector(t)
	require.Eventually(t, func() bool {
		info, err := insp.GetQueueInfo(f.queue)
		return err == nil && info.Completed == 1
	}, eventually, tick)
	mu.Lock()
	require.Equal(t, []bool{true, false}, firsts, "applied on attempt 1, skipped on the retry")
	mu.Unlock()
	require.Equal(t, 1, receipts.count(t, "o-1"))
}
