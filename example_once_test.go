package signals_test

import (
	"context"
	"fmt"
	"log"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/testenv"
)

// PaymentCaptured is the payload of the example's signal.
type PaymentCaptured struct {
	OrderID string `json:"order_id"`
}

// A receiver whose effect is a database write calls Once first, in the same
// transaction as the write: a redelivery of the same event then changes
// nothing.
func ExampleOnce() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testenv.DatabaseURL())
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	const dropSchema = `DROP SCHEMA IF EXISTS example_once CASCADE`
	if _, err := pool.Exec(ctx, dropSchema); err != nil {
		log.Fatal(err)
	}
	defer pool.Exec(ctx, dropSchema) //nolint:errcheck

	reg, err := signals.NewRegistry(signals.RegistryConfig{Schema: "example_once"})
	if err != nil {
		log.Fatal(err)
	}
	if err := reg.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE example_once.receipts (order_id text NOT NULL)`); err != nil {
		log.Fatal(err)
	}
	paymentCaptured := signals.Register[PaymentCaptured](reg, "payment.captured")
	recordReceipt := func(ctx context.Context, e signals.Event[PaymentCaptured]) error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			first, err := signals.Once(ctx, tx, e)
			if err != nil || !first {
				fmt.Printf("attempt %d: already recorded\n", e.Attempt)
				return err
			}
			fmt.Printf("attempt %d: recording the receipt\n", e.Attempt)
			_, err = tx.Exec(ctx, `INSERT INTO example_once.receipts (order_id) VALUES ($1)`, e.Payload.OrderID)
			return err
		})
	}
	paymentCaptured.Connect("record-receipt", recordReceipt)

	// Delivery is at least once: the same event may reach the receiver twice.
	e := paymentCaptured.NewEvent("record-receipt", PaymentCaptured{OrderID: "o-1"})
	for attempt := 1; attempt <= 2; attempt++ {
		e.Attempt = attempt
		if err := recordReceipt(ctx, e); err != nil {
			log.Fatal(err)
		}
	}

	var receipts int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM example_once.receipts`).Scan(&receipts); err != nil {
		log.Fatal(err)
	}
	fmt.Println("receipts:", receipts)
	// Output:
	// attempt 1: recording the receipt
	// attempt 2: already recorded
	// receipts: 1
}
