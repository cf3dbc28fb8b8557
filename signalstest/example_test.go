package signalstest_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/testenv"
	"github.com/dj-signals/signals/signalstest"
)

// Code under test that takes a signals.DB is given an Eager: its
// receivers run when the transaction commits, and their errors come back
// from Commit.
func ExampleEager() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testenv.DatabaseURL())
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	const dropSchema = `DROP SCHEMA IF EXISTS example_eager CASCADE`
	if _, err := pool.Exec(ctx, dropSchema); err != nil {
		log.Fatal(err)
	}
	defer pool.Exec(ctx, dropSchema) //nolint:errcheck

	reg, err := signals.NewRegistry(signals.RegistryConfig{Schema: "example_eager"})
	if err != nil {
		log.Fatal(err)
	}
	if err := reg.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	userSignedUp := signals.Register[int64](reg, "user.signed_up")
	userSignedUp.Connect("send-welcome-email", func(_ context.Context, e signals.Event[int64]) error {
		fmt.Println("welcome email for user", e.Payload)
		return nil
	})
	userSignedUp.Connect("sync-crm", func(context.Context, signals.Event[int64]) error {
		return errors.New("crm unreachable")
	})

	eager, err := signalstest.NewEager(pool, reg)
	if err != nil {
		log.Fatal(err)
	}
	err = pgx.BeginFunc(ctx, eager, func(tx pgx.Tx) error {
		_, err := userSignedUp.SendReliable(ctx, tx, 1)
		fmt.Println("sent; no receiver has run yet")
		return err
	})
	fmt.Println("commit:", err)
	// Output:
	// sent; no receiver has run yet
	// welcome email for user 1
	// commit: receiver "sync-crm" of "user.signed_up": crm unreachable
}

// A test checks what its transaction sent before any relay moves it. (This
// example is compiled, not run: t stands for the test's *testing.T.)
func ExampleRequireSent() {
	var (
		t    *testing.T    // the test's t
		pool *pgxpool.Pool // the test's database
	)
	type SignedUp struct{ Email string }
	reg, err := signals.NewRegistry(signals.RegistryConfig{Schema: "test_schema"})
	if err != nil {
		t.Fatal(err)
	}
	userSignedUp := signals.Register[SignedUp](reg, "user.signed_up")
	userDeleted := signals.Register[int64](reg, "user.deleted")

	tx, err := pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(t.Context()) //nolint:errcheck
	// ... the code under test runs in tx and sends userSignedUp ...

	sent := signalstest.RequireSent(t, tx, userSignedUp, func(p SignedUp) bool { return p.Email == "ada@example.com" })
	if len(sent) != 1 {
		t.Errorf("sent %d sign-ups for ada, want 1", len(sent))
	}
	signalstest.RequireNotSent(t, tx, userDeleted, nil)
}

// An end-to-end test commits, then drains: when Drain returns, every
// receiver, retries and cascades included, has run through a real relay and
// worker. (This example is compiled, not run: t stands for the test's
// *testing.T.)
func ExampleDrain() {
	var (
		t    *testing.T    // the test's t
		pool *pgxpool.Pool // the test's database, migrated for test_schema
	)
	reg, err := signals.NewRegistry(signals.RegistryConfig{Schema: "test_schema"})
	if err != nil {
		t.Fatal(err)
	}
	userSignedUp := signals.Register[int64](reg, "user.signed_up")
	var welcomed atomic.Int64
	userSignedUp.Connect("send-welcome-email", func(context.Context, signals.Event[int64]) error {
		welcomed.Add(1)
		return nil
	}, signals.Backoff(10*time.Millisecond, 100*time.Millisecond), signals.MaxRetries(3)) // quick retries in tests

	err = pgx.BeginFunc(t.Context(), pool, func(tx pgx.Tx) error {
		_, err := userSignedUp.SendReliable(t.Context(), tx, 1)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	signalstest.Drain(t, pool, asynq.RedisClientOpt{Addr: "127.0.0.1:6379"}, reg)
	if n := welcomed.Load(); n != 1 {
		t.Errorf("welcome email sent %d times, want 1", n)
	}
}
