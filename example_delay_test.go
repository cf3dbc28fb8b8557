package signals_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/testenv"
)

// TrialEnding is the payload of the example's signal.
type TrialEnding struct {
	AccountID int64 `json:"account_id"`
}

// A delayed signal commits with the transaction like any other; the relay
// moves it to asynq at once, and a worker runs its receivers no earlier than
// the time At gives.
func ExampleAt() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testenv.DatabaseURL())
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	const schema, queue = "example_delay", "example_delay"
	redis := asynq.RedisClientOpt{Addr: testenv.RedisAddr()}
	inspector := asynq.NewInspector(redis)
	defer inspector.Close()
	cleanUp := func() {
		_, _ = pool.Exec(ctx, `DROP SCHEMA IF EXISTS `+schema+` CASCADE`)
		_ = inspector.DeleteQueue(queue, true)
	}
	cleanUp()
	defer cleanUp()

	quiet := slog.New(slog.DiscardHandler)
	reg, err := signals.NewRegistry(signals.RegistryConfig{Schema: schema})
	if err != nil {
		log.Fatal(err)
	}
	if err := reg.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	trialEnding := signals.Register[TrialEnding](reg, "trial.ending")
	reminded := make(chan time.Time, 1)
	trialEnding.Connect("send-reminder", func(_ context.Context, e signals.Event[TrialEnding]) error {
		fmt.Printf("reminder for account %d\n", e.Payload.AccountID)
		reminded <- time.Now()
		return nil
	}, signals.Queue(queue))

	// The relay and a worker, stopped when the example returns.
	dispatcher, err := signals.NewDispatcher(reg, pool, redis, signals.DispatcherConfig{Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	worker, err := signals.NewWorker(reg, pool, redis, signals.WorkerConfig{Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	for _, run := range []func(context.Context) error{dispatcher.Run, worker.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(runCtx); err != nil {
				log.Print(err)
			}
		}()
	}

	sentAt := time.Now()
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		_, err := trialEnding.SendReliable(ctx, tx, TrialEnding{AccountID: 7}, signals.At(time.Now().Add(time.Second)))
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("sent with a delay of 1s")

	select {
	case ranAt := <-reminded:
		fmt.Println("ran at least 1s after sending:", ranAt.Sub(sentAt) >= time.Second)
	case <-time.After(10 * time.Second):
		fmt.Println("not delivered within 10s: are PostgreSQL and Redis up?")
	}
	// Output:
	// sent with a delay of 1s
	// reminder for account 7
	// ran at least 1s after sending: true
}
