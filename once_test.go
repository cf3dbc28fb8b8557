package signals_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/kithook"
	"github.com/dj-signals/signals/internal/relay"
	"github.com/dj-signals/signals/internal/testenv"
	"github.com/dj-signals/signals/signalstest"
)

// onceTest is what the Once and Consume tests share: the fixture, "order.placed",
// and the effect under test, a receipts table with no unique key, so that a
// second insert would show as a second row.
type onceTest struct {
	f     *testBundle
	sig   *signals.Signal[orderPlaced]
	table string
}

func setupOnce(t *testing.T) *onceTest {
	t.Helper()
	f := setup(t)
	o := &onceTest{f: f, sig: signals.Register[orderPlaced](f.reg, "order.placed"), table: pgx.Identifier{f.schema, "receipts"}.Sanitize()}
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
	return true, o.record(ctx, tx, e)
}

// consume is apply with Consume in place of Once.
func (o *onceTest) consume(ctx context.Context, tx pgx.Tx, e signals.Event[orderPlaced]) (bool, error) {
	mine, err := signals.Consume(ctx, tx, e)
	if err != nil || !mine {
		return false, err
	}
	return true, o.record(ctx, tx, e)
}

// record is the effect: one receipt for e's order.
func (o *onceTest) record(ctx context.Context, tx pgx.Tx, e signals.Event[orderPlaced]) error {
	_, err := tx.Exec(ctx, `INSERT INTO `+o.table+` (order_id) VALUES ($1)`, e.Payload.OrderID)
	return err
}

// deliver runs apply in a transaction of its own and commits it.
func (o *onceTest) deliver(ctx context.Context, e signals.Event[orderPlaced]) (first bool, err error) {
	return o.inTx(ctx, o.apply, e)
}

// deliverConsuming runs consume in a transaction of its own and commits it.
func (o *onceTest) deliverConsuming(ctx context.Context, e signals.Event[orderPlaced]) (mine bool, err error) {
	return o.inTx(ctx, o.consume, e)
}

func (o *onceTest) inTx(ctx context.Context, body func(context.Context, pgx.Tx, signals.Event[orderPlaced]) (bool, error), e signals.Event[orderPlaced]) (applied bool, err error) {
	err = pgx.BeginFunc(ctx, o.f.pool, func(tx pgx.Tx) (err error) {
		applied, err = body(ctx, tx, e)
		return err
	})
	return applied, err
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
func (o *onceTest) receipts(t testing.TB) int {
	t.Helper()
	return o.receiptsOf(t, "o-1")
}

// receiptsOf counts the receipts of order orderID.
func (o *onceTest) receiptsOf(t testing.TB, orderID string) int {
	t.Helper()
	var n int
	require.NoError(t, o.f.pool.QueryRow(context.Background(), `SELECT count(*) FROM `+o.table+` WHERE order_id = $1`, orderID).Scan(&n))
	return n
}

// inbox counts the rows of the fixture's inbox table, where Once records
// deliveries.
func (o *onceTest) inbox(t testing.TB) int {
	t.Helper()
	var n int
	require.NoError(t, o.f.pool.QueryRow(context.Background(), `SELECT count(*) FROM `+pgx.Identifier{o.f.schema, "inbox"}.Sanitize()).Scan(&n))
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
	require.ErrorIs(t, err, signals.ErrTxUnusable)

	// Refusals send nothing: the transaction is still usable.
	first, err := signals.Once(t.Context(), tx, o.event())
	require.NoError(t, err)
	require.True(t, first)
}

func TestOnceKeepsTheEffectSingleWhenTheReceiverFailsAfterCommit(t *testing.T) {
	t.Parallel()
	o := setupOnce(t)
	requireSingleEffectAfterACrashAfterCommit(t, o, o.deliver)
}

// verdicts records what Consume said on each run of a receiver, in order.
type verdicts struct {
	mu   sync.Mutex
	said []bool
}

func (v *verdicts) add(mine bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.said = append(v.said, mine)
}

func (v *verdicts) get() []bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]bool(nil), v.said...)
}

// consumed is what a delivery running in another goroutine got from
// consume.
type consumed struct {
	mine bool
	err  error
}

// receive waits for ch's value for as long as a test waits for anything.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(eventually):
		t.Fatalf("no %s within %v", what, eventually)
		panic("unreachable")
	}
}

// heldDelivery sends order o-1 through an Eager and returns the Event that
// its receiver "record-receipt" was given: a delivered one, whose outbox
// row the Eager keeps while the receiver runs. The receiver returns only
// when the test ends, so the row stays until something consumes it.
func (o *onceTest) heldDelivery(t *testing.T) signals.Event[orderPlaced] {
	t.Helper()
	delivered := make(chan signals.Event[orderPlaced], 1)
	release := make(chan struct{})
	o.sig.Connect("record-receipt", func(_ context.Context, e signals.Event[orderPlaced]) error {
		delivered <- e
		<-release
		return nil
	}, signals.Queue(o.f.queue))
	eager := o.f.eager(t)
	sent := make(chan struct{})
	var sendErr error
	go func() {
		defer close(sent)
		// Not the test's ctx: it ends before the cleanup below releases
		// the receiver, and the Eager still has the row to remove.
		_, sendErr = commit(context.WithoutCancel(t.Context()), eager, o.sig, orderPlaced{OrderID: "o-1"})
	}()
	t.Cleanup(func() {
		close(release)
		<-sent
		require.NoError(t, sendErr, "the Eager's Commit")
	})
	select {
	case e := <-delivered:
		return e
	case <-sent:
		t.Fatalf("the Eager returned without running the receiver: %v", sendErr)
	case <-time.After(eventually):
		t.Fatalf("the Eager did not run the receiver within %v", eventually)
	}
	panic("unreachable")
}

// consumeBehind starts a second delivery of e, consuming it in a
// transaction of its own, and returns that transaction and the delivery's
// outcome once PostgreSQL reports it waiting for holder.
func (o *onceTest) consumeBehind(t *testing.T, holder pgx.Tx, e signals.Event[orderPlaced]) (pgx.Tx, <-chan consumed) {
	t.Helper()
	waiter := o.f.begin(t)
	done := make(chan consumed, 1)
	go func() {
		mine, err := o.consume(t.Context(), waiter, e)
		done <- consumed{mine, err}
	}()
	holderPID, waiterPID := holder.Conn().PgConn().PID(), waiter.Conn().PgConn().PID()
	require.Eventually(t, func() bool {
		var waits bool
		err := o.f.pool.QueryRow(t.Context(), `SELECT $2::int = ANY(pg_blocking_pids($1))`, waiterPID, holderPID).Scan(&waits)
		return err == nil && waits
	}, eventually, tick, "the second delivery waits for the first one's transaction")
	return waiter, done
}

func TestConsumeKeepsTheEffectSingleWhenTheReceiverFailsAfterCommit(t *testing.T) {
	t.Parallel()
	o := setupOnce(t)
	requireSingleEffectAfterACrashAfterCommit(t, o, o.deliverConsuming)
}

// requireSingleEffectAfterACrashAfterCommit runs a receiver that applies
// its effect with deliver and then fails on its first attempt, as a
// process that dies after the commit, before asynq hears of it: the retry
// must find the effect applied (deliver says false) and apply nothing.
func requireSingleEffectAfterACrashAfterCommit(t *testing.T, o *onceTest, deliver func(context.Context, signals.Event[orderPlaced]) (bool, error)) {
	t.Helper()
	f := o.f
	var said verdicts // per attempt: did deliver apply the effect?
	o.sig.Connect("record-receipt", func(ctx context.Context, e signals.Event[orderPlaced]) error {
		mine, err := deliver(ctx, e)
		said.add(mine)
		if err != nil {
			return err
		}
		if e.Attempt == 1 {
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
	require.Equal(t, []bool{true, false}, said.get(), "applied on attempt 1, skipped on the retry")
	require.Equal(t, 1, o.receipts(t))
}

func TestConsumeWaitsForAConcurrentDeliveryAndSkipsWhenItCommits(t *testing.T) {
	t.Parallel()
	o := setupOnce(t)
	e := o.heldDelivery(t)

	holder := o.f.begin(t)
	mine, err := o.consume(t.Context(), holder, e)
	require.NoError(t, err)
	require.True(t, mine, "the first delivery finds the row")
	waiter, done := o.consumeBehind(t, holder, e)

	require.NoError(t, holder.Commit(t.Context()))
	r := receive(t, done, "outcome of the second delivery")
	require.NoError(t, r.err)
	require.False(t, r.mine, "the first delivery committed: the event is applied")
	require.NoError(t, waiter.Commit(t.Context()))
	require.Equal(t, 1, o.receipts(t))
	require.Zero(t, o.f.pending(t))
}

func TestConsumeWaitsForAConcurrentDeliveryAndAppliesWhenItRollsBack(t *testing.T) {
	t.Parallel()
	o := setupOnce(t)
	e := o.heldDelivery(t)

	holder := o.f.begin(t)
	mine, err := o.consume(t.Context(), holder, e)
	require.NoError(t, err)
	require.True(t, mine, "the first delivery finds the row")
	waiter, done := o.consumeBehind(t, holder, e)

	require.NoError(t, holder.Rollback(t.Context()))
	r := receive(t, done, "outcome of the second delivery")
	require.NoError(t, r.err)
	require.True(t, r.mine, "the first delivery rolled back, leaving the row to the waiting one")
	require.NoError(t, waiter.Commit(t.Context()))
	require.Equal(t, 1, o.receipts(t))

	again, err := o.deliverConsuming(t.Context(), e)
	require.NoError(t, err)
	require.False(t, again, "the waiting delivery's commit consumed the row: a later delivery skips")
	require.Equal(t, 1, o.receipts(t))
}

func TestConsumeAfterARolledBackRunLeavesTheRowForTheRetry(t *testing.T) {
	t.Parallel()
	o := setupOnce(t)
	f := o.f

	var said verdicts
	o.sig.Connect("record-receipt", func(ctx context.Context, e signals.Event[orderPlaced]) error {
		var mine bool
		err := pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) (err error) {
			mine, err = o.consume(ctx, tx, e)
			if err == nil && e.Attempt == 1 {
				err = errors.New("failed before commit") // rolls back Consume and the effect
			}
			return err
		})
		said.add(mine)
		if err == nil && e.Attempt == 2 {
			return errors.New("crashed after commit")
		}
		return err
	}, signals.Queue(f.queue), fastRetry)
	f.runDispatcher(t, signals.DispatcherConfig{})
	f.runWorker(t)

	send(t, f.pool, o.sig, orderPlaced{OrderID: "o-1"})

	insp := f.inspector(t)
	require.Eventually(t, func() bool {
		info, err := insp.GetQueueInfo(f.queue)
		return err == nil && info.Completed == 1
	}, eventually, tick)
	require.Equal(t, []bool{true, true, false}, said.get(),
		"attempt 1 rolled back and left the row, attempt 2 consumed it and committed, attempt 3 skips")
	require.Equal(t, 1, o.receipts(t))
	require.Zero(t, f.pending(t))
	require.Zero(t, o.inbox(t))
}

// A Redis that lost its data, or a worker that died after the receiver's
// commit, delivers a task whose row is already consumed.
func TestConsumeSkipsARedeliveryOfAConsumedTask(t *testing.T) {
	t.Parallel()
	o := setupOnce(t)
	f := o.f

	var said verdicts
	o.sig.Connect("record-receipt", func(ctx context.Context, e signals.Event[orderPlaced]) error {
		mine, err := o.deliverConsuming(ctx, e)
		said.add(mine)
		return err
	}, signals.Queue(f.queue))
	send(t, f.pool, o.sig, orderPlaced{OrderID: "o-1"})
	rows := f.outbox(t)
	require.Len(t, rows, 1)
	task, _, err := relay.Task(rows[0], f.schema, time.Minute)
	require.NoError(t, err)

	deliver := func() error {
		_, err := kithook.Deliver(t.Context(), f.reg, task, ulid.ULID(rows[0].ID).String(), f.queue, 1, 0)
		return err
	}
	require.NoError(t, deliver(), "first delivery")
	require.Zero(t, f.pending(t), "the receiver's commit removed the row, with no ack")
	require.NoError(t, deliver(), "the same task again")

	require.Equal(t, []bool{true, false}, said.get(), "the redelivery finds no row")
	require.Equal(t, 1, o.receipts(t))
	require.Zero(t, o.inbox(t))
}

func TestConsumeAppliesARequeuedDeadLetterOnce(t *testing.T) {
	t.Parallel()
	o := setupOnce(t)
	f := o.f

	var runs atomic.Int64
	var said verdicts
	o.sig.Connect("record-receipt", func(ctx context.Context, e signals.Event[orderPlaced]) error {
		run := runs.Add(1)
		if run == 1 {
			return signals.Permanent(errors.New("card declined")) // before Consume: nothing applied
		}
		mine, err := o.deliverConsuming(ctx, e)
		said.add(mine)
		if err == nil && run == 2 {
			return errors.New("crashed after commit")
		}
		return err
	}, signals.Queue(f.queue), fastRetry)
	f.runDispatcher(t, signals.DispatcherConfig{})
	f.runWorker(t)

	send(t, f.pool, o.sig, orderPlaced{OrderID: "o-1"})

	l := f.ledger(t)
	dead := f.awaitDead(t, 1)
	require.Equal(t, signals.ReasonPermanent, dead[0].Reason)
	n, err := l.RequeueDead(t.Context(), dead[0].TaskID)
	require.NoError(t, err)
	require.Equal(t, 1, n)

	require.Eventually(t, func() bool { return len(said.get()) == 2 }, eventually, tick,
		"the requeued delivery runs, then its retry")
	require.Equal(t, []bool{true, false}, said.get(),
		"the requeued row, written anew, is consumed by its first run; its retry skips")
	require.Equal(t, 1, o.receipts(t))
	require.Zero(t, f.pending(t))
	dead, err = l.DeadLetters(t.Context(), signals.DeadFilter{})
	require.NoError(t, err)
	require.Empty(t, dead)
	require.Zero(t, o.inbox(t))
}

func TestConsumeFreesTheOrderingKeyAtCommit(t *testing.T) {
	t.Parallel()
	o := setupOnce(t)
	f := o.f

	firstOpen := make(chan struct{}, 1)     // o-1's transaction consumed its row and is open
	commitFirst := make(chan struct{})      // the test lets o-1's transaction commit
	release := make(chan struct{})          // the test lets o-1's receiver return
	secondStarted := make(chan struct{}, 1) // o-2's receiver started
	o.sig.Connect("record-receipt", func(ctx context.Context, e signals.Event[orderPlaced]) error {
		if e.Payload.OrderID != "o-1" {
			select {
			case secondStarted <- struct{}{}:
			default:
			}
			_, err := o.deliverConsuming(ctx, e)
			return err
		}
		err := pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error {
			mine, err := o.consume(ctx, tx, e)
			if err != nil || !mine {
				return err
			}
			select {
			case firstOpen <- struct{}{}:
			default:
			}
			select {
			case <-commitFirst:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		if err != nil {
			return err
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}, signals.Queue(f.queue), signals.OrderBy(func(orderPlaced) string { return "customer-1" }))
	f.runDispatcher(t, signals.DispatcherConfig{PollInterval: 10 * time.Millisecond})
	f.runWorker(t)
	releaseFirst := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseFirst) // before the Worker stops

	send(t, f.pool, o.sig, orderPlaced{OrderID: "o-1"})
	send(t, f.pool, o.sig, orderPlaced{OrderID: "o-2"})

	receive(t, firstOpen, "open transaction of o-1's receiver")
	require.Never(t, func() bool { return len(secondStarted) > 0 }, 500*time.Millisecond, tick,
		"o-2 does not start while o-1's transaction is open")

	close(commitFirst)
	receive(t, secondStarted, "start of o-2's receiver after o-1's commit, while o-1's receiver still runs")
	require.Eventually(t, func() bool { return o.receiptsOf(t, "o-2") == 1 }, eventually, tick)
	require.Equal(t, 1, o.receipts(t))

	releaseFirst()
	require.Eventually(t, func() bool { return f.pending(t) == 0 }, eventually, tick)
}

func TestConsumeUnderEagerFindsTheRowAndAppliesOnce(t *testing.T) {
	t.Parallel()
	o := setupOnce(t)
	f := o.f

	var said verdicts
	var delivered signals.Event[orderPlaced]
	leftAfterCommit := int64(-1)
	o.sig.Connect("record-receipt", func(ctx context.Context, e signals.Event[orderPlaced]) error {
		delivered = e
		mine, err := o.deliverConsuming(ctx, e)
		said.add(mine)
		if err != nil {
			return err
		}
		c, err := f.queries.Count(ctx, f.pool)
		leftAfterCommit = c.Live
		return err
	}, signals.Queue(f.queue))

	_, err := commit(t.Context(), f.eager(t), o.sig, orderPlaced{OrderID: "o-1"})
	require.NoError(t, err, "Commit runs the receiver, which succeeds")
	require.Equal(t, []bool{true}, said.get(), "the Eager keeps the row while the receiver runs, so Consume finds it")
	require.Zero(t, leftAfterCommit, "the receiver's commit removed the row")
	require.Equal(t, 1, o.receipts(t))
	require.Zero(t, f.pending(t))
	require.Zero(t, o.inbox(t))

	again, err := o.deliverConsuming(t.Context(), delivered)
	require.NoError(t, err)
	require.False(t, again, "a redelivery of the consumed Event skips")
	require.Equal(t, 1, o.receipts(t))
}

func TestConsumeOfAnEventFromNewEventFallsBackToTheInbox(t *testing.T) {
	t.Parallel()
	o := setupOnce(t)

	receiver := func(ctx context.Context, e signals.Event[orderPlaced]) error {
		_, err := o.deliverConsuming(ctx, e)
		return err
	}
	signalstest.RequireIdempotent(t, receiver, o.event(), func(t testing.TB) {
		require.Equal(t, 1, o.receipts(t), "the second call skips the effect")
		require.Equal(t, 1, o.inbox(t), "an Event with no outbox row is recorded in the inbox")
	})
}

// TestAWorkerSendsNoAckForADeliveryItsReceiverConsumed requires that the
// Worker sends no statement of its own for a delivery whose receiver
// removed the row with Consume: the receiver's commit was the ack.
func TestAWorkerSendsNoAckForADeliveryItsReceiverConsumed(t *testing.T) {
	t.Parallel()
	o := setupOnce(t)
	f := o.f
	o.sig.Connect("record-receipt", func(ctx context.Context, e signals.Event[orderPlaced]) error {
		_, err := o.deliverConsuming(ctx, e)
		return err
	}, signals.Queue(f.queue))
	acks := &testenv.Statements{Prefix: "DELETE FROM " + pgx.Identifier{f.schema}.Sanitize() + ".outbox WHERE xid = ANY"}
	workerPool := newPool(t, func(c *pgxpool.Config) { c.ConnConfig.Tracer = acks })
	w, err := signals.NewWorker(f.reg, workerPool, f.redis, signals.WorkerConfig{Queues: map[string]int{f.queue: 1}, Logger: quietLogger()})
	require.NoError(t, err)
	run(t, w.Run)
	f.runDispatcher(t, signals.DispatcherConfig{})

	const events = 20
	sendOrders(t, f, o.sig, "o", events)
	require.Eventually(t, func() bool { return f.pending(t) == 0 }, eventually, tick)
	for i := range events {
		require.Equal(t, 1, o.receiptsOf(t, fmt.Sprintf("o-%d", i)))
	}
	require.Zero(t, acks.Count(), "the Worker sent no ack")
}
