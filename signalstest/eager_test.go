package signalstest_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/testenv"
	"github.com/dj-signals/signals/signalstest"
)

func TestEagerRunsReceiversAfterCommitNotAfterRollback(t *testing.T) {
	t.Parallel()
	w := setup(t)
	sig := signals.Register[signedUp](w.reg, "user.signed_up")
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
	sig := signals.Register[signedUp](w.reg, "user.signed_up")
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

// TestEagerRunsAReceiversRetriesAtOnce runs a receiver that fails twice
// before it succeeds, one that always fails with MaxRetries(2), and one
// that fails permanently: each runs as often as a Worker would run it,
// without waiting, and Commit returns only the errors of deliveries that
// ended dead. Nothing is logged: the errors are Commit's.
func TestEagerRunsAReceiversRetriesAtOnce(t *testing.T) {
	logs := &testenv.Logs{}
	defer slog.SetDefault(slog.Default())
	slog.SetDefault(slog.New(logs)) // no t.Parallel: the default logger is the process's
	w := setup(t)
	sig := signals.Register[signedUp](w.reg, "user.signed_up")
	errFlaky, errDown, errGone := errors.New("flaky"), errors.New("down"), errors.New("gone")
	var flaky, down, gone []int // attempts seen; Eager runs receivers in Commit's goroutine
	sig.Connect("flaky", func(_ context.Context, e signals.Event[signedUp]) error {
		flaky = append(flaky, e.Attempt)
		if e.Attempt < 3 {
			return errFlaky
		}
		return nil
	})
	sig.Connect("down", func(_ context.Context, e signals.Event[signedUp]) error {
		down = append(down, e.Attempt)
		return errDown
	}, signals.MaxRetries(2), signals.Backoff(time.Hour, time.Hour))
	sig.Connect("gone", func(_ context.Context, e signals.Event[signedUp]) error {
		gone = append(gone, e.Attempt)
		return signals.Permanent(errGone)
	})
	eager, err := signalstest.NewEager(w.pool, w.reg)
	require.NoError(t, err)

	start := time.Now()
	err = send(t, eager, sig, signedUp{UserID: 1})
	require.Less(t, time.Since(start), time.Minute, "no backoff is waited out")
	require.Equal(t, []int{1, 2, 3}, flaky, "retried until it succeeded")
	require.Equal(t, []int{1, 2, 3}, down, "MaxRetries(2): three runs in all")
	require.Equal(t, []int{1}, gone, "a permanent failure is not retried")
	require.NotErrorIs(t, err, errFlaky, "a delivery that succeeded in the end is no error")
	require.ErrorIs(t, err, errDown)
	require.ErrorIs(t, err, errGone)
	require.Empty(t, logs.WarningsSince(0), "Eager logs nothing")
	signalstest.RequireNotSent(t, w.pool, sig, nil)
}

func TestEagerRunsSignalsSentByReceivers(t *testing.T) {
	t.Parallel()
	w := setup(t)
	placed := signals.Register[signedUp](w.reg, "user.signed_up")
	welcomed := signals.Register[int64](w.reg, "user.welcomed")
	audited := signals.Register[int64](w.reg, "user.audited")
	eager, err := signalstest.NewEager(w.pool, w.reg)
	require.NoError(t, err)
	resend := func(db signals.DB, next *signals.Signal[int64]) signals.ReceiverFunc[signedUp] {
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

	// Rows of the same signals that no event of the Eager caused.
	require.NoError(t, send(t, w.pool, welcomed, 99))
	require.NoError(t, send(t, w.pool, audited, 99))

	require.NoError(t, send(t, eager, placed, signedUp{UserID: 1}))
	require.Equal(t, []int{1, 1}, depths, "both follow-up signals ran before Commit returned")
	for _, sig := range []*signals.Signal[int64]{welcomed, audited} {
		require.Equal(t, []int64{99}, signalstest.RequireSent(t, w.pool, sig, nil), "%s: only the unrelated row is left", sig.Name())
	}
}

func TestEagerLeavesOtherSendersRowsAlone(t *testing.T) {
	t.Parallel()
	w := setup(t)
	sig := signals.Register[signedUp](w.reg, "user.signed_up")
	var ran []string
	sig.Connect("welcome", func(_ context.Context, e signals.Event[signedUp]) error {
		ran = append(ran, e.Payload.Email)
		return nil
	})
	eager, err := signalstest.NewEager(w.pool, w.reg)
	require.NoError(t, err)
	other, err := signalstest.NewEager(w.pool, w.reg)
	require.NoError(t, err)

	// Committed for the application's relay, and by another Eager's
	// transaction still open: neither is this Eager's to run.
	require.NoError(t, send(t, w.pool, sig, signedUp{1, "relay@example.com"}))
	open, err := other.Begin(t.Context())
	require.NoError(t, err)
	defer open.Rollback(context.Background()) //nolint:errcheck
	_, err = sig.SendReliable(t.Context(), open, signedUp{2, "other@example.com"})
	require.NoError(t, err)

	require.NoError(t, send(t, eager, sig, signedUp{3, "mine@example.com"}))
	require.Equal(t, []string{"mine@example.com"}, ran, "only the Eager's own event ran")
	left := signalstest.RequireSent(t, w.pool, sig, nil)
	require.Equal(t, []signedUp{{1, "relay@example.com"}}, left, "the relay's row is still in the outbox")

	require.NoError(t, open.Commit(t.Context()))
	require.Equal(t, []string{"mine@example.com", "other@example.com"}, ran, "the other Eager ran its own event on its commit")
	require.Equal(t, left, signalstest.RequireSent(t, w.pool, sig, nil), "and left the relay's row alone too")
}

func TestEagerSavepoints(t *testing.T) {
	t.Parallel()
	w := setup(t)
	sig := signals.Register[signedUp](w.reg, "user.signed_up")
	var ran []string
	sig.Connect("welcome", func(_ context.Context, e signals.Event[signedUp]) error {
		ran = append(ran, e.Payload.Email)
		return nil
	})
	eager, err := signalstest.NewEager(w.pool, w.reg)
	require.NoError(t, err)
	ctx := t.Context()
	sendIn := func(tx pgx.Tx, email string) {
		t.Helper()
		_, err := sig.SendReliable(ctx, tx, signedUp{Email: email})
		require.NoError(t, err)
	}
	savepoint := func(tx pgx.Tx) pgx.Tx {
		t.Helper()
		sp, err := tx.Begin(ctx)
		require.NoError(t, err)
		return sp
	}

	tx, err := eager.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(context.Background()) //nolint:errcheck
	sendIn(tx, "a")

	sp := savepoint(tx) // rolled back
	sendIn(sp, "b")
	require.NoError(t, sp.Rollback(ctx))

	sp = savepoint(tx) // released, with a released savepoint inside
	sendIn(sp, "c")
	inner := savepoint(sp)
	sendIn(inner, "d")
	require.NoError(t, inner.Commit(ctx))
	require.NoError(t, sp.Commit(ctx))

	sp = savepoint(tx) // rolled back, with a released savepoint inside
	sendIn(sp, "e")
	inner = savepoint(sp)
	sendIn(inner, "f")
	require.NoError(t, inner.Commit(ctx))
	require.NoError(t, sp.Rollback(ctx))

	sp = savepoint(tx) // released, with a rolled-back savepoint inside
	sendIn(sp, "g")
	inner = savepoint(sp)
	sendIn(inner, "h")
	require.NoError(t, inner.Rollback(ctx))
	require.NoError(t, sp.Commit(ctx))

	err = pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error { // pgx.BeginFunc on the Eager's Tx
		sendIn(sp, "i")
		return nil
	})
	require.NoError(t, err)

	require.Empty(t, ran, "nothing runs before the top-level commit")
	require.NoError(t, tx.Commit(ctx), "Commit looks for no event of a rolled-back savepoint")
	require.Equal(t, []string{"a", "c", "d", "g", "i"}, ran)
	signalstest.RequireNotSent(t, w.pool, sig, nil)
}

// Signals made with signals.New share DefaultRegistry and its schema across
// all the tests of a binary. Here one registry stands for it, shared by
// parallel tests that each send through an Eager of their own.
func TestEagerParallelUsersOfOneRegistry(t *testing.T) {
	t.Parallel()
	w := setup(t)
	signedUpSig := signals.Register[signedUp](w.reg, "user.signed_up")
	welcomedSig := signals.Register[string](w.reg, "user.welcomed")

	type userKey struct{} // which test's Commit runs a receiver
	var mu sync.Mutex
	ran := map[string][]string{} // test → owners of the events run in its Commits
	record := func(ctx context.Context, owner string) {
		mu.Lock()
		defer mu.Unlock()
		user, _ := ctx.Value(userKey{}).(string)
		ran[user] = append(ran[user], owner)
	}
	signedUpSig.Connect("welcome", func(ctx context.Context, e signals.Event[signedUp]) error {
		record(ctx, e.Payload.Email)
		// The cascade goes through the application's pool, not the Eager.
		return pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
			_, err := welcomedSig.SendReliable(ctx, tx, e.Payload.Email)
			return err
		})
	})
	welcomedSig.Connect("record", func(ctx context.Context, e signals.Event[string]) error {
		record(ctx, e.Payload)
		return nil
	})

	const sends = 20
	users := []string{"ada", "bob", "eve"}
	t.Run("users", func(t *testing.T) {
		for _, user := range users {
			t.Run(user, func(t *testing.T) {
				t.Parallel()
				eager, err := signalstest.NewEager(w.pool, w.reg)
				require.NoError(t, err)
				ctx := context.WithValue(t.Context(), userKey{}, user)
				for i := range int64(sends) {
					require.NoError(t, pgx.BeginFunc(ctx, eager, func(tx pgx.Tx) error {
						_, err := signedUpSig.SendReliable(ctx, tx, signedUp{i, user})
						return err
					}))
					// The code under test also commits for the relay.
					require.NoError(t, send(t, w.pool, signedUpSig, signedUp{i, "relay-" + user}))
				}
			})
		}
	})

	for _, user := range users {
		require.Len(t, ran[user], 2*sends, "%s: its sign-ups and their cascades", user)
		for _, owner := range ran[user] {
			require.Equal(t, user, owner, "%s's Commit ran another test's event", user)
		}
	}
	left := signalstest.RequireSent(t, w.pool, signedUpSig, nil)
	require.Len(t, left, len(users)*sends, "the rows committed for the relay are all left")
	for _, p := range left {
		require.True(t, strings.HasPrefix(p.Email, "relay-"), p.Email)
	}
	signalstest.RequireNotSent(t, w.pool, welcomedSig, nil)
}

func TestEagerReportsEventsItDidNotFind(t *testing.T) {
	t.Parallel()
	w := setup(t)
	elsewhere := setup(t) // another registry, on a schema of its own
	sig := signals.Register[signedUp](elsewhere.reg, "user.signed_up")
	ran := 0
	sig.Connect("welcome", func(context.Context, signals.Event[signedUp]) error {
		ran++
		return nil
	})
	eager, err := signalstest.NewEager(w.pool, w.reg)
	require.NoError(t, err)

	err = send(t, eager, sig, signedUp{UserID: 1})
	require.ErrorContains(t, err, fmt.Sprintf("has no row in the outbox of schema %q", w.schema))
	require.Zero(t, ran)
	signalstest.RequireSent(t, elsewhere.pool, sig, nil) // committed, in its own schema
}
