package signalstest_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

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

// testBundle is one test's migrated schema, with a registry on it.
type testBundle struct {
	pool   *pgxpool.Pool
	schema string
	reg    *signals.Registry
}

func setup(t *testing.T) testBundle {
	t.Helper()
	w := testBundle{pool: testenv.Pool(t), schema: testenv.Schema(t)}
	var err error
	w.reg, err = signals.NewRegistry(signals.RegistryConfig{Schema: w.schema})
	require.NoError(t, err)
	require.NoError(t, w.reg.Migrate(t.Context(), w.pool))
	return w
}

// table creates a table in the test's schema and returns its quoted name.
func (w testBundle) table(t *testing.T, name, columns string) string {
	t.Helper()
	quoted := pgx.Identifier{w.schema, name}.Sanitize()
	_, err := w.pool.Exec(t.Context(), `CREATE TABLE `+quoted+` (`+columns+`)`)
	require.NoError(t, err)
	return quoted
}

func (w testBundle) count(t testing.TB, table string) int {
	t.Helper()
	var n int
	require.NoError(t, w.pool.QueryRow(context.Background(), `SELECT count(*) FROM `+table).Scan(&n))
	return n
}

func send[T any](t *testing.T, db signals.DB, sig *signals.Signal[T], payloads ...T) error {
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
	sig := signals.Register[signedUp](w.reg, "user.signed_up")
	sig.Connect("welcome", nop[signedUp])
	sig.Connect("crm", nop[signedUp]) // two rows per event
	other := signals.Register[int](w.reg, "user.deleted")
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
	sig := signals.Register[signedUp](w.reg, "user.signed_up")
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

type orderPaid struct {
	OrderID string `json:"order_id"`
}

func TestRequireIdempotent(t *testing.T) {
	t.Parallel()
	w := setup(t)
	receipts := w.table(t, "receipts", "order_id text NOT NULL")
	sig := signals.Register[orderPaid](w.reg, "order.paid")
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

	attempts = nil
	third := sig.NewEvent("record-receipt", orderPaid{"o-4"})
	third.Attempt = 3
	signalstest.RequireIdempotent(t, func(_ context.Context, e signals.Event[orderPaid]) error {
		attempts = append(attempts, e.Attempt)
		return nil
	}, third, func(testing.TB) {})
	require.Equal(t, []int{3, 4}, attempts, "the Attempt the test set, then one more")
}
