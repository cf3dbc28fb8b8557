// Command quickstart commits a user and a reliable signal in one
// transaction, then runs the Dispatcher and a Worker until the receiver has run.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
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

var welcomed = make(chan ulid.ULID, 16)

func init() {
	UserSignedUp.Connect("send-welcome-email", func(ctx context.Context, e signals.Event[SignedUp]) error {
		// Runs at least once per event: use e.TaskID as an idempotency key.
		fmt.Printf("welcome email for user %d (event %s, attempt %d)\n", e.Payload.UserID, e.ID, e.Attempt)
		welcomed <- e.ID
		return nil
	})
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
	if err := signals.Migrate(ctx, pool); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS quickstart_users (id bigserial PRIMARY KEY, email text NOT NULL)`); err != nil {
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
		err := tx.QueryRow(ctx, `INSERT INTO quickstart_users (email) VALUES ($1) RETURNING id`, "ada@example.com").Scan(&userID)
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
	for {
		select {
		case id := <-welcomed:
			if id == eventID {
				return nil
			}
		case <-timeout:
			return fmt.Errorf("event %s not delivered within 10s: are PostgreSQL and Redis up?", eventID)
		}
	}
}

func getenv(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}
