package signalstest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/testenv"
	"github.com/dj-signals/signals/signalstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type signedUp struct {
	UserID int64  `json:"user_id"`
	Email  string `json:"email"`
}

// world is one test's migrated schema, with a registry on it.
type world struct {
	pool   *pgxpool.Pool
	schema string
	reg    *signals.Registry
}

func setup(t *testing.T) world {
	t.Helper()
	w := world{pool: testenv.Pool(t), schema: testenv.Schema(t)}
	require.NoError(t, signals.MigrateSchema(t.Context(), w.pool, w.schema))
	w.reg = signals.MustNewRegistry(signals.RegistryConfig{Schema: w.schema, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	return w
}

func register[T any](t *testing.T, w world, name string) *signals.Signal[T] {
	t.Helper()
	sig, err := signals.Register[T](w.reg, name)
	require.NoError(t, err)
	return sig
}

// table creates a table in the test's schema and returns its quoted name.
func (w world) table(t *testing.T, name, columns string) string {
	t.Helper()
	quoted := pgx.Identifier{w.schema, name}.Sanitize()
	_, err := w.pool.Exec(t.Context(), `CREATE TABLE `+quoted+` (`+columns+`)`)
	require.NoError(t, err)
	return quoted
}

func (w world) count(t testing.TB, table string) int {
	t.Helper()
	var n int
	require.NoError(t, w.pool.QueryRow(context.Background(), `SELECT count(*) FROM `+table).Scan(&n))
	return n
}

func send[T any](t *testing.T, db signals.TxBeginner, sig *signals.Signal[T], payloads ...T) error {
	t.Helper()
	return pgx.BeginFunc(t.Context(), db, func(tx pgx.Tx) error {
		for _, p := range payloads {
			if _, err := sig.SendReliable(t.Context(), tx, p); err != nil {
				return err
			}
		}
		return nil
	})
}

func nop[T any](context.Context, signals.Event[T]) error { return nil }

// fakeTB records the failures of a signalstest helper instead of failing
// the test. Fatalf and FailNow must stop the caller, so they panic with
// stopped, which failure recovers.
type fakeTB struct {
	testing.TB // the real test, for Context and anything not overridden
	failures   []string
}

type stopped struct{}

func (f *fakeTB) Helper()      {}
func (f *fakeTB) Fail()        { f.failures = append(f.failures, "Fail") }
func (f *fakeTB) Failed() bool { return len(f.failures) > 0 }
func (f *fakeTB) FailNow()     { panic(stopped{}) }

func (f *fakeTB) Error(args ...any) { f.failures = append(f.failures, fmt.Sprint(args...)) }

func (f *fakeTB) Errorf(format string, args ...any) {
	f.failures = append(f.failures, fmt.Sprintf(format, args...))
}

func (f *fakeTB) Fatal(args ...any) {
	f.Error(args...)
	panic(stopped{})
}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.Errorf(format, args...)
	panic(stopped{})
}

// failure runs fn with a fakeTB, requires that it failed and stopped, and
// returns its failure messages joined.
func failure(t *testing.T, fn func(tb testing.TB)) string {
	t.Helper()
	fake := &fakeTB{TB: t}
	halted := func() (halted bool) {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(stopped); !ok {
					panic(r)
				}
				halted = true
			}
		}()
		fn(fake)
		return false
	}()
	require.True(t, halted, "the helper must stop the test with Fatalf or FailNow")
	require.NotEmpty(t, fake.failures)
	return fmt.Sprint(fake.failures)
}

func TestRequireSentSeesTheTransactionsUncommittedRows(t *testing.T) {
	t.Parallel()
	w := setup(t)
	sig := register[signedUp](t, w, "user.signed_up")
	sig.Connect("welcome", nop[signedUp])
	sig.Connect("crm", nop[signedUp]) // two rows per event
	other := register[int](t, w, "user.deleted")
	other.Connect("purge", nop[int])
	ada, bob := signedUp{1, "ada@example.com"}, signedUp{2, "bob@example.com"}

	tx, err := w.pool.Begin(t.Context())
	require.NoError(t, err)
	defer tx.Rollback(context.Background()) //nolint:errcheck
	for _, p := range []signedUp{ada, bob} {
		_, err := sig.SendReliable(t.Context(), tx, p)
		require.NoError(t, err)
	}

	require.ElementsMatch(t, []signedUp{ada, bob}, signalstest.RequireSent(t, tx, sig, nil), "one payload per event, not per receiver")
	require.Equal(t, []signedUp{bob}, signalstest.RequireSent(t, tx, sig, func(p signedUp) bool { return p.UserID == 2 }))
	signalstest.RequireNotSent(t, tx, sig, func(p signedUp) bool { return p.UserID == 3 })
	signalstest.RequireNotSent(t, tx, other, nil)

	// Nothing is committed yet: the pool sees no row.
	signalstest.RequireNotSent(t, w.pool, sig, nil)
	msg := failure(t, func(tb testing.TB) { signalstest.RequireSent(tb, w.pool, sig, nil) })
	require.Contains(t, msg, `"user.signed_up"`)
	msg = failure(t, func(tb testing.TB) {
		signalstest.RequireSent(tb, tx, sig, func(p signedUp) bool { return p.Email == "eve@example.com" })
	})
	require.Contains(t, msg, "no \"user.signed_up\" event matching")

	require.NoError(t, tx.Commit(t.Context()))
	require.ElementsMatch(t, []signedUp{ada, bob}, signalstest.RequireSent(t, w.pool, sig, nil))
}

func TestRequireNotSentFailsWhenAnEventMatches(t *testing.T) {
	t.Parallel()
	w := setup(t)
	sig := register[signedUp](t, w, "user.signed_up")
	sig.Connect("welcome", nop[signedUp])

	tx, err := w.pool.Begin(t.Context())
	require.NoError(t, err)
	defer tx.Rollback(context.Background()) //nolint:errcheck
	_, err = sig.SendReliable(t.Context(), tx, signedUp{1, "ada@example.com"})
	require.NoError(t, err)

	reached := false
	msg := failure(t, func(tb testing.TB) {
		signalstest.RequireNotSent(tb, tx, sig, func(p signedUp) bool { return p.Email == "ada@example.com" })
		reached = true
	})
	require.False(t, reached, "a failed RequireNotSent stops the test")
	require.Contains(t, msg, "want none")
	require.Contains(t, msg, "ada@example.com", "the message shows the offending payload")

	failure(t, func(tb testing.TB) { signalstest.RequireNotSent(tb, tx, sig, nil) })
	signalstest.RequireNotSent(t, tx, sig, func(p signedUp) bool { return p.UserID == 2 })
}

func TestEagerRunsReceiversAfterCommitNotAfterRollback(t *testing.T) {
	t.Parallel()
	w := setup(t)
	sig := register[signedUp](t, w, "user.signed_up")
	var ran []signals.Event[signedUp] // Eager runs receivers in Commit's goroutine
	sig.Connect("welcome", func(_ context.Context, e signals.Event[signedUp]) error {
		ran = append(ran, e)
		return nil
	})
	eager, err := signalstest.NewEager(w.pool, w.reg)
	require.NoError(t, err)

	tx, err := eager.Begin(t.Context())
	require.NoError(t, err)
	_, err = sig.SendReliable(t.Context(), tx, signedUp{UserID: 1})
	require.NoError(t, err)
	require.NoError(t, tx.Rollback(t.Context()))
	require.Empty(t, ran, "a rolled-back send runs nothing")

	err = pgx.BeginFunc(t.Context(), eager, func(tx pgx.Tx) error {
		_, err := sig.SendReliable(t.Context(), tx, signedUp{UserID: 2})
		require.Empty(t, ran, "nothing runs before commit")
		return err
	})
	require.NoError(t, err)
	require.Len(t, ran, 1, "the receiver ran when Commit returned")
	require.Equal(t, int64(2), ran[0].Payload.UserID)
	require.Equal(t, 1, ran[0].Attempt)
	signalstest.RequireNotSent(t, w.pool, sig, nil) // the outbox is empty
}

func TestEagerCommitReturnsReceiverErrorsAndKeepsTheCommit(t *testing.T) {
	t.Parallel()
	w := setup(t)
	users := w.table(t, "users", "id bigint PRIMARY KEY")
	sig := register[signedUp](t, w, "user.signed_up")
	errSMTP := errors.New("smtp: connection refused")
	errNoAddress := errors.New("no email address")
	crmRuns := 0
	sig.Connect("welcome", func(context.Context, signals.Event[signedUp]) error { return errSMTP })
	sig.Connect("verify", func(context.Context, signals.Event[signedUp]) error { return signals.Permanent(errNoAddress) })
	sig.Connect("crm", func(context.Context, signals.Event[signedUp]) error {
		crmRuns++
		return nil
	})
	eager, err := signalstest.NewEager(w.pool, w.reg)
	require.NoError(t, err)

	err = pgx.BeginFunc(t.Context(), eager, func(tx pgx.Tx) error {
		if _, err := tx.Exec(t.Context(), `INSERT INTO `+users+` (id) VALUES (1)`); err != nil {
			return err
		}
		_, err := sig.SendReliable(t.Context(), tx, signedUp{UserID: 1})
		return err
	})
	require.ErrorIs(t, err, errSMTP)
	require.ErrorContains(t, err, `"welcome"`, "the error names the receiver")
	require.ErrorIs(t, err, errNoAddress)
	require.ErrorIs(t, err, signals.ErrPermanent)
	require.Equal(t, 1, w.count(t, users), "the business row stays committed")
	require.Equal(t, 1, crmRuns, "a failing receiver does not stop its siblings")
	signalstest.RequireNotSent(t, w.pool, sig, nil)
}

func TestEagerRunsSignalsSentByReceivers(t *testing.T) {
	t.Parallel()
	w := setup(t)
	placed := register[signedUp](t, w, "user.signed_up")
	welcomed := register[int64](t, w, "user.welcomed")
	audited := register[int64](t, w, "user.audited")
	eager, err := signalstest.NewEager(w.pool, w.reg)
	require.NoError(t, err)
	resend := func(db signals.TxBeginner, next *signals.Signal[int64]) signals.ReceiverFunc[signedUp] {
		return func(ctx context.Context, e signals.Event[signedUp]) error {
			return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
				_, err := next.SendReliable(ctx, tx, e.Payload.UserID)
				return err
			})
		}
	}
	placed.Connect("welcome", resend(w.pool, welcomed)) // as a receiver wired to the app's pool
	placed.Connect("audit", resend(eager, audited))     // as one wired to the Eager itself
	var depths []int
	for _, sig := range []*signals.Signal[int64]{welcomed, audited} {
		sig.Connect("record", func(_ context.Context, e signals.Event[int64]) error {
			depths = append(depths, e.Depth)
			return nil
		})
	}

	require.NoError(t, send(t, eager, placed, signedUp{UserID: 1}))
	require.Equal(t, []int{1, 1}, depths, "both follow-up signals ran before Commit returned")
}

func TestDrainReturnsOnceEveryReceiverHasRun(t *testing.T) {
	t.Parallel()
	w := setup(t)
	queue := testenv.Queue(t)
	redis := asynq.RedisClientOpt{Addr: testenv.RedisAddr()}
	placed := register[signedUp](t, w, "user.signed_up")
	welcomed := register[int64](t, w, "user.welcomed")

	var mu sync.Mutex
	runs := map[string]int{}
	add := func(key string) int {
		mu.Lock()
		defer mu.Unlock()
		runs[key]++
		return runs[key]
	}
	fast := signals.Backoff(10*time.Millisecond, 50*time.Millisecond)
	placed.Connect("count", func(context.Context, signals.Event[signedUp]) error {
		add("count")
		return nil
	}, signals.Queue(queue))
	placed.Connect("flaky", func(_ context.Context, e signals.Event[signedUp]) error {
		if add("flaky "+e.TaskID.String()) == 1 {
			return errors.New("try again")
		}
		add("flaky succeeded")
		return nil
	}, signals.Queue(queue), fast)
	placed.Connect("gives-up", func(context.Context, signals.Event[signedUp]) error {
		add("gives-up")
		return signals.Permanent(errors.New("no such mailbox"))
	}, signals.Queue(queue))
	placed.Connect("cascade", func(ctx context.Context, e signals.Event[signedUp]) error {
		return pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
			_, err := welcomed.SendReliable(ctx, tx, e.Payload.UserID)
			return err
		})
	}, signals.Queue(queue))
	welcomed.Connect("record", func(context.Context, signals.Event[int64]) error {
		add("welcomed")
		return nil
	}, signals.Queue(queue))

	signalstest.Drain(t, w.pool, redis, w.reg) // nothing to do yet

	const users = 3
	for i := range int64(users) {
		require.NoError(t, send(t, w.pool, placed, signedUp{UserID: i}))
	}
	signalstest.Drain(t, w.pool, redis, w.reg)

	mu.Lock()
	require.Equal(t, users, runs["count"])
	require.Equal(t, users, runs["flaky succeeded"], "retried receivers finished")
	require.Equal(t, users, runs["welcomed"], "the cascade finished")
	require.Equal(t, users, runs["gives-up"], "a dead-lettered receiver does not hold Drain")
	mu.Unlock()
	insp := asynq.NewInspector(redis)
	defer insp.Close()
	archived, err := insp.ListArchivedTasks(queue)
	require.NoError(t, err)
	require.Len(t, archived, users, "dead letters stay for the test to inspect")
	signalstest.RequireNotSent(t, w.pool, placed, nil)
}

type orderPaid struct {
	OrderID string `json:"order_id"`
}

func TestRequireIdempotent(t *testing.T) {
	t.Parallel()
	w := setup(t)
	receipts := w.table(t, "receipts", "order_id text NOT NULL")
	sig := register[orderPaid](t, w, "order.paid")
	insert := func(ctx context.Context, tx pgx.Tx, e signals.Event[orderPaid]) error {
		_, err := tx.Exec(ctx, `INSERT INTO `+receipts+` (order_id) VALUES ($1)`, e.Payload.OrderID)
		return err
	}
	idempotent := func(ctx context.Context, e signals.Event[orderPaid]) error {
		return pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
			first, err := signals.Once(ctx, tx, e)
			if err != nil || !first {
				return err
			}
			return insert(ctx, tx, e)
		})
	}
	naive := func(ctx context.Context, e signals.Event[orderPaid]) error {
		return pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error { return insert(ctx, tx, e) })
	}
	receiptsFor := func(orderID string) func(tb testing.TB) {
		return func(tb testing.TB) {
			var n int
			require.NoError(tb, w.pool.QueryRow(context.Background(), `SELECT count(*) FROM `+receipts+` WHERE order_id = $1`, orderID).Scan(&n))
			require.Equal(tb, 1, n, "receipts for %s", orderID)
		}
	}

	signalstest.RequireIdempotent(t, idempotent, sig.NewEvent("record-receipt", orderPaid{"o-1"}), receiptsFor("o-1"))

	msg := failure(t, func(tb testing.TB) {
		signalstest.RequireIdempotent(tb, naive, sig.NewEvent("record-receipt", orderPaid{"o-2"}), receiptsFor("o-2"))
	})
	require.Contains(t, msg, "receipts for o-2")

	var attempts []int
	failsOnRedelivery := func(_ context.Context, e signals.Event[orderPaid]) error {
		attempts = append(attempts, e.Attempt)
		if e.Attempt > 1 {
			return errors.New("duplicate key value violates unique constraint")
		}
		return nil
	}
	msg = failure(t, func(tb testing.TB) {
		signalstest.RequireIdempotent(tb, failsOnRedelivery, sig.NewEvent("record-receipt", orderPaid{"o-3"}), func(testing.TB) {
			t.Error("check ran after a failed delivery")
		})
	})
	require.Contains(t, msg, "delivery 2")
	require.Contains(t, msg, "duplicate key")
	require.Equal(t, []int{1, 2}, attempts)
}
