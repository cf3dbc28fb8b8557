// Command quickstart commits a user and a reliable signal in one
// transaction, then runs the Dispatcher and a Worker until the receiver has run.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"

	"github.com/dj-signals/signals"
)

// UserSignedUp is sent when a user account is created.
var UserSignedUp = signals.New[SignedUp]("user.signed_up")

// SignedUp is the payload: IDs, not documents.
type SignedUp struct {
	UserID int64 `json:"user_id"`
}

// db is the application's pool; the receivers open their transactions on it.
var db *pgxpool.Pool

// done tells run which receiver finished with which event.
var done = make(chan string, 16)

func init() {
	UserSignedUp.Connect("send-welcome-email", sendWelcomeEmail)
	UserSignedUp.Connect("grant-trial-credits", grantTrialCredits)
}

// sendWelcomeEmail has an effect outside the database: it runs at least once
// per event, so it would give e.TaskID to the mail API as an idempotency key.
func sendWelcomeEmail(ctx context.Context, e signals.Event[SignedUp]) error {
	fmt.Printf("welcome email for user %d (event %s, attempt %d)\n", e.Payload.UserID, e.ID, e.Attempt)
	done <- "email " + e.ID.String()
	return nil
}

// grantTrialCredits touches only PostgreSQL: Consume, first in its own
// transaction, makes its effect happen exactly once, however many times the
// event is delivered.
func grantTrialCredits(ctx context.Context, e signals.Event[SignedUp]) error {
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		mine, err := signals.Consume(ctx, tx, e)
		if err != nil || !mine {
			return err // an earlier delivery granted them
		}
		_, err = tx.Exec(ctx, `UPDATE quickstart_accounts SET credits = credits + 100 WHERE id = $1`, e.Payload.UserID)
		return err
	})
	if err == nil {
		fmt.Printf("100 trial credits for user %d (event %s)\n", e.Payload.UserID, e.ID)
		done <- "credits " + e.ID.String()
	}
	return err
}

func main() {
	if err := run(context.Background()); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context) error {
	pool, err := pgxpool.New(ctx, getenv("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"))
	if err != nil {
		return err
	}
	defer pool.Close()
	db = pool
	if err := signals.DefaultRegistry.Migrate(ctx, pool); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS quickstart_accounts (
    id bigserial PRIMARY KEY, email text NOT NULL, credits integer NOT NULL DEFAULT 0)`); err != nil {
		return err
	}

	// The Dispatcher and the Worker run inside the app process.
	redis := asynq.RedisClientOpt{Addr: getenv("REDIS_ADDR", "127.0.0.1:6379")}
	dispatcher, err := signals.NewDispatcher(signals.DefaultRegistry, pool, redis, signals.DispatcherConfig{})
	if err != nil {
		return err
	}
	worker, err := signals.NewWorker(signals.DefaultRegistry, pool, redis, signals.WorkerConfig{})
	if err != nil {
		return err
	}
	ctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	for _, component := range []func(context.Context) error{dispatcher.Run, worker.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := component(ctx); err != nil {
				log.Print(err)
			}
		}()
	}

	// The business change and the signal commit, or roll back, together.
	var eventID ulid.ULID
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var userID int64
		err := tx.QueryRow(ctx, `INSERT INTO quickstart_accounts (email) VALUES ($1) RETURNING id`, "ada@example.com").Scan(&userID)
		if err != nil {
			return err
		}
		eventID, err = UserSignedUp.SendReliable(ctx, tx, SignedUp{UserID: userID})
		return err
	})
	if err != nil {
		return err
	}
	fmt.Println("committed user and event", eventID)

	timeout := time.After(10 * time.Second)
	for waiting := 2; waiting > 0; {
		select {
		case what := <-done:
			if strings.HasSuffix(what, eventID.String()) {
				waiting--
			}
		case <-timeout:
			return fmt.Errorf("event %s not delivered within 10s: are PostgreSQL and Redis up?", eventID)
		}
	}
	return nil
}

func getenv(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}
